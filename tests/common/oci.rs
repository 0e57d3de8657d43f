//! OCI image layouts made in the test: deterministic tar layers, blobs by digest, manifests,
//! indexes and tags.

use bale_payload::format;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub fn write(path: &Path, data: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

pub fn sha(d: &[u8]) -> String {
    format!("sha256:{}", format::hex(&format::sha256(d)))
}

/// A ustar archive of regular files, deterministic.
pub fn tar(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, mode) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        let oct = |h: &mut [u8; 512], at: usize, len: usize, v: u64| {
            let s = format!("{:0w$o}\0", v, w = len - 1);
            h[at..at + len].copy_from_slice(s.as_bytes());
        };
        oct(&mut h, 100, 8, *mode as u64);
        oct(&mut h, 108, 8, 0);
        oct(&mut h, 116, 8, 0);
        oct(&mut h, 124, 12, data.len() as u64);
        oct(&mut h, 136, 12, 0);
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|b| *b as u64).sum();
        let c = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(c.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

pub struct Layout(pub PathBuf);

impl Layout {
    pub fn blob(&self, d: &[u8]) -> Value {
        let digest = sha(d);
        write(&self.0.join("blobs/sha256").join(&digest[7..]), d);
        json!({"digest": digest, "size": d.len()})
    }

    /// An image for `arch` holding `files` (run by `/bin/busybox`); returns the manifest
    /// descriptor, with its platform as an index lists it.
    pub fn image(&self, arch: &str, files: &[(&str, &[u8], u32)]) -> Value {
        let run = json!({"Entrypoint": ["/bin/busybox"]});
        let mut d = self.manifest(arch, &[&tar(files)], Some(run));
        d["platform"] = json!({"architecture": arch, "os": "linux"});
        d
    }

    /// An image for `arch` made of the given layer tars, in order.
    pub fn image_of_layers(&self, arch: &str, layers: &[&[u8]]) -> Value {
        self.manifest(arch, layers, None)
    }

    /// Stores the layers, the config and the manifest; returns the manifest's descriptor.
    fn manifest(&self, arch: &str, layers: &[&[u8]], run: Option<Value>) -> Value {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in layers {
            let mut l = self.blob(layer);
            l["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
            descs.push(l);
            diff_ids.push(sha(layer));
        }
        let mut cfg = json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(run) = run {
            cfg["config"] = run;
        }
        let mut c = self.blob(&serde_json::to_vec(&cfg).unwrap());
        c["mediaType"] = json!("application/vnd.oci.image.config.v1+json");
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": c, "layers": descs,
        }))
        .unwrap();
        let mut d = self.blob(&m);
        d["mediaType"] = json!("application/vnd.oci.image.manifest.v1+json");
        d
    }

    pub fn index(&self, children: &[Value]) -> Value {
        let i = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": children,
        }))
        .unwrap();
        let mut d = self.blob(&i);
        d["mediaType"] = json!("application/vnd.oci.image.index.v1+json");
        d
    }

    pub fn tag(&self, desc: &Value, name: &str) {
        let mut d = desc.clone();
        d.as_object_mut().unwrap().remove("platform");
        d["annotations"] = json!({"org.opencontainers.image.ref.name": name});
        write(
            &self.0.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        );
        write(
            &self.0.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [d]})).unwrap(),
        );
    }
}

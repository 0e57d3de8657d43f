//! Copy the bundle to `<data-dir>/bundle.bale` on every node: checked chunk by chunk as it
//! arrives, resumed after a cut, fanned out node to node (see [`crate::copy`]). Skipped on a
//! node that already has the same bundle: the same header digest and, for a signed bundle, the
//! same signature block. Signing changes no digest, so a bundle signed again after it was
//! copied differs only there: the node's copy gets the new block and trailer (written beside
//! it and renamed over it) instead of a second copy of every byte.

use super::bundle_path;
use crate::copy::fanout::Fanout;
use crate::copy::store::Store;
use crate::engine::lock;
use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::remote::{Cmd, Remote, Script};
use crate::ssh::SshError;
use bale_payload::chunks::TAIL;
use bale_payload::error::human_bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The upload phase; its fan-out table is shared by every node's thread of one install run.
pub struct Upload {
    fanout: Fanout,
    variants: Variants,
}

impl Upload {
    /// A phase with a fresh fan-out table, for one install run.
    pub fn new() -> Upload {
        Upload {
            fanout: Fanout::new(),
            variants: Variants::default(),
        }
    }

    /// The file `node` gets: the bundle itself, or for a node of another architecture that a
    /// multi-platform bundle carries, the copy that starts with that architecture's program
    /// (same header, entries and signatures). Nodes of either feed each other all but the
    /// program (see [`crate::copy::fanout`]).
    fn source_for(&self, node: &Node) -> Result<PathBuf, PhaseError> {
        let bundle = &node.ctx.bundle;
        if bundle.arches.len() < 2 {
            return Ok(bundle.path.clone());
        }
        let arch = node.facts().arch;
        if arch == bundle.arch || arch.is_empty() {
            return Ok(bundle.path.clone());
        }
        self.variants.get(node, &arch)
    }
}

/// The copies of a multi-platform bundle for the other architectures, written on this host
/// the first time a node of that architecture needs one, removed when the run ends.
#[derive(Default)]
struct Variants {
    dir: OnceLock<tempfile::TempDir>,
    made: Mutex<BTreeMap<String, PathBuf>>,
}

impl Variants {
    fn get(&self, node: &Node, arch: &str) -> Result<PathBuf, PhaseError> {
        let mut made = lock(&self.made);
        if let Some(p) = made.get(arch) {
            return Ok(p.clone());
        }
        let bundle = &node.ctx.bundle;
        let dir = match self.dir.get() {
            Some(d) => d,
            None => {
                let d = tempfile::Builder::new()
                    .prefix("bale-variants-")
                    .tempdir()
                    .map_err(|source| PhaseError::Io {
                        path: std::env::temp_dir(),
                        source,
                    })?;
                self.dir.get_or_init(|| d)
            }
        };
        let path = dir.path().join(format!("{}-{arch}.bale", bundle.digest));
        let bad = |source| PhaseError::LocalBundle {
            path: bundle.path.clone(),
            source,
        };
        let t = std::time::Instant::now();
        let b = bale_payload::Bundle::open(&bundle.path).map_err(bad)?;
        bale_payload::platforms::write_variant(&b, arch, &path).map_err(bad)?;
        node.note(&format!(
            "copy: wrote the {arch} copy of the bundle ({}, its own program) in {:.1}s",
            human_bytes(std::fs::metadata(&path).map_or(0, |m| m.len())),
            t.elapsed().as_secs_f64()
        ));
        made.insert(arch.to_string(), path.clone());
        Ok(path)
    }
}

impl Default for Upload {
    fn default() -> Self {
        Upload::new()
    }
}

/// Shell that prints the size of the file at `path` and its last trailer-length bytes in hex,
/// or nothing when there is no such file. The bytes are only carried here; they are read by
/// the payload crate ([`remote_trailer`]).
fn trailer_script(path: &str) -> Script {
    Script::new(
        "[ -f {p} ] || exit 0; stat -c %s {p}; tail -c {n} {p} | od -An -v -tx1 | tr -d ' \\n'",
    )
    .value("p", path)
    .value("n", bale_payload::format::TRAILER_LEN)
}

/// The trailer that `trailer_script` printed; `None` when there is no file or no intact
/// trailer.
fn remote_trailer(out: &str) -> Option<bale_payload::format::Trailer> {
    let mut lines = out.lines();
    let file_len: u64 = lines.next()?.trim().parse().ok()?;
    let bytes = hex::decode(lines.next()?.trim()).ok()?;
    let tail: [u8; bale_payload::format::TRAILER_LEN] = bytes.try_into().ok()?;
    bale_payload::format::Trailer::decode(&tail, file_len).ok()
}

/// The trailer of the bundle at `path` on the node; `None` when the node has no intact bundle
/// there.
fn read_remote_trailer(
    remote: &dyn Remote,
    path: &str,
) -> Result<Option<bale_payload::format::Trailer>, SshError> {
    let read = Cmd::script("read the bundle's trailer", &trailer_script(path));
    Ok(remote_trailer(&remote.run_ok(&read)?))
}

/// The header digest of the bundle at `path` on the node, from its trailer; `None` when the
/// node has no intact bundle there.
pub fn remote_digest(remote: &dyn Remote, path: &str) -> Result<Option<String>, SshError> {
    Ok(read_remote_trailer(remote, path)?.map(|t| bale_payload::format::hex(&t.header_sha256)))
}

/// Which bundle a file is, signatures included: the header digest, then the SHA-256 (hex) of
/// the signature block when there is one.
fn identity(header_sha256: &[u8; 32], block_sha256: Option<&str>) -> String {
    let header = bale_payload::format::hex(header_sha256);
    match block_sha256 {
        Some(b) => format!("{header}+{b}"),
        None => header,
    }
}

/// The bundle being installed as the node's copy must end: its identity, and the bytes after
/// its header (signature block, then trailer).
struct LocalEnd {
    identity: String,
    tail: Vec<u8>,
}

fn local_end(source: &Path) -> Result<LocalEnd, PhaseError> {
    let bad = |e| PhaseError::LocalBundle {
        path: source.to_path_buf(),
        source: e,
    };
    let b = bale_payload::Bundle::open(source).map_err(bad)?;
    let block = b.signature_block().map_err(bad)?;
    let block_sha = block
        .as_deref()
        .map(|x| bale_payload::format::hex(&bale_payload::format::sha256(x)));
    let mut tail = block.unwrap_or_default();
    tail.extend_from_slice(&b.trailer.encode());
    Ok(LocalEnd {
        identity: identity(&b.trailer.header_sha256, block_sha.as_deref()),
        tail,
    })
}

/// The identity of the bundle at `path` on the node and its trailer; `None` when the node has
/// no intact bundle there.
fn remote_identity(
    remote: &dyn Remote,
    path: &str,
) -> Result<Option<(String, bale_payload::format::Trailer)>, SshError> {
    let Some(t) = read_remote_trailer(remote, path)? else {
        return Ok(None);
    };
    if t.sig_len == 0 {
        return Ok(Some((identity(&t.header_sha256, None), t)));
    }
    let block = Script::new("tail -c {n} {p} | head -c {len} | sha256sum")
        .value("n", t.sig_len + bale_payload::format::TRAILER_LEN as u64)
        .value("p", path)
        .value("len", t.sig_len);
    let out = remote.run_ok(&Cmd::script("read the bundle's signature block", &block))?;
    let block_sha = out.split_whitespace().next().unwrap_or_default();
    Ok(Some((identity(&t.header_sha256, Some(block_sha)), t)))
}

impl Upload {
    /// When the node's copy is this bundle with other signatures, writes this bundle's block and
    /// trailer after its header in a copy beside it and renames that over it (the registry may
    /// be reading the file). True when the node's copy is now this bundle.
    fn re_signed_in_place(
        &self,
        node: &Node,
        source: &Path,
        remote: &dyn Remote,
        attempt: &Attempt,
    ) -> Result<bool, PhaseError> {
        let path = bundle_path(&node.ctx.data_dir);
        let LocalEnd {
            identity: want,
            tail,
        } = local_end(source)?;
        let Some((have, t)) = remote_identity(remote, &path)? else {
            return Ok(false);
        };
        if have == want {
            return Ok(true);
        }
        if bale_payload::format::hex(&t.header_sha256) != node.ctx.bundle.digest {
            return Ok(false);
        }
        let tmp = format!("{path}.signed");
        attempt.creates(&tmp);
        let script = Script::new(
            "set -e; rm -f {tmp}; cp --reflink=auto {p} {tmp}; truncate -s {len} {tmp}; \
             cat >>{tmp}; sync {tmp}; mv -f {tmp} {p}",
        )
        .value("tmp", &tmp)
        .value("p", &path)
        .value("len", t.sig_offset());
        remote.run_ok(&Cmd::script("replace the bundle's signatures", &script).stdin(&tail))?;
        match remote_identity(remote, &path)? {
            Some((id, _)) if id == want => {
                node.note("copy: the bundle here was signed again: its signatures replaced");
                Ok(true)
            }
            other => Err(PhaseError::Resign {
                path,
                have: other.map_or_else(|| "no intact bundle".into(), |(id, _)| id),
                want,
            }),
        }
    }

    /// No SSH: the same checked, resumable copy, in this process.
    fn copy_here(&self, node: &Node, source: &Path) -> PhaseResult {
        let ctx = &node.ctx;
        let dest = bundle_path(&ctx.data_dir);
        if std::fs::canonicalize(source).ok() == std::fs::canonicalize(&dest).ok() {
            return Ok(());
        }
        let local = self.fanout.local(source)?;
        let dir = std::path::Path::new(&ctx.data_dir);
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| PhaseError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let _lock = crate::copy::agent::take_lock(dir)?;
        let t = std::time::Instant::now();
        let store = Store::open(dir, &local.digest, "local")?;
        let read = |e| PhaseError::Io {
            path: source.to_path_buf(),
            source: e,
        };
        let mut buf = Vec::new();
        if store.list().is_none() {
            local.read_chunk(TAIL, &mut buf).map_err(read)?;
            store.accept(TAIL, &buf, "installer")?;
        }
        for i in store.missing() {
            local.read_chunk(i, &mut buf).map_err(read)?;
            store.accept(i, &buf, "installer")?;
            let st = store.state();
            node.progress("upload", st.have_bytes, st.file_len, "the bundle here");
        }
        store.finish()?;
        let st = store.state();
        node.note(&format!(
            "copy: done, {} written and checked, {} already in place, in {:.1}s",
            human_bytes(st.received),
            human_bytes(st.kept),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

impl Phase for Upload {
    fn title(&self) -> &str {
        "upload"
    }
    fn should_run(&self, node: &Node) -> bool {
        let Ok(remote) = node.remote() else {
            return true;
        };
        // Every architecture's copy has the same identity: no copy is written to ask.
        let Ok(LocalEnd { identity: want, .. }) = local_end(&node.ctx.bundle.path) else {
            return true;
        };
        let have = remote_identity(&*remote, &bundle_path(&node.ctx.data_dir))
            .ok()
            .flatten();
        have.map(|(id, _)| id).as_deref() != Some(want.as_str())
    }
    fn inputs(&self, node: &Node) -> String {
        // A journal entry for the same bundle with other signatures does not count as done.
        local_end(&node.ctx.bundle.path)
            .map(|e| e.identity)
            .unwrap_or_default()
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "copy {} ({}) to {}, from the installer or another node, resuming a cut copy",
            node.ctx.bundle.path.display(),
            human_bytes(node.ctx.bundle.size),
            bundle_path(&node.ctx.data_dir)
        )
    }
    fn run(&self, node: &Node, attempt: &Attempt) -> PhaseResult {
        let remote = node.remote()?;
        let source = self.source_for(node)?;
        if self.re_signed_in_place(node, &source, &*remote, attempt)? {
            return Ok(());
        }
        if remote.is_local() || node.host.is_none() {
            self.copy_here(node, &source)?;
            self.re_signed_in_place(node, &source, &*remote, attempt)?;
            return Ok(());
        }
        let t = self.fanout.copy_to(node, &*remote, &source)?;
        // A copy resumed from a file made before the bundle was signed again keeps that file's
        // block: put this one's in.
        self.re_signed_in_place(node, &source, &*remote, attempt)?;
        let size = std::fs::metadata(&source).map_or(node.ctx.bundle.size, |m| m.len());
        node.note(&format!(
            "copy: done, {} checked as it arrived in {:.1}s ({}/s); bytes from the installer {}, \
             from peers {}, already present {}",
            human_bytes(size),
            t.seconds,
            human_bytes((size.saturating_sub(t.kept) as f64 / t.seconds.max(0.001)) as u64),
            t.from_installer,
            t.from_peers,
            t.kept
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::{Fed, Scripted};
    use crate::ssh::Conn;
    use bale_payload::format::{Trailer, TRAILER_LEN};

    /// What `trailer_script` prints for a file of `file_len` bytes ending in `trailer`.
    fn printed(file_len: u64, trailer: &[u8]) -> String {
        format!("{file_len}\n{}", hex::encode(trailer))
    }

    /// The trailer of the sample bundle, and the same bundle as if signed: a block of
    /// `sig_len` bytes between its header and trailer.
    fn trailers(dir: &std::path::Path, sig_len: u64) -> (Trailer, Trailer) {
        let bundle = crate::copy::store::tests::sample_bundle(dir);
        let plain = bale_payload::Bundle::open(&bundle).unwrap().trailer;
        let mut signed = plain.clone();
        signed.sig_len = sig_len;
        signed.file_len += sig_len;
        signed.minor = signed.minor.max(1);
        (plain, signed)
    }

    #[test]
    fn the_trailer_is_read_from_what_the_node_printed() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, _) = trailers(dir.path(), 0);
        let digest = bale_payload::format::hex(&plain.header_sha256);
        let path = "/var/lib/my bale/bundle.bale";
        let r = Scripted::new("n").on(
            "[ -f '/var/lib/my bale/bundle.bale' ]",
            &printed(plain.file_len, &plain.encode()),
        );
        assert_eq!(remote_digest(&r, path).unwrap(), Some(digest.clone()));
        assert_eq!(
            remote_identity(&r, path).unwrap().map(|(id, _)| id),
            Some(digest)
        );
        let calls = r.calls();
        assert_eq!(calls.len(), 2, "unsigned: no block to read");
        assert_eq!(calls[0].what, "read the bundle's trailer");
        assert_eq!(
            calls[0].line,
            format!(
                "[ -f '{path}' ] || exit 0; stat -c %s '{path}'; tail -c '{TRAILER_LEN}' \
                 '{path}' | od -An -v -tx1 | tr -d ' \\n'"
            )
        );

        // No file, a short or garbled answer, a file length that does not fit: no bundle.
        let mut bad = plain.encode();
        bad[100] ^= 1;
        for out in [
            String::new(),
            "12\n".into(),
            "x\nabcd".into(),
            printed(plain.file_len, &plain.encode()[1..]),
            printed(plain.file_len + 1, &plain.encode()),
            printed(plain.file_len, &bad),
        ] {
            let r = Scripted::new("n").on("stat -c %s", &out);
            assert_eq!(read_remote_trailer(&r, path).unwrap(), None, "{out:?}");
        }
        let r = Scripted::new("n").fails("stat -c %s", 1, "od: not found");
        assert_eq!(
            remote_digest(&r, path).unwrap_err().to_string(),
            "n: read the bundle's trailer failed (exit 1): od: not found"
        );
    }

    #[test]
    fn a_copy_signed_otherwise_gets_this_bundles_block_and_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, signed) = trailers(dir.path(), 300);
        let b = bale_payload::Bundle::open(dir.path().join("src.bale")).unwrap();
        let ctx = crate::engine::test_ctx_with(
            crate::engine::BundleInfo::of(&b),
            "/d d",
            Default::default(),
        );
        let node = Node::new(0, None, ctx);
        // The node's copy carries a block this (unsigned) bundle does not; once replaced, its
        // trailer is this one's.
        let r = Scripted::new("n")
            .once("stat -c %s", &printed(signed.file_len, &signed.encode()))
            .on("sha256sum", "5ea1  -\n")
            .on("truncate -s", "")
            .on("stat -c %s", &printed(plain.file_len, &plain.encode()));
        let attempt = Attempt::default();
        assert!(Upload::new()
            .re_signed_in_place(&node, &dir.path().join("src.bale"), &r, &attempt)
            .unwrap());
        assert_eq!(attempt.created(), ["/d d/bundle.bale.signed"]);
        let calls = r.calls();
        let resign = &calls[2];
        assert_eq!(resign.what, "replace the bundle's signatures");
        assert_eq!(
            resign.line,
            format!(
                "set -e; rm -f '/d d/bundle.bale.signed'; cp --reflink=auto '/d d/bundle.bale' \
                 '/d d/bundle.bale.signed'; truncate -s '{}' '/d d/bundle.bale.signed'; \
                 cat >>'/d d/bundle.bale.signed'; sync '/d d/bundle.bale.signed'; \
                 mv -f '/d d/bundle.bale.signed' '/d d/bundle.bale'",
                plain.sig_offset()
            )
        );
        assert_eq!(resign.stdin, Fed::Bytes(plain.encode().to_vec()));
        assert_eq!(calls.len(), 4, "checked once more after the swap");
    }

    #[test]
    fn a_signed_copy_is_identified_with_its_signature_block() {
        let dir = tempfile::tempdir().unwrap();
        let (_, signed) = trailers(dir.path(), 300);
        let header = bale_payload::format::hex(&signed.header_sha256);
        let r = Scripted::new("n")
            .on("stat -c %s", &printed(signed.file_len, &signed.encode()))
            .on("sha256sum", "5ea1  -\n");
        let (id, t) = remote_identity(&r, "/d/bundle.bale").unwrap().unwrap();
        assert_eq!(id, format!("{header}+5ea1"));
        assert_eq!(t, signed);
        let calls = r.calls();
        assert_eq!(calls[1].what, "read the bundle's signature block");
        assert_eq!(
            calls[1].line,
            format!(
                "tail -c '{}' '/d/bundle.bale' | head -c '300' | sha256sum",
                300 + TRAILER_LEN
            )
        );
    }

    #[test]
    fn the_remote_digest_is_read_by_the_payload_crate_from_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = crate::copy::store::tests::sample_bundle(dir.path());
        let want = hex::encode(
            bale_payload::Bundle::open(&bundle)
                .unwrap()
                .trailer
                .header_sha256,
        );

        let conn = Conn::local().unwrap();
        let path = bundle.to_string_lossy();
        assert_eq!(remote_digest(&conn, &path).unwrap(), Some(want));
        // No file, a truncated file, a damaged trailer: no digest.
        let missing = dir.path().join("none.bale");
        assert_eq!(
            remote_digest(&conn, &missing.to_string_lossy()).unwrap(),
            None
        );
        let bytes = std::fs::read(&bundle).unwrap();
        std::fs::write(&bundle, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(remote_digest(&conn, &path).unwrap(), None);
        let mut damaged = bytes.clone();
        let at = damaged.len() - 90;
        damaged[at] ^= 1;
        std::fs::write(&bundle, &damaged).unwrap();
        assert_eq!(remote_digest(&conn, &path).unwrap(), None);
    }
}

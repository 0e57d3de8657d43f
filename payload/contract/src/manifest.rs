//! The bundle manifest: the typed form of a bundle header's `metadata`.
//!
//! # Versions and unknown fields
//! - `schema` is the manifest's version, [`SCHEMA`] for what this bale writes; a bundle made
//!   before the field existed reads as version 1.
//! - A newer bale may add fields. A reader keeps fields it does not know in
//!   [`Manifest::unknown`] (they survive a `FROM` rebuild's read, and `bale info` can show
//!   them) and otherwise ignores them, so an older bale still installs a newer bundle whose
//!   additions are optional.
//! - A field that an older bale must not ignore is named in `requires`; a reader refuses a
//!   manifest that requires a feature it lacks, with a message that names it
//!   ([`ManifestError::Requires`]).
//! - A `schema` above [`SCHEMA`] is refused in the same way: a newer bale is needed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The manifest version this bale writes and reads.
pub const SCHEMA: u32 = 1;

/// Features that a manifest may require and that this bale implements (none yet beyond the
/// base schema).
pub const KNOWN_FEATURES: &[&str] = &[];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "the bundle's manifest has version {found}; this bale reads version {SCHEMA} and older: \
         use a newer bale"
    )]
    Newer { found: u32 },
    #[error("the bundle requires {feature:?}, which this bale does not have: use a newer bale")]
    Requires { feature: String },
    #[error("the bundle's manifest does not read: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// What a bundle says about itself beyond its name, version and architecture (which the
/// payload header holds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(default = "schema_one")]
    pub schema: u32,
    /// Features a reader must implement to use this bundle (see the module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// The platform the bundle's program and images are for, e.g. `linux/amd64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// `sha256:…` of the Kubefile it was built from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubefile: Option<String>,
    /// This layer's install steps (the base layers' are in `layers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_steps: Option<Vec<InstallStep>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub apps: BTreeMap<String, App>,
    /// The install-time environment (Kubefile `ENV`, base layers' first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Supported Kubernetes version or range (Kubefile `KUBEVERSION`), as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_version: Option<String>,
    /// Every image the bundle serves, by its original name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRecord>,
    /// The bundles this one was built `FROM`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Layer>,
    /// Fields this bale does not know (written by a newer one): kept, not acted on.
    #[serde(flatten)]
    pub unknown: BTreeMap<String, Value>,
}

fn schema_one() -> u32 {
    1
}

/// A command in shell form (run by `sh -c`) or exec form (no shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

/// An install-time step, run on the first master after the cluster is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InstallStep {
    Cmd {
        line: usize,
        command: Command,
    },
    /// Launch the app named `app` (see [`Manifest::apps`]).
    Launch {
        line: usize,
        app: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppRole {
    App,
    Cni,
    Csi,
}

/// An application the Kubefile declares (`APP`, `CNI`, `CSI`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub name: String,
    pub line: usize,
    pub role: AppRole,
    /// Paths inside the bundle: a chart directory, YAML files or directories, or scripts.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Commands from `APPCMDS` that replace the default launch; empty for the default
    /// (install the chart, run the script, apply the YAML).
    #[serde(default)]
    pub cmds: Vec<String>,
    /// The bundle directory holding the app's sources (`application/apps/<name>`, as in
    /// sealer): `APPCMDS` run there. `None` in bundles built before sources were carried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Variables from `APPENV`, exported to this app's launch commands only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// One image the bundle's registry serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The name as the manifests and charts write it, e.g. `docker.io/library/busybox:1.36`.
    pub name: String,
    /// `sha256:…` of its manifest or index.
    pub digest: String,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// Bytes of the manifest and every blob it references.
    pub size: u64,
}

/// A base bundle this one was built `FROM`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub name: String,
    pub version: String,
    /// `sha256:…` of the base's header.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_steps: Option<Vec<InstallStep>>,
    /// The entries this layer gave (a directory stands for everything below it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<String>>,
}

impl Manifest {
    /// A manifest of this bale's version.
    pub fn new() -> Manifest {
        Manifest {
            schema: SCHEMA,
            ..Manifest::default()
        }
    }

    /// Reads a header's metadata map, checking its version and required features.
    pub fn from_metadata(metadata: &BTreeMap<String, Value>) -> Result<Manifest, ManifestError> {
        let object: serde_json::Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let m: Manifest =
            serde_json::from_value(Value::Object(object)).map_err(ManifestError::Malformed)?;
        if m.schema > SCHEMA {
            return Err(ManifestError::Newer { found: m.schema });
        }
        if let Some(feature) = m
            .requires
            .iter()
            .find(|f| !KNOWN_FEATURES.contains(&f.as_str()))
        {
            return Err(ManifestError::Requires {
                feature: feature.clone(),
            });
        }
        Ok(m)
    }

    /// The header's metadata map for this manifest.
    pub fn to_metadata(&self) -> BTreeMap<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(o)) => o.into_iter().collect(),
            // A struct of strings, maps and lists always serializes to an object.
            _ => BTreeMap::new(),
        }
    }

    /// The install-time environment (empty when the bundle sets none).
    pub fn env(&self) -> BTreeMap<String, String> {
        self.env.clone().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(v: Value) -> BTreeMap<String, Value> {
        match v {
            Value::Object(o) => o.into_iter().collect(),
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn a_manifest_reads_back_what_it_wrote() {
        let mut m = Manifest::new();
        m.platform = Some("linux/amd64".into());
        m.install_steps = Some(vec![
            InstallStep::Cmd {
                line: 3,
                command: Command::Exec(vec!["kubectl".into(), "apply".into()]),
            },
            InstallStep::Launch {
                line: 4,
                app: "web".into(),
            },
        ]);
        m.env = Some(BTreeMap::from([("A".into(), "1".into())]));
        m.images = vec![ImageRecord {
            name: "docker.io/library/busybox:1.36".into(),
            digest: "sha256:ab".into(),
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            platform: "linux/amd64".into(),
            size: 7,
        }];
        let md = m.to_metadata();
        assert_eq!(md["schema"], json!(1));
        assert_eq!(
            md["images"][0]["mediaType"],
            json!("application/vnd.oci.image.index.v1+json")
        );
        assert_eq!(
            md["install_steps"][0],
            json!({"type": "cmd", "line": 3, "command": {"exec": ["kubectl", "apply"]}})
        );
        assert_eq!(Manifest::from_metadata(&md).unwrap(), m);
    }

    #[test]
    fn a_bundle_from_before_the_version_reads_as_version_one() {
        let md = metadata(json!({"env": {"A": "1"}, "install_steps": []}));
        let m = Manifest::from_metadata(&md).unwrap();
        assert_eq!(m.schema, 1);
        assert_eq!(m.env()["A"], "1");
    }

    #[test]
    fn unknown_fields_are_kept_required_features_and_newer_versions_refused() {
        let md = metadata(json!({"schema": 1, "sbom": {"spdx": "2.3"}}));
        let m = Manifest::from_metadata(&md).unwrap();
        assert_eq!(m.unknown["sbom"], json!({"spdx": "2.3"}));
        assert_eq!(m.to_metadata()["sbom"], json!({"spdx": "2.3"}));

        let md = metadata(json!({"schema": 1, "requires": ["signed-layers"]}));
        let e = Manifest::from_metadata(&md).unwrap_err().to_string();
        assert!(
            e.contains("\"signed-layers\"") && e.contains("newer bale"),
            "{e}"
        );

        let md = metadata(json!({"schema": 2}));
        let e = Manifest::from_metadata(&md).unwrap_err().to_string();
        assert!(e.contains("version 2") && e.contains("newer bale"), "{e}");

        let md = metadata(json!({"install_steps": [{"type": "dance", "line": 1}]}));
        assert!(matches!(
            Manifest::from_metadata(&md),
            Err(ManifestError::Malformed(_))
        ));
    }
}

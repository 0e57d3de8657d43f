//! The contract between `bale build` and the site: what a bundle's header says about it (the
//! [`manifest::Manifest`]: install steps, apps, environment, labels, images with their original
//! names, platforms and digests, and the base layers it was built `FROM`), the one model of OCI
//! image documents ([`oci`]), the one grammar of image references ([`imageref`]) that the
//! build, the discovery and the registry all use, and the `*.tmpl` language ([`template`])
//! that the build's discovery and the install both render with the bundle's environment.
//!
//! The bundler writes a manifest and the installer reads the same type back, so the two can
//! only disagree through a version number, which is checked (see [`manifest::SCHEMA`]).

pub mod imageref;
pub mod manifest;
pub mod oci;
pub mod template;

/// The bundle entry holding the build's SBOM (CycloneDX 1.5 JSON).
pub const SBOM_ENTRY: &str = ".bale/sbom.cdx.json";

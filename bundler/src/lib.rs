//! The build side of bale.

pub mod archive;
pub mod build;
pub mod discover;
/// The one image-reference grammar, shared with the registry.
pub use bale_contract::imageref;
pub mod images;
pub mod kubefile;
pub mod sbom;
pub mod share;
pub mod store;
pub mod tree;

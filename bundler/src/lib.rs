//! The build side of bale.

pub mod archive;
pub mod build;
pub mod discover;
pub mod imageref;
pub mod images;
pub mod kubefile;
pub mod tree;

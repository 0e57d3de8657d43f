//! The build side of bale.

pub mod discover;
pub mod imageref;
pub mod kubefile;
pub mod tree;

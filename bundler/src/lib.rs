//! The build side of bale.

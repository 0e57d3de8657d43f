//! The bale bundle file format.

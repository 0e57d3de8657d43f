//! Everything bale runs on site.

pub mod lvscare;
pub mod registry;

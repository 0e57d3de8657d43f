//! Everything bale runs on site.

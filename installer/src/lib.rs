//! Everything bale runs on site.

pub mod agent;
pub mod clusterfile;
pub mod copy;
pub mod engine;
pub mod hosts;
pub mod install;
pub mod lvscare;
pub mod node;
pub mod phases;
pub mod plugins;
pub mod preflight;
pub mod reset;
pub mod site;
pub mod ssh;

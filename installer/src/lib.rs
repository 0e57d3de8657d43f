//! Everything bale runs on site.

pub mod agent;
pub mod check;
pub mod clusterfile;
pub mod copy;
pub mod delete;
pub mod engine;
pub mod hosts;
pub mod install;
pub mod kube;
pub mod layout;
pub mod marks;
pub mod node;
pub mod phases;
pub mod plugins;
pub mod preflight;
pub mod records;
pub mod remote;
pub mod reset;
pub mod run;
pub mod site;
pub mod ssh;

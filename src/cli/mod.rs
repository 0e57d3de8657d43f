//! The command lines of the library crates' commands: the clap structs live here, in the
//! binary, and each turns into the plain options struct its library takes, so the libraries
//! carry no command-line parser and can be driven from code (tests, other front ends).
//!
//! One file per command family: [`hosts`] (install, reset, delete, check), [`agent`] (what the
//! copied bundle runs on a node) and [`registry`] (`registry serve`).

pub mod agent;
pub mod hosts;
pub mod registry;

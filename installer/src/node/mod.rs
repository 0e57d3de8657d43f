//! What runs on a node itself, natively, as `bale agent step NAME apply|undo|check`: each step
//! reads the install's [`context::NodeContext`] from `<data-dir>/node.json`.

pub mod context;

//! What runs on a node itself, natively, as `bale agent step NAME apply|undo|check`: each step
//! reads the install's [`context::NodeContext`] from `<data-dir>/node.json`.

pub mod containerd_config;
pub mod context;
pub mod cri;
pub mod etcd;
pub mod host;
pub mod kernel;
pub mod kube_proxy_rules;
pub mod kubernetes;
pub mod lvscare_unit;
pub mod podnet;
pub mod registry_unit;
pub mod runtime;
pub mod step;
pub mod systemd;

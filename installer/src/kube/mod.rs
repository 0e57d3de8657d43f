//! Kubernetes by kubeadm: the configuration files bale hands kubeadm (`kubeadm init` on the
//! first master, `kubeadm join` on the others and the workers), the facts about a node that
//! shape them, and the names and paths kubeadm and kubelet use, each written once here.
//!
//! Pure library: nothing here runs kubeadm or writes a file. The install phases detect
//! [`NodeFacts`] on every node, gather them into [`ClusterFacts`], render the configuration
//! with [`render_init`] / [`render_join`], and write the text to a 0600 file (it holds the
//! bootstrap token and the certificate key).
//!
//! - [`version`]: the Kubernetes version and the kubeadm configuration API it reads.
//! - [`facts`]: what a node allows (cgroup v1, swap, read-only sysctls, capabilities).
//! - [`kubeadm_config`]: the kubeadm YAML for each API, the CA hash, new secrets.

pub mod facts;
pub mod kubeadm_config;
pub mod version;

pub use facts::{ClusterFacts, FactsError, NodeFacts};
pub use kubeadm_config::{
    ca_cert_hash, new_certificate_key, new_token, render_init, render_join, BootstrapToken,
    CertificateKey, ClusterSpec, InitSecrets, JoinControlPlane, JoinSpec, KubeConfigError,
    KubeadmConfig, KubeadmTimeouts, NodeSpec, Taint, TaintEffect,
};
pub use version::{KubeVersion, KubeadmApi, VersionError};

use crate::node::containerd_config;

/// The name every node reaches the API servers by (each node's /etc/hosts, or the guardian's
/// virtual address), in every certificate's SANs: masters can come and go behind it.
pub const CONTROL_PLANE_NAME: &str = "apiserver.cluster.local";
/// The API server's port, on every master and behind [`CONTROL_PLANE_NAME`].
pub const API_PORT: u16 = 6443;

/// kubeadm's configuration directory.
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";
/// The cluster administrator's kubeconfig, on masters.
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
/// kubelet's kubeconfig, on every node once it has joined.
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
/// kubelet's kubeconfig while it bootstraps (TLS bootstrap with the token).
pub const BOOTSTRAP_KUBELET_CONF: &str = "/etc/kubernetes/bootstrap-kubelet.conf";
/// The static pods of the control plane.
pub const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
/// The cluster's certificates and keys.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
/// The cluster CA's certificate; its public key gives the joiners' `caCertHashes`.
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
/// Where the phases write the rendered kubeadm configuration (mode 0600: it holds secrets,
/// and is deleted once kubeadm has run).
pub const KUBEADM_CONFIG: &str = "/etc/kubernetes/bale-kubeadm.yaml";

/// kubelet's state directory.
pub const KUBELET_DIR: &str = "/var/lib/kubelet";
/// kubelet's configuration, written by kubeadm from the cluster's KubeletConfiguration.
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// The kubelet flags kubeadm chose for this node (node-ip, the CRI endpoint before 1.27).
pub const KUBEADM_FLAGS_ENV: &str = "/var/lib/kubelet/kubeadm-flags.env";
/// The local etcd's data, on masters.
pub const ETCD_DIR: &str = "/var/lib/etcd";
/// kubelet's systemd unit (kubeadm restarts it by this name).
pub const KUBELET_UNIT: &str = "kubelet.service";

/// `apiserver.cluster.local:6443`, the `controlPlaneEndpoint` and the joiners'
/// `apiServerEndpoint`.
pub fn control_plane_endpoint() -> String {
    format!("{CONTROL_PLANE_NAME}:{API_PORT}")
}

/// containerd's CRI socket as kubeadm and kubelet name it.
pub fn cri_socket() -> String {
    format!("unix://{}", containerd_config::SOCKET)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(
            super::control_plane_endpoint(),
            "apiserver.cluster.local:6443"
        );
        assert_eq!(
            super::cri_socket(),
            "unix:///run/containerd/containerd.sock"
        );
    }
}

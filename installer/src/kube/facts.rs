//! What a node allows Kubernetes to do, found on the node itself ([`NodeFacts::detect`]), and
//! what follows for kubeadm, kubelet, kube-proxy and containerd: the adjustments bale makes
//! (each said in one line) and the problems it cannot fix from inside the node.
//!
//! The facts are those that broke a kubeadm cluster in systemd-nspawn nodes on a cgroup v1
//! host (see the project's Kubernetes reference): cgroup v1 (kubelet refuses it from 1.35
//! unless told), swap, a read-only `nf_conntrack_max` (kube-proxy crash-loops writing it), a
//! capability bounding set without CAP_SYS_RESOURCE (runc cannot set a negative
//! oom_score_adj, so no pod sandbox starts), and host-wide sysctls that kubelet insists on
//! writing but cannot where /proc/sys is read-only.
//!
//! Detection only looks: a sysctl's writability is probed by opening it for writing, and
//! nothing is written. Every path is taken under a [`HostRoot`] so tests can fake a node.
//! The facts travel between node and admin as JSON (serde).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::version::KubeVersion;
use crate::node::containerd_config::CgroupDriver;
use crate::node::host::{HostError, HostRoot};

/// `/proc/sys/<name with dots as slashes>`; conntrack's maximum, which kube-proxy sets from
/// `conntrack.maxPerCore` unless that is 0.
pub const CONNTRACK_MAX: &str = "net.netfilter.nf_conntrack_max";

/// The host-wide sysctls kubelet checks at start (`setupKernelTunables`) and, with the
/// default `protectKernelDefaults: false`, writes when they differ, failing to start when it
/// cannot. It reads each one, so a missing one stops it too.
pub const KUBELET_SYSCTLS: [(&str, &str); 6] = [
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// CAP_SYS_RESOURCE's bit in the capability sets of `/proc/<pid>/status`.
const CAP_SYS_RESOURCE: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} has no CapBnd line to tell the capability bounding set")]
    NoCapBnd { path: PathBuf },
    #[error("{path}: CapBnd {value:?} is not a hexadecimal capability set")]
    BadCapBnd { path: PathBuf, value: String },
    #[error("no node facts were given: the cluster's kubelet and kube-proxy settings need them")]
    NoNodes,
    #[error(
        "the nodes disagree on the cgroup driver ({systemd} use systemd, {cgroupfs} use \
         cgroupfs), and kubelet's configuration is one for the whole cluster: run every node \
         on the same cgroup setup (all cgroup v2 with systemd, or all cgroup v1)"
    )]
    MixedCgroupDrivers { systemd: String, cgroupfs: String },
    #[error(
        "node {node} {what}, but the cluster's {config} was made for nodes without that; \
         install the cluster again with this node among the first ones, or give the node the \
         cluster's setup"
    )]
    NotAdmitted {
        node: String,
        what: String,
        config: &'static str,
    },
}

/// How the node's cgroups are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupMode {
    /// The unified hierarchy alone (`/sys/fs/cgroup/cgroup.controllers` exists).
    V2,
    /// v1 controllers, with an (empty) unified hierarchy beside them for systemd.
    Hybrid,
    /// v1 controllers only.
    Legacy,
}

impl CgroupMode {
    /// Whether the controllers are v1 (hybrid or legacy), which kubelet treats alike.
    pub fn is_v1(self) -> bool {
        self != CgroupMode::V2
    }

    pub fn describe(self) -> &'static str {
        match self {
            CgroupMode::V2 => "cgroup v2",
            CgroupMode::Hybrid => "cgroup v1 (hybrid)",
            CgroupMode::Legacy => "cgroup v1",
        }
    }
}

/// One sysctl as found on the node. `value` is `None` where the sysctl does not exist (its
/// module is not loaded, or the kernel lacks it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlFact {
    pub name: String,
    pub value: Option<String>,
    /// Whether root here can open it for writing: false on a read-only /proc/sys (a
    /// container's) and for sysctls the kernel shows read-only outside the initial network
    /// namespace.
    pub writable: bool,
}

/// A sysctl kubelet wants at a value, as found on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeletSysctl {
    pub name: String,
    pub wanted: String,
    pub value: Option<String>,
    pub writable: bool,
}

impl KubeletSysctl {
    pub fn differs(&self) -> bool {
        self.value.as_deref() != Some(self.wanted.as_str())
    }
}

/// What one node allows, detected on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFacts {
    pub cgroup: CgroupMode,
    /// The driver runc and kubelet must share: [`CgroupDriver::detect`]'s rule, on this root.
    #[serde(with = "driver_serde")]
    pub cgroup_driver: CgroupDriver,
    /// `/proc/swaps` lists a swap area.
    pub swap_on: bool,
    pub conntrack_max: SysctlFact,
    /// CAP_SYS_RESOURCE is in the capability bounding set, so processes here (runc setting
    /// up a pod sandbox) may lower an oom_score_adj below 0.
    pub negative_oom_score_adj: bool,
    /// Each of [`KUBELET_SYSCTLS`], in that order.
    pub kubelet_sysctls: Vec<KubeletSysctl>,
}

impl NodeFacts {
    /// The facts of the host under `root` ([`HostRoot::system`] for the machine this runs
    /// on): `/sys/fs/cgroup`, `/proc/...`, `/run/systemd/system` taken there.
    pub fn detect(root: &HostRoot) -> Result<NodeFacts, FactsError> {
        let cgroup = if root.exists("/sys/fs/cgroup/cgroup.controllers") {
            CgroupMode::V2
        } else if root.exists("/sys/fs/cgroup/unified/cgroup.controllers") {
            CgroupMode::Hybrid
        } else {
            CgroupMode::Legacy
        };
        // CgroupDriver::detect's rule: systemd's driver only where systemd runs on the unified
        // hierarchy.
        let cgroup_driver = if cgroup == CgroupMode::V2 && root.is_dir("/run/systemd/system") {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        };

        // A kernel without swap support has no /proc/swaps: no swap either.
        let swaps = root.read_optional("/proc/swaps")?.unwrap_or_default();
        let swap_on = swaps.lines().skip(1).any(|l| !l.trim().is_empty());

        let status_path = Path::new("/proc/self/status");
        let status = root.read_to_string(status_path)?;
        let bounding = cap_bnd(&status, &root.path(status_path))?;
        let negative_oom_score_adj = bounding & (1u64 << CAP_SYS_RESOURCE) != 0;

        let conntrack_max = sysctl_at(root, CONNTRACK_MAX)?;
        let kubelet_sysctls = KUBELET_SYSCTLS
            .iter()
            .map(|(name, wanted)| {
                let s = sysctl_at(root, name)?;
                Ok(KubeletSysctl {
                    name: s.name,
                    wanted: (*wanted).to_string(),
                    value: s.value,
                    writable: s.writable,
                })
            })
            .collect::<Result<_, FactsError>>()?;

        Ok(NodeFacts {
            cgroup,
            cgroup_driver,
            swap_on,
            conntrack_max,
            negative_oom_score_adj,
            kubelet_sysctls,
        })
    }

    /// kubeadm preflight checks that fail on this node for a reason bale accounts for, and
    /// nothing else: `SystemVerification` on cgroup v1 from 1.35 (it errs where kubelet's
    /// `failCgroupV1` would; bale sets that to false), and `Swap` with swap on before 1.23
    /// (an error until then, a warning since; bale sets `failSwapOn: false`).
    pub fn required_preflight_skips(&self, version: KubeVersion) -> Vec<&'static str> {
        let mut skips = Vec::new();
        if self.cgroup.is_v1() && version.at_least(1, 35) {
            skips.push("SystemVerification");
        }
        if self.swap_on && !version.at_least(1, 23) {
            skips.push("Swap");
        }
        skips
    }

    /// kubelet's `failCgroupV1: false`: on cgroup v1 from 1.31, where the field exists (its
    /// default turned true in 1.35).
    pub fn needs_fail_cgroup_v1_false(&self, version: KubeVersion) -> bool {
        self.cgroup.is_v1() && version.at_least(1, 31)
    }

    /// kube-proxy's `conntrack.maxPerCore: 0`, so it leaves nf_conntrack_max alone.
    pub fn needs_conntrack_max_per_core_zero(&self) -> bool {
        !self.conntrack_max.writable
    }

    /// containerd's CRI `restrict_oom_score_adj = true`: without CAP_SYS_RESOURCE runc cannot
    /// give a sandbox the negative oom_score_adj kubelet asks for, and no pod starts.
    pub fn needs_restrict_oom_score_adj(&self) -> bool {
        !self.negative_oom_score_adj
    }

    /// One line per adjustment bale makes for this node at `version`, and per sysctl kubelet
    /// will change on the host (they are host-wide).
    pub fn adjustments(&self, version: KubeVersion) -> Vec<String> {
        let mut out = Vec::new();
        let mut cgroup = Vec::new();
        if self.needs_fail_cgroup_v1_false(version) {
            cgroup.push("kubelet failCgroupV1=false".to_string());
        }
        if self.cgroup.is_v1() && version.at_least(1, 35) {
            cgroup.push("kubeadm check SystemVerification skipped".to_string());
        }
        if !cgroup.is_empty() {
            out.push(format!("{}: {}", self.cgroup.describe(), cgroup.join("; ")));
        }
        if self.swap_on {
            let mut line = "swap on: kubelet failSwapOn=false".to_string();
            if !version.at_least(1, 23) {
                line.push_str("; kubeadm check Swap skipped");
            }
            out.push(line);
        }
        if self.needs_conntrack_max_per_core_zero() {
            let why = if self.conntrack_max.value.is_none() {
                "missing"
            } else {
                "read-only"
            };
            out.push(format!(
                "nf_conntrack_max {why} here: kube-proxy conntrack.maxPerCore=0"
            ));
        }
        if self.needs_restrict_oom_score_adj() {
            out.push("CAP_SYS_RESOURCE missing: containerd restrict_oom_score_adj".to_string());
        }
        for s in &self.kubelet_sysctls {
            if let (true, true, Some(v)) = (s.differs(), s.writable, &s.value) {
                out.push(format!(
                    "{} is {v}: kubelet sets it to {} (host-wide)",
                    s.name, s.wanted
                ));
            }
        }
        out
    }

    /// What stops kubelet here and cannot be fixed from inside the node, each with its fix.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.kubelet_sysctls {
            match &s.value {
                None => out.push(format!(
                    "{} does not exist here, and kubelet will not start without reading it \
                     (wanted {}): use a kernel that has it",
                    s.name, s.wanted
                )),
                Some(v) if s.differs() && !s.writable => out.push(format!(
                    "{} is {v} and read-only here, and kubelet will not start unless it is {}: \
                     set it on the host: sysctl -w {}={} (and in /etc/sysctl.d to keep it)",
                    s.name, s.wanted, s.name, s.wanted
                )),
                Some(_) => {}
            }
        }
        out
    }
}

/// What the cluster-wide settings must allow for: kubeadm uploads one KubeletConfiguration
/// and one KubeProxyConfiguration at init, and every node that joins takes them. So a
/// relaxation any node needs goes to all (each is harmless where not needed), and the cgroup
/// driver, which must match each node's runc, must be the same everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFacts {
    #[serde(with = "driver_serde")]
    pub cgroup_driver: CgroupDriver,
    pub any_cgroup_v1: bool,
    pub any_swap: bool,
    pub any_conntrack_readonly: bool,
}

impl ClusterFacts {
    /// From every node's facts, by node name (the names go into the errors).
    pub fn from_nodes<'a>(
        nodes: impl IntoIterator<Item = (&'a str, &'a NodeFacts)>,
    ) -> Result<ClusterFacts, FactsError> {
        let mut systemd = Vec::new();
        let mut cgroupfs = Vec::new();
        let mut c = ClusterFacts {
            cgroup_driver: CgroupDriver::Cgroupfs,
            any_cgroup_v1: false,
            any_swap: false,
            any_conntrack_readonly: false,
        };
        for (name, f) in nodes {
            match f.cgroup_driver {
                CgroupDriver::Systemd => systemd.push(name),
                CgroupDriver::Cgroupfs => cgroupfs.push(name),
            }
            c.any_cgroup_v1 |= f.cgroup.is_v1();
            c.any_swap |= f.swap_on;
            c.any_conntrack_readonly |= f.needs_conntrack_max_per_core_zero();
        }
        match (systemd.is_empty(), cgroupfs.is_empty()) {
            (true, true) => Err(FactsError::NoNodes),
            (false, false) => Err(FactsError::MixedCgroupDrivers {
                systemd: systemd.join(", "),
                cgroupfs: cgroupfs.join(", "),
            }),
            (false, true) => Ok(ClusterFacts {
                cgroup_driver: CgroupDriver::Systemd,
                ..c
            }),
            (true, false) => Ok(c),
        }
    }

    /// Whether a node joining later fits the settings made at init.
    pub fn admits(&self, node: &str, f: &NodeFacts) -> Result<(), FactsError> {
        let refuse = |what: String, config| {
            Err(FactsError::NotAdmitted {
                node: node.to_string(),
                what,
                config,
            })
        };
        if f.cgroup_driver != self.cgroup_driver {
            return refuse(
                format!("needs the {} cgroup driver", f.cgroup_driver.as_str()),
                "kubelet configuration",
            );
        }
        if f.cgroup.is_v1() && !self.any_cgroup_v1 {
            return refuse(
                format!("is on {}", f.cgroup.describe()),
                "kubelet configuration",
            );
        }
        if f.swap_on && !self.any_swap {
            return refuse("has swap on".into(), "kubelet configuration");
        }
        if f.needs_conntrack_max_per_core_zero() && !self.any_conntrack_readonly {
            return refuse(
                "cannot write nf_conntrack_max".into(),
                "kube-proxy configuration",
            );
        }
        Ok(())
    }
}

/// The sysctl `name` (dotted) under `root`: its value, trimmed, and whether it opens for
/// writing. Opening does not change it; only a write would.
fn sysctl_at(root: &HostRoot, name: &str) -> Result<SysctlFact, FactsError> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    let value = root.read_optional(&path)?.map(|v| v.trim().to_string());
    let writable = value.is_some()
        && OpenOptions::new()
            .write(true)
            .open(root.path(&path))
            .is_ok();
    Ok(SysctlFact {
        name: name.to_string(),
        value,
        writable,
    })
}

/// The capability bounding set from a `/proc/<pid>/status` text.
fn cap_bnd(status: &str, path: &Path) -> Result<u64, FactsError> {
    let value = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .ok_or_else(|| FactsError::NoCapBnd {
            path: path.to_path_buf(),
        })?
        .trim();
    u64::from_str_radix(value, 16).map_err(|_| FactsError::BadCapBnd {
        path: path.to_path_buf(),
        value: value.to_string(),
    })
}

impl From<HostError> for FactsError {
    fn from(e: HostError) -> FactsError {
        FactsError::Read {
            path: e.path,
            source: e.source,
        }
    }
}

/// [`CgroupDriver`] as its kubelet name (`systemd`, `cgroupfs`) in JSON.
mod driver_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::node::containerd_config::CgroupDriver;

    pub fn serialize<S: Serializer>(d: &CgroupDriver, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(d.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<CgroupDriver, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "systemd" => Ok(CgroupDriver::Systemd),
            "cgroupfs" => Ok(CgroupDriver::Cgroupfs),
            other => Err(serde::de::Error::unknown_variant(
                other,
                &["systemd", "cgroupfs"],
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const V1_20: KubeVersion = KubeVersion::new(1, 20, 2);
    const V1_31: KubeVersion = KubeVersion::new(1, 31, 0);
    const V1_34: KubeVersion = KubeVersion::new(1, 34, 4);
    const V1_36: KubeVersion = KubeVersion::new(1, 36, 3);

    /// This machine kind's capability bounding set: every capability but CAP_SYS_RESOURCE.
    const CAPBND_NO_SYS_RESOURCE: &str = "000001fffeffffff";
    const CAPBND_ALL: &str = "000001ffffffffff";

    /// A fake node root: cgroup mode, systemd running or not, swap, CapBnd, and the sysctls
    /// (name, value); the sysctls named in `read_only` cannot be opened for writing.
    struct FakeNode {
        dir: tempfile::TempDir,
        locked: Vec<PathBuf>,
    }

    impl FakeNode {
        fn new(cgroup: CgroupMode, systemd: bool, swap: bool, capbnd: &str) -> FakeNode {
            let dir = tempfile::tempdir().unwrap();
            let r = dir.path();
            let cg = r.join("sys/fs/cgroup");
            match cgroup {
                CgroupMode::V2 => write(&cg.join("cgroup.controllers"), "cpu memory pids\n"),
                CgroupMode::Hybrid => {
                    fs::create_dir_all(cg.join("memory")).unwrap();
                    write(&cg.join("unified/cgroup.controllers"), "");
                }
                CgroupMode::Legacy => fs::create_dir_all(cg.join("memory")).unwrap(),
            }
            if systemd {
                fs::create_dir_all(r.join("run/systemd/system")).unwrap();
            }
            let mut swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n".to_string();
            if swap {
                swaps.push_str(
                    "/swapfile                               file\t\t1048572\t\t0\t\t-2\n",
                );
            }
            write(&r.join("proc/swaps"), &swaps);
            write(
                &r.join("proc/self/status"),
                &format!(
                    "Name:\tcat\nUmask:\t0022\nCapInh:\t0000000000000000\n\
                     CapPrm:\t{capbnd}\nCapEff:\t{capbnd}\nCapBnd:\t{capbnd}\n\
                     CapAmb:\t0000000000000000\nNoNewPrivs:\t0\n"
                ),
            );
            FakeNode {
                dir,
                locked: Vec::new(),
            }
        }

        fn root(&self) -> &Path {
            self.dir.path()
        }

        fn sysctl(&mut self, name: &str, value: &str, read_only: bool) -> &mut FakeNode {
            let p = self.root().join("proc/sys").join(name.replace('.', "/"));
            write(&p, &format!("{value}\n"));
            if read_only {
                make_unwritable(&p);
                self.locked.push(p);
            }
            self
        }

        /// All of kubelet's sysctls at what it wants, writable; conntrack too.
        fn kubelet_happy(&mut self) -> &mut FakeNode {
            for (n, v) in KUBELET_SYSCTLS {
                self.sysctl(n, v, false);
            }
            self.sysctl(CONNTRACK_MAX, "262144", false)
        }

        fn facts(&self) -> NodeFacts {
            NodeFacts::detect(&HostRoot::at(self.root())).unwrap()
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            for p in &self.locked {
                make_writable(p);
            }
        }
    }

    fn write(p: &Path, s: &str) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    }

    /// Root opens any file for writing whatever its mode, so as root the file is made
    /// immutable (`chattr +i`; the guard removes the flag); as anyone else, mode 0444 does.
    fn make_unwritable(p: &Path) {
        if bale_test_support::is_root() {
            let st = std::process::Command::new("chattr")
                .arg("+i")
                .arg(p)
                .status()
                .expect("chattr (e2fsprogs) makes a file unwritable for root");
            assert!(st.success(), "chattr +i {}", p.display());
        } else {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(p, fs::Permissions::from_mode(0o444)).unwrap();
        }
        assert!(
            OpenOptions::new().write(true).open(p).is_err(),
            "{} is still writable",
            p.display()
        );
    }

    fn make_writable(p: &Path) {
        if bale_test_support::is_root() {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(p)
                .status();
        }
    }

    #[test]
    fn hybrid_v1_node_like_this_machine_kinds_nspawn_nodes() {
        let mut n = FakeNode::new(CgroupMode::Hybrid, true, false, CAPBND_NO_SYS_RESOURCE);
        n.kubelet_happy()
            .sysctl(CONNTRACK_MAX, "262144", true)
            .sysctl("vm.overcommit_memory", "0", true)
            .sysctl("kernel.panic", "1", true);
        let f = n.facts();
        assert_eq!(f.cgroup, CgroupMode::Hybrid);
        assert!(f.cgroup.is_v1());
        // systemd runs, but on v1: runc's systemd driver needs delegation nspawn lacks.
        assert_eq!(f.cgroup_driver, CgroupDriver::Cgroupfs);
        assert!(!f.swap_on);
        assert!(!f.negative_oom_score_adj && f.needs_restrict_oom_score_adj());
        assert_eq!(
            f.conntrack_max,
            SysctlFact {
                name: CONNTRACK_MAX.into(),
                value: Some("262144".into()),
                writable: false
            }
        );

        assert_eq!(f.required_preflight_skips(V1_36), ["SystemVerification"]);
        assert!(f.required_preflight_skips(V1_34).is_empty());
        assert!(f.required_preflight_skips(V1_20).is_empty());
        assert!(f.needs_fail_cgroup_v1_false(V1_31) && f.needs_fail_cgroup_v1_false(V1_36));
        assert!(!f.needs_fail_cgroup_v1_false(KubeVersion::new(1, 30, 9)));

        assert_eq!(
            f.adjustments(V1_36),
            [
                "cgroup v1 (hybrid): kubelet failCgroupV1=false; kubeadm check SystemVerification skipped",
                "nf_conntrack_max read-only here: kube-proxy conntrack.maxPerCore=0",
                "CAP_SYS_RESOURCE missing: containerd restrict_oom_score_adj",
            ]
        );
        assert_eq!(
            f.adjustments(V1_34)[0],
            "cgroup v1 (hybrid): kubelet failCgroupV1=false"
        );
        assert_eq!(f.adjustments(V1_20).len(), 2, "{:?}", f.adjustments(V1_20));

        let p = f.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(
            p[0],
            "vm.overcommit_memory is 0 and read-only here, and kubelet will not start unless \
             it is 1: set it on the host: sysctl -w vm.overcommit_memory=1 (and in \
             /etc/sysctl.d to keep it)"
        );
        assert!(
            p[1].starts_with("kernel.panic is 1 and read-only here"),
            "{p:?}"
        );
        assert!(p[1].contains("sysctl -w kernel.panic=10"), "{p:?}");
    }

    #[test]
    fn v2_node_with_systemd_needs_nothing() {
        let mut n = FakeNode::new(CgroupMode::V2, true, false, CAPBND_ALL);
        n.kubelet_happy();
        let f = n.facts();
        assert_eq!(f.cgroup, CgroupMode::V2);
        assert!(!f.cgroup.is_v1());
        assert_eq!(f.cgroup_driver, CgroupDriver::Systemd);
        assert!(f.negative_oom_score_adj && !f.needs_restrict_oom_score_adj());
        assert!(f.conntrack_max.writable && !f.needs_conntrack_max_per_core_zero());
        for v in [V1_20, V1_31, V1_36] {
            assert!(f.required_preflight_skips(v).is_empty());
            assert!(f.adjustments(v).is_empty(), "{:?}", f.adjustments(v));
            assert!(!f.needs_fail_cgroup_v1_false(v));
        }
        assert!(f.problems().is_empty());
    }

    #[test]
    fn v2_without_systemd_and_legacy_v1_use_cgroupfs() {
        let mut n = FakeNode::new(CgroupMode::V2, false, false, CAPBND_ALL);
        n.kubelet_happy();
        assert_eq!(n.facts().cgroup_driver, CgroupDriver::Cgroupfs);

        let mut n = FakeNode::new(CgroupMode::Legacy, true, false, CAPBND_ALL);
        n.kubelet_happy();
        let f = n.facts();
        assert_eq!(f.cgroup, CgroupMode::Legacy);
        assert_eq!(f.cgroup_driver, CgroupDriver::Cgroupfs);
        assert_eq!(
            f.adjustments(V1_36),
            ["cgroup v1: kubelet failCgroupV1=false; kubeadm check SystemVerification skipped"]
        );
    }

    #[test]
    fn swap_and_writable_sysctls_that_differ() {
        let mut n = FakeNode::new(CgroupMode::V2, true, true, CAPBND_ALL);
        n.kubelet_happy().sysctl("kernel.panic_on_oops", "0", false);
        let f = n.facts();
        assert!(f.swap_on);
        assert_eq!(f.required_preflight_skips(V1_20), ["Swap"]);
        assert_eq!(
            f.required_preflight_skips(KubeVersion::new(1, 22, 0)),
            ["Swap"]
        );
        assert!(f
            .required_preflight_skips(KubeVersion::new(1, 23, 0))
            .is_empty());
        assert_eq!(
            f.adjustments(V1_20),
            [
                "swap on: kubelet failSwapOn=false; kubeadm check Swap skipped",
                "kernel.panic_on_oops is 0: kubelet sets it to 1 (host-wide)",
            ]
        );
        assert_eq!(f.adjustments(V1_36)[0], "swap on: kubelet failSwapOn=false");
        // kubelet can write it: no problem, only an adjustment.
        assert!(f.problems().is_empty(), "{:?}", f.problems());
    }

    #[test]
    fn missing_sysctls() {
        // No nf_conntrack module, no kernel.keys: kubelet cannot read what it checks.
        let mut n = FakeNode::new(CgroupMode::V2, true, false, CAPBND_ALL);
        for (name, v) in KUBELET_SYSCTLS {
            if !name.starts_with("kernel.keys.") {
                n.sysctl(name, v, false);
            }
        }
        let f = n.facts();
        assert_eq!(f.conntrack_max.value, None);
        assert!(!f.conntrack_max.writable && f.needs_conntrack_max_per_core_zero());
        assert_eq!(
            f.adjustments(V1_36),
            ["nf_conntrack_max missing here: kube-proxy conntrack.maxPerCore=0"]
        );
        let p = f.problems();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("kernel.keys.root_maxkeys does not exist here"));
        assert!(p[1].contains("kernel.keys.root_maxbytes") && p[1].contains("25000000"));
    }

    #[test]
    fn swaps_header_alone_is_no_swap_and_no_file_is_no_swap() {
        let mut n = FakeNode::new(CgroupMode::V2, true, false, CAPBND_ALL);
        n.kubelet_happy();
        assert!(!n.facts().swap_on);
        fs::remove_file(n.root().join("proc/swaps")).unwrap();
        assert!(!n.facts().swap_on);
    }

    #[test]
    fn status_without_or_with_a_bad_capbnd_is_an_error() {
        let mut n = FakeNode::new(CgroupMode::V2, true, false, CAPBND_ALL);
        n.kubelet_happy();
        let status = n.root().join("proc/self/status");
        fs::write(&status, "Name:\tcat\n").unwrap();
        let e = NodeFacts::detect(&HostRoot::at(n.root())).unwrap_err();
        assert!(matches!(e, FactsError::NoCapBnd { .. }), "{e}");
        fs::write(&status, "CapBnd:\tzz\n").unwrap();
        let e = NodeFacts::detect(&HostRoot::at(n.root())).unwrap_err();
        assert!(e.to_string().contains("\"zz\" is not a hexadecimal"), "{e}");
        fs::remove_file(&status).unwrap();
        let e = NodeFacts::detect(&HostRoot::at(n.root())).unwrap_err();
        assert!(e.to_string().contains("proc/self/status"), "{e}");
    }

    #[test]
    fn facts_travel_as_json() {
        let mut n = FakeNode::new(CgroupMode::Hybrid, false, true, CAPBND_NO_SYS_RESOURCE);
        n.kubelet_happy();
        let f = n.facts();
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"cgroup\":\"hybrid\""), "{json}");
        assert!(json.contains("\"cgroup_driver\":\"cgroupfs\""), "{json}");
        let back: NodeFacts = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
        let bad = json.replace("\"cgroupfs\"", "\"openrc\"");
        assert!(serde_json::from_str::<NodeFacts>(&bad).is_err());
    }

    #[test]
    fn this_machine() {
        // Only what holds on any machine: detection works on a real /proc, and the driver is
        // the one containerd's config gets.
        let f = NodeFacts::detect(&HostRoot::system()).unwrap();
        assert_eq!(f.cgroup_driver, CgroupDriver::detect(&HostRoot::system()));
        assert_eq!(f.kubelet_sysctls.len(), KUBELET_SYSCTLS.len());
        let status = fs::read_to_string("/proc/self/status").unwrap();
        let bnd = cap_bnd(&status, Path::new("/proc/self/status")).unwrap();
        assert_eq!(f.negative_oom_score_adj, bnd & (1 << 24) != 0);
    }

    fn facts(cgroup: CgroupMode, driver: CgroupDriver, swap: bool, ct_ro: bool) -> NodeFacts {
        NodeFacts {
            cgroup,
            cgroup_driver: driver,
            swap_on: swap,
            conntrack_max: SysctlFact {
                name: CONNTRACK_MAX.into(),
                value: Some("1".into()),
                writable: !ct_ro,
            },
            negative_oom_score_adj: true,
            kubelet_sysctls: Vec::new(),
        }
    }

    #[test]
    fn cluster_facts_take_every_nodes_needs() {
        let v2 = facts(CgroupMode::V2, CgroupDriver::Cgroupfs, false, false);
        let v1 = facts(CgroupMode::Hybrid, CgroupDriver::Cgroupfs, true, true);
        let c = ClusterFacts::from_nodes([("n1", &v2), ("n2", &v1)]).unwrap();
        assert_eq!(
            c,
            ClusterFacts {
                cgroup_driver: CgroupDriver::Cgroupfs,
                any_cgroup_v1: true,
                any_swap: true,
                any_conntrack_readonly: true
            }
        );
        assert!(c.admits("n3", &v1).is_ok() && c.admits("n3", &v2).is_ok());

        let only_v2 = ClusterFacts::from_nodes([("n1", &v2)]).unwrap();
        assert!(!only_v2.any_cgroup_v1 && !only_v2.any_swap);
        let e = only_v2.admits("n9", &v1).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "node n9 is on cgroup v1 (hybrid), but the cluster's kubelet configuration"
            ),
            "{e}"
        );

        let sd = facts(CgroupMode::V2, CgroupDriver::Systemd, false, false);
        let e = ClusterFacts::from_nodes([("a", &sd), ("b", &v2), ("c", &v1)]).unwrap_err();
        assert!(
            e.to_string().contains("(a use systemd, b, c use cgroupfs)"),
            "{e}"
        );
        let c = ClusterFacts::from_nodes([("a", &sd)]).unwrap();
        assert_eq!(c.cgroup_driver, CgroupDriver::Systemd);
        assert!(c
            .admits("b", &v2)
            .unwrap_err()
            .to_string()
            .contains("cgroupfs"));
        assert!(matches!(
            ClusterFacts::from_nodes(std::iter::empty()),
            Err(FactsError::NoNodes)
        ));
    }
}

//! Kubernetes on a node, with the bundle's own kubeadm, kubelet and kubectl (the runtime step
//! installs the bundle's `bin/*` to `/usr/local/bin`):
//!
//! - `bale agent step kubelet`: kubelet's unit and kubeadm's drop-in for it, crictl's config,
//!   and the node facts that decide what kubelet and kube-proxy must be told (cgroup v1,
//!   read-only sysctls); a host that cannot run kubelet at all is refused here, with the fix.
//! - `bale agent step cluster`: `kubeadm init` on the first master, `kubeadm join` (as a control
//!   plane on masters) everywhere else, with the configuration bale renders for this node. A
//!   control plane that exists is never initialised again; a node that joined is not joined
//!   again. When kubeadm fails, this attempt's half-made state is reset (it never worked); a
//!   node that was already a member is not touched. Undo is the full removal `reset` runs.
//! - `bale agent kube join-material` and `bale agent kube nodes`, run on the first master by the
//!   installer: a fresh bootstrap token (and certificate key) for a join, and the nodes with
//!   their pod subnets for the pod network; `bale agent kube mark`, a host's labels and taints
//!   on its Node.
//!
//! Join secrets travel over SSH on stdin/stdout and live on a node only in 0600 files that are
//! removed once the join is over; they never appear on a command line or in printed output.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bale_payload::Entry;
use serde::{Deserialize, Serialize};

use super::containerd_config as cc;
use super::host::HostRoot;
use super::runtime::{self, BIN_DIR};
use super::step::{self, Finding, Progress, Step, StepEnv, StepError, StepResult};
use super::systemd::{self, Systemd};
use crate::kube::kubeadm_config::{
    self as kc, BootstrapToken, CertificateKey, ClusterSpec, InitSecrets, JoinControlPlane,
    JoinSpec, KubeadmTimeouts, NodeSpec,
};
use crate::kube::{self, ClusterFacts, KubeVersion, NodeFacts, ADMIN_CONF, CA_CERT, KUBELET_CONF};

pub const KUBELET_UNIT: &str = "kubelet.service";
/// The slice the systemd cgroup driver puts every pod under.
pub const KUBEPODS_SLICE: &str = "kubepods.slice";
const KUBELET_DROPIN: &str = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf";
const CRICTL_CONFIG: &str = "/etc/crictl.yaml";
/// The resolv.conf kubelet hands to pods that use the node's DNS (CoreDNS itself).
pub const KUBELET_RESOLV_CONF: &str = "/etc/bale/kubelet-resolv.conf";
/// Where bale keeps the kubeadm files it renders (0600: they hold tokens while they exist).
const KUBEADM_DIR: &str = "/etc/bale/kubeadm";
/// The sealer defaults, so that Clusterfiles written for sealer keep their addresses.
pub const DEFAULT_POD_CIDR: &str = "100.64.0.0/10";
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/22";
/// The join secrets the installer hands a node, under the data dir.
pub const JOIN_FILE: &str = "kube-join.json";
/// How long a control plane that exists may take to answer (a node that just restarted).
const API_WAIT: Duration = Duration::from_secs(180);
/// How long the bootstrap signer may take to sign cluster-info after an init.
const SIGN_WAIT: Duration = Duration::from_secs(90);

/// Why the kubelet or cluster step, or a `bale agent kube` command, failed.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubeadm version")]
    KubeadmVersion(#[source] kube::VersionError),
    #[error("kubelet cannot run on this host as it is:\n  {}", problems.join("\n  "))]
    HostUnfit { problems: Vec<String> },
    #[error("{what}: not after {waited_secs} s")]
    NotInTime { what: String, waited_secs: u64 },
    #[error(
        "the bundle carries kubeadm but no kube-apiserver image: add the control-plane images \
         (kubeadm config images list) to the bundle's imageList"
    )]
    NoApiserverImage,
    #[error(
        "node_ip {node_ip:?} in {} is not an IP address: Kubernetes nodes are given by address",
        context_file.display()
    )]
    NodeIpNotAddress {
        node_ip: String,
        context_file: PathBuf,
    },
    #[error(
        "{ADMIN_CONF} exists but the API server does not answer: bale does not initialise over \
         an existing control plane. Look at `journalctl -u kubelet` and `crictl ps -a`; `bale \
         reset` starts over"
    )]
    ControlPlaneSilent,
    /// The cause sits inside the sentence (the advice follows it), so it is shown there rather
    /// than chained as a source.
    #[error(
        "{}: {cause}: the installer hands the join secrets to a node just before this step; run \
         `bale install` from the admin host",
        path.display()
    )]
    NoJoinMaterial {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: not join material", path.display())]
    BadJoinMaterial {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{}: a master needs the certificate key to join as a control plane",
        path.display()
    )]
    NoCertificateKey { path: PathBuf },
    #[error("apiserver name in /etc/hosts")]
    ApiserverName(#[source] super::lvscare_unit::LvscareStepError),
    #[error("kubeadm init phase upload-certs printed no certificate key")]
    NoCertificateKeyPrinted,
    #[error("kubectl get nodes: not JSON")]
    NodesNotJson(#[source] serde_json::Error),
    #[error("no Node has the InternalIP {address}: it has not joined the cluster")]
    NoNodeWithAddress { address: String },
    #[error(transparent)]
    Etcd(#[from] super::etcd::EtcdError),
    #[error(
        "this host runs no stacked etcd ({} is missing): ask a master of a cluster made by \
         kubeadm init with its local etcd",
        super::etcd::CLIENT_CERT
    )]
    NoLocalEtcd,
}

/// True when the bundle carries what a Kubernetes node needs.
pub fn bundle_has_kubernetes(entries: &[Entry]) -> bool {
    ["bin/kubeadm", "bin/kubelet", "bin/kubectl"]
        .iter()
        .all(|p| entries.iter().any(|e| e.path == *p))
}

fn bin(name: &str) -> PathBuf {
    Path::new(BIN_DIR).join(name)
}

fn kubeadm_version(env: &StepEnv) -> StepResult<KubeVersion> {
    let out = env.commands.run(
        &env.root.path(bin("kubeadm")).to_string_lossy(),
        &["version", "-o", "short"],
    )?;
    Ok(KubeVersion::parse(out.trim()).map_err(KubernetesError::KubeadmVersion)?)
}

fn env_kubernetes(env: &StepEnv) -> StepResult<bool> {
    Ok(bundle_has_kubernetes(&bundle_entries(env)?))
}

/// The bundle's entry table, read once per step action and handed on.
fn bundle_entries(env: &StepEnv) -> StepResult<Vec<bale_payload::Entry>> {
    let bundle = env.bundle()?;
    bundle.entries().map_err(|source| StepError::Payload {
        path: bundle.path().to_path_buf(),
        source,
    })
}

// ---------------------------------------------------------------------------------------------
// kubelet
// ---------------------------------------------------------------------------------------------

fn kubelet_unit() -> String {
    format!(
        "# Written by bale (bale agent step kubelet).\n\
         [Unit]\n\
         Description=kubelet: the Kubernetes node agent (installed by bale)\n\
         Wants=network-online.target containerd.service\n\
         After=network-online.target containerd.service\n\
         \n\
         [Service]\n\
         ExecStart={kubelet}\n\
         Restart=always\n\
         RestartSec=2\n\
         StartLimitInterval=0\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        kubelet = bin("kubelet").display()
    )
}

/// kubeadm's drop-in: kubeadm writes the files it names during init and join.
fn kubelet_dropin() -> String {
    format!(
        "# Written by bale (bale agent step kubelet): the flags kubeadm expects.\n\
         [Service]\n\
         Environment=\"KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf --kubeconfig={KUBELET_CONF}\"\n\
         Environment=\"KUBELET_CONFIG_ARGS=--config=/var/lib/kubelet/config.yaml\"\n\
         EnvironmentFile=-/var/lib/kubelet/kubeadm-flags.env\n\
         EnvironmentFile=-/etc/default/kubelet\n\
         ExecStart=\n\
         ExecStart={kubelet} $KUBELET_KUBECONFIG_ARGS $KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS\n",
        kubelet = bin("kubelet").display()
    )
}

/// The host's resolv.conf when it names a server; otherwise one naming this node's own address,
/// where nothing answers: CoreDNS starts (it refuses a file without a server) and answers
/// names outside the cluster with an error at once, as an air-gapped site should.
pub fn kubelet_resolv_conf(host: &str, node_ip: &str) -> String {
    if host
        .lines()
        .any(|l| l.split_whitespace().next() == Some("nameserver"))
    {
        return host.to_string();
    }
    format!(
        "# Written by bale (bale agent step kubelet): this host names no DNS server, so pods\n\
         # that use the node's DNS get this address, where none answers.\n\
         nameserver {node_ip}\n"
    )
}

fn crictl_config() -> String {
    format!(
        "# Written by bale (bale agent step kubelet).\n\
         runtime-endpoint: unix://{sock}\n\
         image-endpoint: unix://{sock}\n\
         timeout: 10\n",
        sock = cc::SOCKET
    )
}

/// What the kubelet step wrote, for undo.
#[derive(Debug, Default, Serialize, Deserialize)]
struct KubeletRecord {
    files: Vec<String>,
}

pub struct Kubelet;

impl Kubelet {
    /// The files the step writes (host paths) and their text.
    fn files(root: &HostRoot, node_ip: &str) -> Vec<(PathBuf, String)> {
        let host = root.read_or_default("/etc/resolv.conf");
        vec![
            (systemd::unit_path(KUBELET_UNIT), kubelet_unit()),
            (PathBuf::from(KUBELET_DROPIN), kubelet_dropin()),
            (PathBuf::from(CRICTL_CONFIG), crictl_config()),
            (
                PathBuf::from(KUBELET_RESOLV_CONF),
                kubelet_resolv_conf(&host, node_ip),
            ),
        ]
    }
}

impl Step for Kubelet {
    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        if !env_kubernetes(env)? {
            return Ok(vec![Finding::ok("this bundle carries no Kubernetes")]);
        }
        let mut out: Vec<Finding> = Self::files(env.root, &env.ctx.node_ip)
            .iter()
            .map(|(p, t)| Finding::file_holds(env.root, p, t))
            .collect();
        if env.root.exists(KUBELET_CONF) {
            let active = env.systemd().is_active(KUBELET_UNIT);
            out.push(Finding::of(
                active,
                format!(
                    "{KUBELET_UNIT}: {}",
                    if active { "active" } else { "not active" }
                ),
            ));
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        if !env_kubernetes(env)? {
            p.note("this bundle carries no Kubernetes (bin/kubeadm, bin/kubelet, bin/kubectl): nothing to do");
            return Ok(());
        }
        let root = env.root;
        let systemd = env.systemd();
        let version = kubeadm_version(env)?;
        let facts = detect_facts(root)?;
        let problems = facts.problems();
        if !problems.is_empty() {
            return Err(KubernetesError::HostUnfit { problems }.into());
        }
        let adjustments = facts.adjustments(version);
        for a in &adjustments {
            p.note(a);
        }
        let manifest = env.manifest_path("kubelet");
        let mut record: KubeletRecord = step::load_manifest(root, &manifest)?.unwrap_or_default();
        let mut changed = false;
        for (path, text) in Self::files(root, &env.ctx.node_ip) {
            let shown = path.to_string_lossy().into_owned();
            if !record.files.contains(&shown) {
                record.files.push(shown.clone());
                step::save_manifest(root, &manifest, &record)?;
            }
            if root.write_file(&path, text.as_bytes(), 0o644)? {
                p.changed(format!("wrote {shown}"));
                changed = true;
            }
        }
        systemd.daemon_reload()?;
        if !systemd.is_enabled(KUBELET_UNIT) {
            systemd.enable(KUBELET_UNIT)?;
            p.changed(format!("{KUBELET_UNIT} enabled (kubeadm starts it)"));
        }
        // A member's kubelet runs already; new flags take effect on a restart. Before init or
        // join it stays stopped: kubeadm starts it with its configuration.
        if changed && root.exists(KUBELET_CONF) {
            systemd.restart(KUBELET_UNIT)?;
            p.changed(format!("restarted {KUBELET_UNIT}"));
        }
        // The installer shows a step's last line: it carries what this host made bale adjust.
        p.note(if adjustments.is_empty() {
            format!("kubeadm {version}; this host needs no adjustment")
        } else {
            format!(
                "kubeadm {version}; adjusted for this host: {}",
                adjustments.join("; ")
            )
        });
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let root = env.root;
        let systemd = env.systemd();
        let manifest = env.manifest_path("kubelet");
        let Some(record) = step::load_manifest::<KubeletRecord>(root, &manifest)? else {
            return Ok(());
        };
        if systemd.is_active(KUBELET_UNIT) || systemd.is_enabled(KUBELET_UNIT) {
            systemd.stop_disable(KUBELET_UNIT)?;
            p.changed(format!("stopped and disabled {KUBELET_UNIT}"));
        }
        // With the systemd cgroup driver kubelet has systemd make kubepods.slice and a slice per
        // QoS class and pod: transient units that outlive kubelet (empty, in /run) until a
        // reboot. Stopping the top one removes every one of them.
        if systemd.is_active(KUBEPODS_SLICE) {
            systemd.stop(KUBEPODS_SLICE)?;
            p.changed(format!("stopped {KUBEPODS_SLICE} and the pod slices in it"));
        }
        for f in record.files.iter().rev() {
            let path = Path::new(f);
            if root.remove_file(path)? {
                p.changed(format!("removed {f}"));
            }
            if let Some(parent) = path.parent() {
                let stop = if parent.starts_with("/etc/systemd/system") {
                    Path::new("/etc/systemd/system")
                } else {
                    Path::new("/etc")
                };
                root.remove_empty_dirs(parent, stop);
            }
        }
        let _ = systemd.daemon_reload();
        root.remove_file(&manifest)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// cluster: init, join, reset
// ---------------------------------------------------------------------------------------------

/// What the installer hands a node that joins: secrets included, so it lives in a 0600 file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinMaterial {
    /// `host:port` of the API server the node joins through.
    pub endpoint: String,
    pub token: String,
    pub ca_cert_hash: String,
    /// Only for a master: the key of the uploaded control-plane certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<String>,
}

/// One node as the cluster sees it, for the pod network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeNode {
    pub name: String,
    pub internal_ip: String,
    pub pod_cidr: Option<String>,
    pub ready: bool,
}

/// `kubectl` against the admin kubeconfig.
fn kubectl(args: &[&str]) -> StepResult<String> {
    let mut all = vec!["--kubeconfig", ADMIN_CONF];
    all.extend_from_slice(args);
    step::run(&bin("kubectl").to_string_lossy(), &all)
}

fn api_ready() -> bool {
    kubectl(&["get", "--raw", "/readyz", "--request-timeout=5s"]).is_ok()
}

pub(crate) fn wait_for(
    what: &str,
    limit: Duration,
    mut ok: impl FnMut() -> bool,
) -> StepResult<()> {
    let start = Instant::now();
    loop {
        if ok() {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(KubernetesError::NotInTime {
                what: what.to_string(),
                waited_secs: limit.as_secs(),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `text` with every secret replaced, for anything printed or kept.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 6) {
        out = out.replace(s, "<redacted>");
    }
    out
}

/// Runs kubeadm with `args`; on failure the error carries its last lines, secrets redacted.
fn kubeadm(args: &[&str], secrets: &[&str]) -> StepResult<String> {
    let shown = format!("kubeadm {}", args.join(" "));
    let out = Command::new(bin("kubeadm"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| StepError::Spawn {
            command: shown.clone(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = redact(&text, secrets);
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(StepError::Command {
            command: shown,
            detail: format!("{}\n{}", out.status, tail.join("\n")),
        });
    }
    Ok(text)
}

/// True once a join is complete: kubelet has its credentials and, on a master, the control
/// plane's static pods (etcd last) are in place. The one rule: the installer asks it through
/// `agent kube member` before it fetches join secrets.
pub fn join_complete(root: &HostRoot, master: bool) -> bool {
    let manifests = Path::new(kube::MANIFESTS_DIR);
    root.exists(KUBELET_CONF)
        && (!master
            || (root.exists(manifests.join("kube-apiserver.yaml"))
                && root.exists(manifests.join("etcd.yaml"))))
}

/// True when something of a join is here: kubeadm writes these first.
fn join_started(root: &HostRoot) -> bool {
    [
        kube::BOOTSTRAP_KUBELET_CONF,
        KUBELET_CONF,
        CA_CERT,
        kube::KUBELET_CONFIG,
    ]
    .iter()
    .any(|p| root.exists(p))
}

/// After a failed init or join of this attempt: what it half-made never worked, so kubeadm's
/// own reset takes it away and the next run starts clean.
fn reset_failed_attempt(p: &mut Progress) {
    match kubeadm(&["reset", "-f"], &[]) {
        Ok(_) => p.changed("kubeadm reset: this attempt's half-made node state removed"),
        Err(e) => p.note(format!("kubeadm reset after the failure also failed: {e}")),
    }
}

/// The tag of the bundled image whose repository path ends in `name` (`etcd`, `coredns`).
fn tag_of(images: &[String], repo_tail: &str) -> Option<(String, String)> {
    images.iter().find_map(|n| {
        let r = bale_registry::names::parse_image_ref(n).ok()?;
        let tail = r.path.rsplit('/').next()?;
        if tail != repo_tail {
            return None;
        }
        let prefix = match r.path.rsplit_once('/') {
            Some((dir, _)) => format!("{}/{dir}", r.host),
            None => r.host.clone(),
        };
        Some((prefix, r.tag?))
    })
}

/// The cluster's pod subnet: Clusterfile or Kubefile `PodCIDR`, else sealer's default.
pub fn pod_subnet(ctx: &crate::node::context::NodeContext) -> String {
    ctx.env
        .get("PodCIDR")
        .cloned()
        .unwrap_or_else(|| DEFAULT_POD_CIDR.to_string())
}

fn detect_facts(root: &HostRoot) -> StepResult<NodeFacts> {
    Ok(NodeFacts::detect(root)?)
}

/// The cluster-wide settings. kubeadm keeps one kubelet and kube-proxy configuration for the
/// whole cluster; the sites bale installs are alike, so this node's facts stand for all.
fn cluster_spec(
    env: &StepEnv,
    version: KubeVersion,
    facts: &NodeFacts,
    images: &[String],
) -> StepResult<ClusterSpec> {
    let Some((repository, _)) = tag_of(images, "kube-apiserver") else {
        return Err(KubernetesError::NoApiserverImage.into());
    };
    let ctx = env.ctx;
    let mut sans: Vec<String> = vec![
        kube::CONTROL_PLANE_NAME.to_string(),
        ctx.vip.clone(),
        "127.0.0.1".into(),
    ];
    for m in &ctx.masters {
        if !sans.contains(m) {
            sans.push(m.clone());
        }
    }
    let env_or = |k: &str, d: &str| ctx.env.get(k).cloned().unwrap_or_else(|| d.to_string());
    let dns = tag_of(images, "coredns");
    let name = env.ctx.node_ip.as_str();
    let cluster_facts = ClusterFacts::from_nodes([(name, facts)])?;
    Ok(ClusterSpec {
        version,
        control_plane_endpoint: format!("{}:{}", kube::CONTROL_PLANE_NAME, kube::API_PORT),
        cert_sans: sans,
        pod_subnet: pod_subnet(ctx),
        service_subnet: env_or("SvcCIDR", DEFAULT_SERVICE_CIDR),
        image_repository: repository,
        dns_image_tag: dns.as_ref().map(|(_, t)| t.clone()),
        etcd_image_tag: tag_of(images, "etcd").map(|(_, t)| t),
        skip_dns_addon: dns.is_none(),
        facts: cluster_facts,
        timeouts: KubeadmTimeouts::default(),
        kubelet_resolv_conf: Some(KUBELET_RESOLV_CONF.into()),
    })
}

fn node_spec(env: &StepEnv, facts: NodeFacts) -> StepResult<NodeSpec> {
    let ip: IpAddr = env
        .ctx
        .node_ip
        .parse()
        .map_err(|_| KubernetesError::NodeIpNotAddress {
            node_ip: env.ctx.node_ip.clone(),
            context_file: crate::node::context::NodeContext::path(&env.ctx.data_dir),
        })?;
    let name = env
        .root
        .read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())?;
    Ok(NodeSpec {
        name,
        advertise_address: ip,
        cri_socket: kube::cri_socket(),
        facts,
        taints: None,
    })
}

pub struct Cluster;

impl Cluster {
    fn init(
        env: &StepEnv,
        version: KubeVersion,
        facts: NodeFacts,
        images: &[String],
        p: &mut Progress,
    ) -> StepResult<()> {
        if env.root.exists(ADMIN_CONF) {
            wait_for(
                "the control plane on this node answering",
                API_WAIT,
                api_ready,
            )
            .map_err(|_| KubernetesError::ControlPlaneSilent)?;
            p.note("control plane already initialised: kubeadm init not run again");
            return Ok(());
        }
        let cluster = cluster_spec(env, version, &facts, images)?;
        let node = node_spec(env, facts)?;
        let secrets = InitSecrets::generate(None)?;
        let token = secrets.token.expose().to_string();
        let key = secrets.certificate_key.expose().to_string();
        let rendered = kc::render_init(&cluster, &node, &secrets)?;
        let config = Path::new(KUBEADM_DIR).join("init.yaml");
        env.root
            .write_file(&config, rendered.text.as_bytes(), 0o600)?;
        let config_s = config.to_string_lossy().into_owned();
        let mut args = vec!["init", "--config", config_s.as_str(), "--upload-certs"];
        args.extend(rendered.flags.iter().map(String::as_str));
        let start = Instant::now();
        p.note(format!(
            "kubeadm init (Kubernetes {version}, endpoint {}, pods {}, services {})",
            cluster.control_plane_endpoint, cluster.pod_subnet, cluster.service_subnet
        ));
        let result = kubeadm(&args, &[&token, &key]);
        let _ = env.root.remove_file(&config);
        if let Err(e) = result {
            reset_failed_attempt(p);
            return Err(e);
        }
        p.changed(format!(
            "control plane initialised (kubeadm init, {:.0} s)",
            start.elapsed().as_secs_f64()
        ));
        // Joins wait for cluster-info to be signed with a token; without it they retry slowly.
        let id = secrets.token.id().to_string();
        let key_name = format!("jsonpath={{.data.jws-kubeconfig-{id}}}");
        wait_for("cluster-info signed for joins", SIGN_WAIT, || {
            kubectl(&[
                "-n",
                "kube-public",
                "get",
                "cm",
                "cluster-info",
                "-o",
                &key_name,
            ])
            .is_ok_and(|s| !s.trim().is_empty())
        })?;
        Ok(())
    }

    fn join(
        env: &StepEnv,
        version: KubeVersion,
        facts: NodeFacts,
        images: &[String],
        p: &mut Progress,
    ) -> StepResult<()> {
        let join_file = Path::new(&env.ctx.data_dir).join(JOIN_FILE);
        if join_complete(env.root, env.ctx.is_master()) {
            let _ = env.root.remove_file(&join_file);
            p.note("already a member of the cluster: kubeadm join not run again");
            return Ok(());
        }
        if join_started(env.root) {
            // An earlier join stopped half-way (the host went down, say): it never made this
            // host a working member, so its leftovers go before kubeadm, whose preflight
            // would refuse them.
            p.note("an earlier kubeadm join stopped half-way here: resetting what it left");
            reset_failed_attempt(p);
        }
        let text = env
            .root
            .read(&join_file)
            .map_err(|e| KubernetesError::NoJoinMaterial {
                path: join_file.clone(),
                cause: e.source,
            })?;
        let material: JoinMaterial =
            serde_json::from_slice(&text).map_err(|source| KubernetesError::BadJoinMaterial {
                path: join_file.clone(),
                source,
            })?;
        let cluster = cluster_spec(env, version, &facts, images)?;
        let node = node_spec(env, facts)?;
        let master = env.ctx.is_master();
        let control_plane = match (&material.certificate_key, master) {
            (Some(k), true) => Some(JoinControlPlane {
                certificate_key: CertificateKey::parse(k)?,
                advertise_address: node.advertise_address,
            }),
            (None, true) => {
                return Err(KubernetesError::NoCertificateKey {
                    path: join_file.clone(),
                }
                .into())
            }
            _ => None,
        };
        let spec = JoinSpec {
            endpoint: material.endpoint.clone(),
            token: BootstrapToken::parse(&material.token)?,
            ca_cert_hashes: vec![material.ca_cert_hash.clone()],
            control_plane,
        };
        let secrets: Vec<&str> = std::iter::once(material.token.as_str())
            .chain(material.certificate_key.as_deref())
            .collect();
        let rendered = kc::render_join(&cluster, &node, &spec)?;
        let config = Path::new(KUBEADM_DIR).join("join.yaml");
        env.root
            .write_file(&config, rendered.text.as_bytes(), 0o600)?;
        let config_s = config.to_string_lossy().into_owned();
        let mut args = vec!["join", "--config", config_s.as_str()];
        args.extend(rendered.flags.iter().map(String::as_str));
        let start = Instant::now();
        p.note(format!(
            "kubeadm join{} through {}",
            if master { " --control-plane" } else { "" },
            material.endpoint
        ));
        let result = kubeadm(&args, &secrets);
        let _ = env.root.remove_file(&config);
        let _ = env.root.remove_file(&join_file);
        if let Err(e) = result {
            reset_failed_attempt(p);
            return Err(e);
        }
        p.changed(format!(
            "joined the cluster{} (kubeadm join, {:.0} s)",
            if master { " as a control plane" } else { "" },
            start.elapsed().as_secs_f64()
        ));
        if master {
            // Its own API server answers now: the name points here, not at the first master.
            let host = super::lvscare_unit::Host {
                root: env.root,
                commands: env.commands,
            };
            super::lvscare_unit::apply(env.ctx, host).map_err(KubernetesError::ApiserverName)?;
            p.changed(format!(
                "{} now names this master",
                kube::CONTROL_PLANE_NAME
            ));
        }
        Ok(())
    }
}

impl Step for Cluster {
    fn name(&self) -> &'static str {
        "cluster"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        if !env_kubernetes(env)? {
            return Ok(vec![Finding::ok("this bundle carries no Kubernetes")]);
        }
        let joined = env.root.exists(KUBELET_CONF);
        let mut out = vec![Finding::of(
            joined,
            format!(
                "{KUBELET_CONF}: {}",
                if joined {
                    "member of the cluster"
                } else {
                    "not joined"
                }
            ),
        )];
        if env.ctx.is_master() {
            let manifest = Path::new(kube::MANIFESTS_DIR).join("kube-apiserver.yaml");
            out.push(Finding::of(
                env.root.exists(&manifest),
                format!("{}: control plane here", manifest.display()),
            ));
        }
        if env.ctx.first_master && env.root.exists(ADMIN_CONF) {
            // The cluster as its API sees it: every node Ready, every system pod running.
            match cluster_nodes() {
                Ok(nodes) => {
                    let ready = nodes.iter().filter(|n| n.ready).count();
                    let not: Vec<&str> = nodes
                        .iter()
                        .filter(|n| !n.ready)
                        .map(|n| n.name.as_str())
                        .collect();
                    out.push(Finding::of(
                        not.is_empty(),
                        format!(
                            "nodes: {ready} of {} Ready{}",
                            nodes.len(),
                            if !not.is_empty() {
                                format!(" (not Ready: {})", not.join(", "))
                            } else {
                                String::new()
                            }
                        ),
                    ));
                }
                Err(e) => out.push(Finding::bad(format!("nodes: {e}"))),
            }
            match kubectl(&[
                "get",
                "pods",
                "-n",
                "kube-system",
                "--no-headers",
                "-o",
                "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
            ]) {
                Ok(text) => {
                    let pods: Vec<(&str, &str)> = text
                        .lines()
                        .filter_map(|l| l.split_once(char::is_whitespace))
                        .map(|(n, p)| (n, p.trim()))
                        .collect();
                    let bad: Vec<String> = pods
                        .iter()
                        .filter(|(_, p)| *p != "Running")
                        .map(|(n, p)| format!("{n} {p}"))
                        .collect();
                    out.push(Finding::of(
                        bad.is_empty(),
                        format!(
                            "kube-system: {} of {} pods Running{}",
                            pods.len() - bad.len(),
                            pods.len(),
                            if bad.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", bad.join(", "))
                            }
                        ),
                    ));
                }
                Err(e) => out.push(Finding::bad(format!("kube-system pods: {e}"))),
            }
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let entries = bundle_entries(env)?;
        if !bundle_has_kubernetes(&entries) {
            p.note("this bundle carries no Kubernetes: nothing to do");
            return Ok(());
        }
        // The images the bundle carries, by original name: what kubeadm is told to use.
        let images = runtime::bundled_image_names(env.bundle()?, &entries)?;
        let version = kubeadm_version(env)?;
        let facts = detect_facts(env.root)?;
        if env.ctx.first_master {
            Self::init(env, version, facts, &images, p)
        } else {
            Self::join(env, version, facts, &images, p)
        }
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        // A control plane's etcd member goes first, while this host's API server can still
        // tell kubeadm where the other members are; then the API server stops on its own.
        let root = env.root;
        let systemd = env.systemd();
        let has_kubeadm = root.exists(bin("kubeadm"));
        if has_kubeadm && root.exists(Path::new(kube::MANIFESTS_DIR).join("etcd.yaml")) {
            match kubeadm(&["reset", "phase", "remove-etcd-member"], &[]) {
                Ok(_) => p.changed("removed this host's etcd member"),
                Err(e) => p.note(format!("removing this host's etcd member failed: {e}")),
            }
        }
        stop_apiserver_gracefully(root, systemd, p);
        if has_kubeadm && (root.exists(KUBELET_CONF) || root.exists(kube::MANIFESTS_DIR)) {
            match kubeadm(&["reset", "-f"], &[]) {
                Ok(_) => p.changed("kubeadm reset"),
                Err(e) => p.note(format!("kubeadm reset failed ({e}); removing by hand")),
            }
        }
        if systemd.is_active(KUBELET_UNIT) {
            let _ = systemd.stop_disable(KUBELET_UNIT);
        }
        for dir in [kube::KUBELET_DIR, kube::ETCD_DIR] {
            let d = Path::new(dir);
            if root.exists(d) {
                runtime::empty_dir(env, d, p)?;
                // Gone unless it is a mount point (as on the test nodes).
                if root.remove_empty_dir(d) {
                    p.changed(format!("removed {dir}"));
                }
            }
        }
        for dir in [kube::KUBERNETES_DIR, KUBEADM_DIR] {
            if root.exists(dir) {
                root.remove_dir_all(dir)?;
                p.changed(format!("removed {dir}"));
            }
        }
        let _ = root.remove_file(Path::new(&env.ctx.data_dir).join(JOIN_FILE));
        remove_pod_netns(env, p);
        super::kube_proxy_rules::remove(env.commands, p);
        Ok(())
    }
}

/// Before a control plane is reset: its API server leaves by its own graceful shutdown, which
/// takes its address out of the `kubernetes` Service at once. kubeadm's reset kills it instead,
/// and for the lease's 15 s the other nodes' pods keep dialling this host, whose answers, with
/// the pod routes gone, would leave through the default gateway.
fn stop_apiserver_gracefully(root: &HostRoot, systemd: Systemd, p: &mut Progress) {
    let manifest = Path::new(kube::MANIFESTS_DIR).join("kube-apiserver.yaml");
    if !root.exists(&manifest) || !systemd.is_active(KUBELET_UNIT) {
        return;
    }
    let parked = Path::new(KUBEADM_DIR).join("kube-apiserver.yaml.stopped");
    if root.create_dir_all(KUBEADM_DIR).is_err() || root.rename(&manifest, &parked).is_err() {
        return;
    }
    let gone = wait_for("the API server stopping", Duration::from_secs(45), || {
        std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], kube::API_PORT)),
            Duration::from_millis(300),
        )
        .is_err()
    });
    match gone {
        Ok(()) => p.changed("the API server stopped on its own (its endpoint left the cluster)"),
        Err(e) => p.note(format!("{e}; resetting anyway")),
    }
}

/// The network namespaces containerd pinned for pods (`/run/netns/cni-*`) that outlived their
/// pods: unmounting one deletes the namespace and with it the pod's end of its veth.
fn remove_pod_netns(env: &StepEnv, p: &mut Progress) {
    let Ok(dir) = env.root.read_dir("/run/netns") else {
        return;
    };
    let mut removed = 0;
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("cni-") {
            continue;
        }
        let path = e.path();
        env.commands.unmount(&path);
        if std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    if removed > 0 {
        p.changed(format!(
            "removed {removed} leftover pod network namespace(s)"
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// helpers the installer runs on the first master
// ---------------------------------------------------------------------------------------------

/// `bale agent kube join-material`: a fresh token (30 min) and, for a control plane, a fresh
/// certificate key with the certificates uploaded under it; printed as one JSON line.
pub fn join_material(control_plane: bool) -> StepResult<JoinMaterial> {
    let token = kubeadm(
        &[
            "token",
            "create",
            "--ttl",
            "30m",
            "--kubeconfig",
            ADMIN_CONF,
        ],
        &[],
    )?
    .trim()
    .to_string();
    let certificate_key = if control_plane {
        let out = kubeadm(&["init", "phase", "upload-certs", "--upload-certs"], &[])?;
        let key = out
            .lines()
            .map(str::trim)
            .rfind(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
            .map(str::to_string)
            .ok_or(KubernetesError::NoCertificateKeyPrinted)?;
        Some(key)
    } else {
        None
    };
    let ca = std::fs::read(CA_CERT).map_err(|e| StepError::io(CA_CERT, e))?;
    let ca_cert_hash = kc::ca_cert_hash(&ca)?;
    Ok(JoinMaterial {
        endpoint: format!("{}:{}", kube::CONTROL_PLANE_NAME, kube::API_PORT),
        token,
        ca_cert_hash,
        certificate_key,
    })
}

/// `bale agent kube forget`: deletes the Node objects whose InternalIP is one of `addresses`,
/// then removes the etcd members on those addresses that are still listed (a master deleted
/// while unreachable never removed its own); one line per node and member, a summary last.
pub fn forget(addresses: &[String]) -> StepResult<Vec<String>> {
    let list = cluster_nodes()?;
    let mut out = Vec::new();
    for n in list.iter().filter(|n| addresses.contains(&n.internal_ip)) {
        kubectl(&["delete", "node", &n.name, "--wait=true", "--timeout=60s"])?;
        out.push(format!("deleted node {} ({})", n.name, n.internal_ip));
    }
    let forgotten = out.len();
    let members = forget_etcd_members(addresses)?;
    let removed = members.len();
    out.extend(members);
    out.push(format!(
        "{forgotten} node(s) forgotten; {} remain; {removed} etcd member(s) removed",
        list.len() - forgotten
    ));
    Ok(out)
}

/// Removes the etcd members whose peer URLs are on `addresses`; nothing when this host runs no
/// stacked etcd (workers, an external etcd) or none of them is listed any more.
fn forget_etcd_members(addresses: &[String]) -> StepResult<Vec<String>> {
    use super::etcd;
    if !etcd::local_etcd() {
        return Ok(Vec::new());
    }
    let list = etcd::member_list().map_err(KubernetesError::from)?;
    let mut out = Vec::new();
    for m in etcd::members_of(&list, addresses) {
        if etcd::member_remove(m.id).map_err(KubernetesError::from)? {
            out.push(format!("removed etcd member {}", etcd::describe(m)));
        }
    }
    Ok(out)
}

/// `bale agent kube etcd-member`: where the etcd member of the host at `address` stands, as
/// this master's etcd lists it.
pub fn etcd_standing(address: &str) -> StepResult<super::etcd::Standing> {
    use super::etcd;
    if !etcd::local_etcd() {
        return Err(KubernetesError::NoLocalEtcd.into());
    }
    let list = etcd::member_list().map_err(KubernetesError::from)?;
    Ok(etcd::standing(&list, address))
}

/// `bale agent kube drain`: cordons and drains the nodes whose InternalIP is one of
/// `addresses` (DaemonSet pods stay: they go with the node); one line per node.
pub fn drain(addresses: &[String]) -> StepResult<Vec<String>> {
    let list = cluster_nodes()?;
    let mut out = Vec::new();
    for n in list.iter().filter(|n| addresses.contains(&n.internal_ip)) {
        kubectl(&[
            "drain",
            &n.name,
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--force",
            "--timeout=120s",
        ])?;
        out.push(format!("drained node {} ({})", n.name, n.internal_ip));
    }
    if out.is_empty() {
        out.push("no such node in the cluster: nothing to drain".into());
    }
    Ok(out)
}

/// `bale agent kube mark`: gives the Node whose InternalIP is `address` these labels and
/// taints (a Clusterfile's `labels`/`taints` of its host), changing only what differs, so a
/// second run changes nothing; one line per change.
pub fn mark(
    address: &str,
    labels: &[(String, String)],
    taints: &[crate::marks::Taint],
) -> StepResult<Vec<String>> {
    let json = kubectl(&["get", "nodes", "-o", "json"])?;
    let mut out = Vec::new();
    for args in mark_commands(&json, address, labels, taints)? {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(&refs)?;
        out.push(format!("kubectl {}", args.join(" ")));
    }
    if out.is_empty() {
        out.push(format!(
            "node {address}: labels and taints already in place"
        ));
    }
    Ok(out)
}

/// The `kubectl` arguments that bring the Node of `address` (in `kubectl get nodes -o json`)
/// to these labels and taints: labels and taints that differ are set with `--overwrite`; a
/// removal is asked only of a taint the Node has (kubectl refuses to remove a missing one).
pub fn mark_commands(
    nodes_json: &str,
    address: &str,
    labels: &[(String, String)],
    taints: &[crate::marks::Taint],
) -> StepResult<Vec<Vec<String>>> {
    use crate::marks::Taint;
    let v: serde_json::Value =
        serde_json::from_str(nodes_json).map_err(KubernetesError::NodesNotJson)?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let node = items
        .iter()
        .find(|n| {
            n["status"]["addresses"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["type"] == "InternalIP" && x["address"] == address)
            })
        })
        .ok_or_else(|| KubernetesError::NoNodeWithAddress {
            address: address.to_string(),
        })?;
    let name = node["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let has_label = |k: &str, val: &str| node["metadata"]["labels"][k].as_str() == Some(val);
    let current: Vec<(String, String, String)> = node["spec"]["taints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    let f = |k: &str| t[k].as_str().unwrap_or_default().to_string();
                    (f("key"), f("value"), f("effect"))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut cmds = Vec::new();
    let set: Vec<String> = labels
        .iter()
        .filter(|(k, val)| !has_label(k, val))
        .map(|(k, val)| format!("{k}={val}"))
        .collect();
    if !set.is_empty() {
        let mut c = vec![
            "label".to_string(),
            "node".into(),
            name.clone(),
            "--overwrite".into(),
        ];
        c.extend(set);
        cmds.push(c);
    }
    for t in taints {
        let needed = match t {
            Taint::Set { key, value, effect } => !current
                .iter()
                .any(|(k, v, e)| k == key && v == value && e == effect),
            Taint::Remove { key, effect } => {
                current.iter().any(|(k, _, e)| k == key && e == effect)
            }
            Taint::RemoveKey { key } => current.iter().any(|(k, _, _)| k == key),
        };
        if needed {
            cmds.push(vec![
                "taint".into(),
                "node".into(),
                name.clone(),
                "--overwrite".into(),
                t.kubectl_arg(),
            ]);
        }
    }
    Ok(cmds)
}

/// `bale agent kube nodes`: every node with its InternalIP and pod subnet; with `wait_for`,
/// first waits until that many nodes have a pod subnet.
pub fn nodes(wait_for_count: usize, limit: Duration) -> StepResult<Vec<KubeNode>> {
    let start = Instant::now();
    loop {
        let list = cluster_nodes()?;
        let with_cidr = list.iter().filter(|n| n.pod_cidr.is_some()).count();
        if with_cidr >= wait_for_count || start.elapsed() >= limit {
            return Ok(list);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The cluster's nodes, as the admin kubeconfig's API server lists them.
fn cluster_nodes() -> StepResult<Vec<KubeNode>> {
    parse_nodes(&kubectl(&["get", "nodes", "-o", "json"])?)
}

/// The nodes of `kubectl get nodes -o json`.
pub fn parse_nodes(json: &str) -> StepResult<Vec<KubeNode>> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(KubernetesError::NodesNotJson)?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    Ok(items
        .iter()
        .map(|n| KubeNode {
            name: n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            internal_ip: n["status"]["addresses"]
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .find(|x| x["type"] == "InternalIP")
                        .and_then(|x| x["address"].as_str())
                })
                .unwrap_or_default()
                .to_string(),
            pod_cidr: n["spec"]["podCIDR"].as_str().map(str::to_string),
            ready: n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == "True")
            }),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 15: a Clusterfile's host labels and taints reach the Node, and a second run asks
    /// for nothing.
    #[test]
    fn node_marks_change_only_what_differs() {
        use crate::marks::Taint;
        let json = r#"{"items": [
            {"metadata": {"name": "m1", "labels": {"disk": "hdd"}},
             "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]},
             "spec": {"taints": [{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}]}},
            {"metadata": {"name": "w1", "labels": {"disk": "ssd", "zone": "a"}},
             "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
             "spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoExecute"}]}}]}"#;
        let t = |s: &str| Taint::parse(s).unwrap();
        let labels = vec![("disk".to_string(), "ssd".to_string())];
        let cmds = mark_commands(
            json,
            "10.0.0.2",
            &labels,
            &[
                t("node-role.kubernetes.io/master-"),
                t("dedicated=db:NoSchedule"),
            ],
        )
        .unwrap();
        let lines: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "label node m1 --overwrite disk=ssd",
                "taint node m1 --overwrite node-role.kubernetes.io/master-",
                "taint node m1 --overwrite dedicated=db:NoSchedule",
            ]
        );
        // Already in place: nothing to run; a removal of a missing taint is not asked.
        let cmds = mark_commands(
            json,
            "10.0.0.5",
            &labels,
            &[t("gpu=yes:NoExecute"), t("other-"), t("gpu:NoSchedule-")],
        )
        .unwrap();
        assert!(cmds.is_empty(), "{cmds:?}");
        let e = mark_commands(json, "10.0.0.9", &labels, &[]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.9"), "{e}");
    }

    #[test]
    fn pods_get_a_name_server_even_where_the_host_has_none() {
        let host = "search example.com\nnameserver 10.0.0.53\n";
        assert_eq!(kubelet_resolv_conf(host, "10.77.0.11"), host);
        let none = kubelet_resolv_conf("", "10.77.0.11");
        assert!(none.contains("\nnameserver 10.77.0.11\n"), "{none}");
    }

    #[test]
    fn a_member_has_kubelet_credentials_and_a_master_its_control_plane() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        let put = |p: &str| {
            let f = root.path(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "x").unwrap();
        };
        let manifests = Path::new(kube::MANIFESTS_DIR);
        assert!(!join_complete(&root, false));
        put(KUBELET_CONF);
        assert!(join_complete(&root, false));
        assert!(
            !join_complete(&root, true),
            "a master without its static pods"
        );
        put(&manifests.join("kube-apiserver.yaml").to_string_lossy());
        assert!(
            !join_complete(&root, true),
            "a master whose etcd is not there yet"
        );
        put(&manifests.join("etcd.yaml").to_string_lossy());
        assert!(join_complete(&root, true));
    }

    #[test]
    fn redact_hides_every_secret() {
        let t = "kubeadm join x --token abcdef.0123456789abcdef --certificate-key 00ff";
        let r = redact(t, &["abcdef.0123456789abcdef", "00ff"]);
        assert!(!r.contains("0123456789abcdef"));
        // Too short to be a secret: left alone rather than blanking every "00ff".
        assert!(r.contains("00ff"));
    }

    #[test]
    fn nodes_from_kubectl_json() {
        let j = r#"{"items":[
          {"metadata":{"name":"n1"},"spec":{"podCIDR":"100.64.0.0/24"},
           "status":{"addresses":[{"type":"InternalIP","address":"10.77.0.11"},{"type":"Hostname","address":"n1"}],
                     "conditions":[{"type":"Ready","status":"True"}]}},
          {"metadata":{"name":"n2"},"spec":{},
           "status":{"addresses":[{"type":"InternalIP","address":"10.77.0.12"}],
                     "conditions":[{"type":"Ready","status":"False"}]}}]}"#;
        let n = parse_nodes(j).unwrap();
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].internal_ip, "10.77.0.11");
        assert_eq!(n[0].pod_cidr.as_deref(), Some("100.64.0.0/24"));
        assert!(n[0].ready);
        assert_eq!(n[1].pod_cidr, None);
        assert!(!n[1].ready);
    }

    #[test]
    fn image_tags_come_from_the_bundle() {
        let images = vec![
            "registry.k8s.io/kube-apiserver:v1.36.3".to_string(),
            "registry.k8s.io/coredns/coredns:v1.14.3".to_string(),
            "registry.k8s.io/etcd:3.6.8-0".to_string(),
        ];
        assert_eq!(
            tag_of(&images, "kube-apiserver"),
            Some(("registry.k8s.io".into(), "v1.36.3".into()))
        );
        assert_eq!(
            tag_of(&images, "coredns"),
            Some(("registry.k8s.io/coredns".into(), "v1.14.3".into()))
        );
        assert_eq!(tag_of(&images, "etcd").map(|t| t.1), Some("3.6.8-0".into()));
        assert_eq!(tag_of(&images, "pause"), None);
    }

    use crate::node::host::testing::{reapply_then_undo, FakeNode};

    #[test]
    fn kubelet_files_are_written_once_and_undo_removes_exactly_them() {
        let mut node = FakeNode::new();
        node.commands.answers = vec![("kubeadm version -o short".into(), "v1.31.2\n".into())];
        let bundle = node.bundle(&[
            ("bin/kubeadm", b"kubeadm"),
            ("bin/kubelet", b"kubelet"),
            ("bin/kubectl", b"kubectl"),
        ]);
        for foreign in ["/etc/systemd/system/their.service", "/etc/their.conf"] {
            node.root.write_file(foreign, b"theirs\n", 0o644).unwrap();
        }
        let before = node.snapshot();
        let env = node.env(Some(&bundle));

        let mut p = Progress::new("kubelet");
        Kubelet.apply(&env, &mut p).unwrap();
        let written = node.snapshot();
        let unit = Path::new("/etc/systemd/system/kubelet.service");
        let expected = [
            unit,
            Path::new(KUBELET_DROPIN),
            Path::new(CRICTL_CONFIG),
            Path::new(KUBELET_RESOLV_CONF),
        ];
        for f in expected {
            assert_eq!(written[f].mode, 0o644, "{}", f.display());
        }
        assert_eq!(node.root.read_to_string(unit).unwrap(), kubelet_unit());
        assert_eq!(
            node.root.read_to_string(KUBELET_DROPIN).unwrap(),
            kubelet_dropin()
        );
        assert_eq!(
            node.root.read_to_string(CRICTL_CONFIG).unwrap(),
            crictl_config()
        );
        // No /etc/resolv.conf here: pods get the node's own address, where none answers.
        assert!(node
            .root
            .read_to_string(KUBELET_RESOLV_CONF)
            .unwrap()
            .contains("nameserver 10.0.0.5\n"));
        let log = node.commands.take();
        assert!(
            log.contains(&format!("systemctl enable {KUBELET_UNIT}"))
                && !log.iter().any(|l| l.starts_with("systemctl restart")),
            "kubeadm starts kubelet, not bale: {log:?}"
        );
        assert!(Kubelet.check(&env).unwrap().iter().all(|f| f.ok));

        // The pods' slices the systemd cgroup driver left behind go with kubelet.
        node.commands
            .true_for
            .borrow_mut()
            .push(format!("systemctl is-active --quiet {KUBEPODS_SLICE}"));
        reapply_then_undo(&Kubelet, &env, &node, &before, &written);
        let log = node.commands.take();
        assert!(log.contains(&format!("systemctl disable --now {KUBELET_UNIT}")));
        assert!(log.contains(&format!("systemctl stop {KUBEPODS_SLICE}")));
    }
}

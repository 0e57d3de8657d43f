//! The Kubernetes phases of an install, for bundles that carry kubeadm, kubelet and kubectl:
//!
//! 1. `kube-init`, on the first master: `agent step cluster apply` runs `kubeadm init` once
//!    (never over an existing control plane).
//! 2. `kube-join`, on every other host: a fresh token (and, for a master, certificate key) is
//!    asked of the first master, written to a 0600 file on the joining host over SSH, and
//!    `agent step cluster apply` runs `kubeadm join`. Masters join one at a time (each adds an
//!    etcd member, and etcd takes one learner at a time), but the next one starts as soon as
//!    the joining master's member is a voter, not when its whole join is over: the rest of a
//!    join (etcd publishing itself, which etcd holds for its 7 s request timeout, the API
//!    server coming up) touches no other member. Workers join in parallel. A host that is
//!    already a member is left alone.
//! 3. `pod-network`, everywhere, on every run: the nodes and their pod subnets are read from the
//!    cluster once, written to each host, and `agent step podnet apply` sets the bridge network
//!    and the routes, so a join or a delete keeps every node's routes in step.
//!
//! 4. `node-marks`, on every host the Clusterfile gives labels or taints: the first master sets
//!    them on the host's Node (`agent kube mark`), changing only what differs.
//!
//! The first master's connection is kept from phase 1, so the later phases can ask it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::agent_step::run_noted;
use super::bundle_path;
use super::context::node_context;
use crate::engine::{lock, Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::hosts::Role;
use crate::node::etcd::Standing;
use crate::node::kubernetes::{KubeNode, JOIN_FILE};
use crate::node::podnet::NODES_FILE;
use crate::remote::{Cmd, Remote, Script};
use crate::ssh::Conn;

/// A connection to a master and the master's address.
type MasterConn = (Arc<dyn Remote>, String);

/// What the Kubernetes phases share within one run.
#[derive(Default)]
pub struct KubeRun {
    /// The first master's connection, once its control plane answers.
    first_master: Mutex<Option<MasterConn>>,
    /// Held while a master's etcd member is being added: etcd takes one learner at a time.
    master_join: JoinTurn,
    /// The cluster's nodes, read once per run for the pod network.
    nodes: Mutex<Option<Vec<KubeNode>>>,
}

/// How often a joining master's etcd member is looked at.
const STANDING_POLL: Duration = Duration::from_millis(500);

/// The masters' turn to join: one holds it until its etcd member is a voter (or its join ends).
#[derive(Default)]
struct JoinTurn {
    busy: Mutex<bool>,
    freed: Condvar,
}

impl JoinTurn {
    /// Waits for the turn.
    fn take(&self) -> HeldTurn<'_> {
        let mut busy = lock(&self.busy);
        while *busy {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *busy = true;
        HeldTurn {
            turn: self,
            released: AtomicBool::new(false),
        }
    }
}

/// The turn, handed on once: early by [`HeldTurn::release`], at the latest when dropped.
struct HeldTurn<'a> {
    turn: &'a JoinTurn,
    released: AtomicBool,
}

impl HeldTurn<'_> {
    fn release(&self) {
        if !self.released.swap(true, Ordering::SeqCst) {
            *lock(&self.turn.busy) = false;
            self.turn.freed.notify_one();
        }
    }
}

impl Drop for HeldTurn<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

fn kubernetes(node: &Node) -> bool {
    node.ctx.site.kubernetes
}

impl KubeRun {
    /// A run whose first master already answers on `remote` (for the later phases' tests).
    #[cfg(test)]
    pub fn answering(remote: Arc<dyn Remote>, data_dir: &str) -> KubeRun {
        let run = KubeRun::default();
        *lock(&run.first_master) = Some((remote, data_dir.to_string()));
        run
    }

    fn first_master(&self) -> Result<MasterConn, PhaseError> {
        lock(&self.first_master)
            .clone()
            .ok_or(PhaseError::NoControlPlane)
    }

    /// Runs `bundle.bale agent kube ARGS` on the first master and returns its stdout.
    fn ask_first_master(&self, args: &[&str], what: &str) -> Result<String, PhaseError> {
        let (remote, data_dir) = self.first_master()?;
        agent_kube(&*remote, &data_dir, args, "kube".into(), what)
    }
}

/// Runs `bundle.bale agent kube ARGS` on `remote` (a master) and returns its stdout; a
/// failure names `step` and `action` with what the agent printed on stderr.
fn agent_kube(
    remote: &dyn Remote,
    data_dir: &str,
    args: &[&str],
    step: String,
    action: &str,
) -> Result<String, PhaseError> {
    let cmd = Cmd::new(format!("agent kube {action}"), bundle_path(data_dir))
        .args(["agent", "kube"])
        .args(args);
    let o = remote.run(&cmd)?;
    if o.code != 0 {
        return Err(PhaseError::Agent {
            step,
            action: action.into(),
            code: o.code,
            output: String::from_utf8_lossy(&o.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// Phase 1: `kubeadm init` on the first master.
pub struct KubeInit(pub Arc<KubeRun>);

impl Phase for KubeInit {
    fn title(&self) -> &str {
        "kube-init"
    }
    fn journaled(&self) -> bool {
        // The step finds out itself whether the control plane exists; it must run every time
        // so that the later phases get the first master's connection.
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node) && node_context(node).first_master
    }
    fn dry_run(&self, _node: &Node) -> String {
        "kubeadm init, unless this host's control plane exists (agent step cluster apply)".into()
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        run_noted(node, "cluster", "apply")?;
        *lock(&self.0.first_master) = Some((node.remote()?, node.ctx.data_dir.clone()));
        Ok(())
    }
}

/// Phase 2: `kubeadm join` everywhere else.
pub struct KubeJoin(pub Arc<KubeRun>);

impl Phase for KubeJoin {
    fn title(&self) -> &str {
        "kube-join"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node) && !node_context(node).first_master
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "kubeadm join{} through apiserver.cluster.local:6443, unless this host is a member",
            if node.role() == Role::Master {
                " --control-plane"
            } else {
                ""
            }
        )
    }
    fn run(&self, node: &Node, attempt: &Attempt) -> PhaseResult {
        let master = node.role() == Role::Master;
        // A member already (the node answers by the same rule its join step uses): no
        // secrets needed.
        let data_dir = node.ctx.data_dir.clone();
        let answer = agent_kube(
            &*node.remote()?,
            &data_dir,
            &["member", "--data-dir", &data_dir],
            "kube".into(),
            "member",
        )?;
        if answer == crate::agent::MEMBER {
            return run_noted(node, "cluster", "apply");
        }
        // Masters one at a time, until the joining one's etcd member is a voter.
        let turn = master.then(|| self.0.master_join.take());
        let args: &[&str] = if master {
            &["join-material", "--control-plane"]
        } else {
            &["join-material"]
        };
        let material = self.0.ask_first_master(args, "join-material")?;
        // The routes to the members' pods come before the join: this host's control plane
        // answers them as soon as it is up.
        if !node.ctx.site.bundles_cni {
            let nodes = self.0.ask_first_master(&["nodes"], "nodes")?;
            write_node_list(node, nodes.as_bytes())?;
            run_noted(node, "podnet", "apply")?;
        }
        let path = format!("{}/{JOIN_FILE}", node.ctx.data_dir);
        attempt.creates(&path);
        let hand_over =
            Script::new("umask 077; cat > {p}.tmp && mv -f {p}.tmp {p}").value("p", &path);
        node.remote()?.run_ok(
            &Cmd::script("hand the join secrets to this host", &hand_over)
                .stdin(material.as_bytes()),
        )?;
        match (&turn, &node.host) {
            (Some(turn), Some(host)) => self.join_handing_on(node, turn, &host.addr.to_string()),
            _ => run_noted(node, "cluster", "apply"),
        }
    }
}

impl KubeJoin {
    /// A master's join, with the turn handed to the next master once this one's etcd member is
    /// a voter: named (started) or seen as a learner first (a learner is promoted only once it
    /// has started and caught up). A voter with no name was added without learner mode and has
    /// not started: with it, the members that have started may be no quorum, so the turn waits.
    /// When the first master cannot tell, the turn is held to the end of the join, as before.
    fn join_handing_on(&self, node: &Node, turn: &HeldTurn, address: &str) -> PhaseResult {
        let (joined, join_over) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut was_learner = false;
                // Until the join is over (the sender is dropped), every STANDING_POLL.
                while let Err(RecvTimeoutError::Timeout) = join_over.recv_timeout(STANDING_POLL) {
                    let asked = self
                        .0
                        .ask_first_master(&["etcd-member", "--address", address], "etcd-member");
                    let Some(st) = asked.ok().as_deref().and_then(Standing::parse) else {
                        return;
                    };
                    let voter = match st {
                        Standing::Learner => {
                            was_learner = true;
                            false
                        }
                        Standing::Voter => true,
                        Standing::UnstartedVoter => was_learner,
                        Standing::Absent => false,
                    };
                    if voter {
                        turn.release();
                        node.note(
                            "etcd: this master's member is a voter; the next master may join",
                        );
                        return;
                    }
                }
            });
            let r = run_noted(node, "cluster", "apply");
            drop(joined);
            r
        })
    }
}

/// After the joins: a host's labels and taints from the Clusterfile (and a label for each of
/// its other roles, as sealer gives) are set on its Node by the first master, on every run;
/// only what differs changes.
pub struct NodeMarks(pub Arc<KubeRun>);

/// The `agent kube mark` arguments for a host, or None when the Clusterfile gives it none.
pub fn mark_args(host: &crate::hosts::Host) -> Option<Vec<String>> {
    if host.labels.is_empty() && host.taints.is_empty() {
        return None;
    }
    let mut args = vec![
        "mark".to_string(),
        "--address".into(),
        host.addr.to_string(),
    ];
    for (k, v) in &host.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    for t in &host.taints {
        args.push("--taint".into());
        args.push(t.kubectl_arg());
    }
    Some(args)
}

impl Phase for NodeMarks {
    fn title(&self) -> &str {
        "node-marks"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node) && node.host.as_ref().and_then(mark_args).is_some()
    }
    fn dry_run(&self, node: &Node) -> String {
        let args = node.host.as_ref().and_then(mark_args).unwrap_or_default();
        format!(
            "set this node's labels and taints from the first master: agent kube {}",
            args.join(" ")
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let Some(args) = node.host.as_ref().and_then(mark_args) else {
            return Ok(());
        };
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.0.ask_first_master(&refs, "mark")?;
        for line in out.lines() {
            node.note(line);
        }
        Ok(())
    }
}

/// `delete`, on the first master that stays: the deleted hosts' Node objects go (their pods are
/// rescheduled elsewhere by their controllers); a deleted master's etcd member went with its
/// own `kubeadm reset`.
pub struct ForgetNodes {
    pub run: Arc<KubeRun>,
    /// The deleted hosts' addresses (the nodes' InternalIPs).
    pub addresses: Vec<String>,
}

impl Phase for ForgetNodes {
    fn title(&self) -> &str {
        "forget-nodes"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node) && node_context(node).first_master
    }
    fn dry_run(&self, _node: &Node) -> String {
        format!(
            "delete the Node objects and etcd members of {} (agent kube forget)",
            self.addresses.join(",")
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let addresses = self.addresses.join(",");
        let out = self
            .run
            .ask_first_master(&["forget", "--addresses", &addresses], "forget")?;
        // Every removed node and etcd member, then the summary: the operator sees what went.
        for line in out.lines() {
            node.note(line);
        }
        Ok(())
    }
}

/// `delete`, before the reset: the first master that stays drains each deleted host's node,
/// so its pods move while it still runs them. That master is reached with the deleted hosts'
/// login options, over one connection for all of them.
pub struct DrainNodes {
    pub members: Arc<super::members::Members>,
    /// The addresses being deleted.
    pub deleted: Vec<String>,
    /// Asked once: `Some(None)` when no master that stays could be reached.
    conn: Mutex<Option<Option<MasterConn>>>,
}

impl DrainNodes {
    pub fn new(members: Arc<super::members::Members>, deleted: Vec<String>) -> DrainNodes {
        DrainNodes {
            members,
            deleted,
            conn: Mutex::new(None),
        }
    }

    /// The first master that stays, connected once; `None` when none stays or it cannot be
    /// reached (then nothing is drained: the reset goes on, as for a dead host).
    fn first_master(&self, node: &Node) -> Option<MasterConn> {
        let mut slot = lock(&self.conn);
        if let Some(c) = slot.as_ref() {
            return c.clone();
        }
        let rest = self.members.remaining(&self.deleted);
        let master = rest.and_then(|r| r.masters.first().cloned());
        let conn = master.and_then(|addr| {
            let mut host = node.host.clone()?;
            host.addr = addr.parse().ok()?;
            host.role = Role::Master;
            match Conn::connect(&host, &node.ctx.ssh) {
                Ok(c) => Some((Arc::new(c) as Arc<dyn Remote>, addr)),
                Err(e) => {
                    node.note(&format!(
                        "cannot reach the first master that stays ({addr}) to drain: {}; \
                         going on without a drain",
                        crate::engine::report::chain(&e)
                    ));
                    None
                }
            }
        });
        *slot = Some(conn.clone());
        conn
    }
}

impl Phase for DrainNodes {
    fn title(&self) -> &str {
        "drain"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node)
    }
    fn dry_run(&self, _node: &Node) -> String {
        "cordon and drain this node from the first master that stays (agent kube drain)".into()
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let Some(addr) = node.host.as_ref().map(|h| h.addr.to_string()) else {
            return Ok(());
        };
        let Some((remote, master)) = self.first_master(node) else {
            return Ok(());
        };
        let out = agent_kube(
            &*remote,
            &node.ctx.data_dir,
            &["drain", "--addresses", &addr],
            format!("kube drain (on {master})"),
            "drain",
        )?;
        if let Some(last) = out.lines().last() {
            node.note(last);
        }
        Ok(())
    }
}

/// Phase 3: bale's pod network, on every run.
pub struct PodNetwork(pub Arc<KubeRun>);

impl PodNetwork {
    fn nodes(&self, node: &Node) -> Result<Vec<KubeNode>, PhaseError> {
        let mut cached = lock(&self.0.nodes);
        if let Some(n) = cached.as_ref() {
            return Ok(n.clone());
        }
        let want = node.ctx.site.hosts.len().max(1);
        let want = want.to_string();
        let out = self
            .0
            .ask_first_master(&["nodes", "--wait-for", &want, "--timeout", "90"], "nodes")?;
        let list: Vec<KubeNode> =
            serde_json::from_str(&out).map_err(|source| PhaseError::AgentStatus {
                output: out.clone(),
                source,
            })?;
        *cached = Some(list.clone());
        Ok(list)
    }
}

impl Phase for PodNetwork {
    fn title(&self) -> &str {
        "pod-network"
    }
    fn journaled(&self) -> bool {
        false
    }
    fn should_run(&self, node: &Node) -> bool {
        kubernetes(node) && !node.ctx.site.bundles_cni
    }
    fn dry_run(&self, _node: &Node) -> String {
        "a bridge on this node's pod subnet and routes to the other nodes' pods \
         (agent step podnet apply)"
            .into()
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let nodes = self.nodes(node)?;
        // A plain list of strings: encoding it cannot fail.
        let body = serde_json::to_vec_pretty(&nodes).unwrap_or_default();
        write_node_list(node, &body)?;
        run_noted(node, "podnet", "apply")
    }
}

/// Writes the cluster's node list (JSON) where `agent step podnet` reads it.
fn write_node_list(node: &Node, body: &[u8]) -> PhaseResult {
    let path = format!("{}/{NODES_FILE}", node.ctx.data_dir);
    let write = Script::new("cat > {p}.tmp && mv -f {p}.tmp {p}").value("p", &path);
    node.remote()?
        .run_ok(&Cmd::script("write the cluster's node list", &write).stdin(body))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::test_ctx;
    use crate::remote::fake::{Fed, Scripted};
    use crate::site::Site;

    fn busy(t: &JoinTurn) -> bool {
        *lock(&t.busy)
    }

    #[test]
    fn a_masters_turn_is_handed_on_once() {
        let turn = JoinTurn::default();
        let a = turn.take();
        assert!(busy(&turn));
        a.release();
        assert!(!busy(&turn));
        let b = turn.take();
        // The first master's join ends after the second took the turn: that frees nothing.
        drop(a);
        assert!(busy(&turn), "the end of a's join freed b's turn");
        // A third waits for b.
        std::thread::scope(|s| {
            let c = s.spawn(|| {
                let c = turn.take();
                assert!(busy(&turn));
                drop(c);
            });
            b.release();
            c.join().unwrap();
        });
        assert!(!busy(&turn));
    }

    #[test]
    fn a_master_joins_with_secrets_asked_of_the_first_master() {
        let first = Arc::new(
            Scripted::new("10.0.0.1").on("'join-material' '--control-plane'", "material\n"),
        );
        let here = Arc::new(
            Scripted::new("10.0.0.2")
                .on("'kube' 'member'", "not a member\n")
                .on("umask 077", "")
                .on("'cluster' 'apply'", "cluster: joined\n"),
        );
        let site = Site {
            kubernetes: true,
            bundles_cni: true,
            ..Default::default()
        };
        let node = Node::new(1, None, test_ctx("/d", site));
        let r: Arc<dyn Remote> = here.clone();
        node.set_remote(Some(r));
        let run = Arc::new(KubeRun::default());
        let f: Arc<dyn Remote> = first.clone();
        *lock(&run.first_master) = Some((f, "/first".into()));
        let attempt = Attempt::default();
        KubeJoin(run).run(&node, &attempt).unwrap();

        assert_eq!(
            first.calls()[0].line,
            "'/first/bundle.bale' 'agent' 'kube' 'join-material' '--control-plane'"
        );
        let calls = here.calls();
        assert_eq!(
            calls[0].line,
            "'/d/bundle.bale' 'agent' 'kube' 'member' '--data-dir' '/d'"
        );
        let secrets = format!("'/d/{JOIN_FILE}'");
        assert_eq!(
            calls[1].line,
            format!("umask 077; cat > {secrets}.tmp && mv -f {secrets}.tmp {secrets}")
        );
        assert_eq!(calls[1].stdin, Fed::Bytes(b"material".to_vec()));
        assert_eq!(attempt.created(), [format!("/d/{JOIN_FILE}")]);
        assert!(calls[2]
            .line
            .ends_with("'agent' 'step' 'cluster' 'apply' '--data-dir' '/d'"));
    }

    #[test]
    fn the_node_list_is_written_beside_its_final_name() {
        let here = Arc::new(Scripted::new("n").on("cat >", ""));
        let node = Node::new(0, None, test_ctx("/d", Site::default()));
        let r: Arc<dyn Remote> = here.clone();
        node.set_remote(Some(r));
        write_node_list(&node, b"[]").unwrap();
        let p = format!("'/d/{NODES_FILE}'");
        assert_eq!(
            here.calls()[0].line,
            format!("cat > {p}.tmp && mv -f {p}.tmp {p}")
        );
    }
}

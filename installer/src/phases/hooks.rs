//! Shell hooks (`kind: Plugin`) at one hook point, on the nodes they target (by role, sealer's
//! `scope`, address, or the first master alone), in sealer's order (see [`crate::plugins`]). A
//! failing hook stops the install on that node with its output.

use super::context::node_context;
use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::plugins::{Action, HostFacts, Plugin};
use crate::remote::shell::is_variable_name;
use crate::remote::{Cmd, Remote, Script};

pub struct Hooks {
    pub action: Action,
    /// Install hooks are journaled (done once per bundle); clean hooks run on every reset
    /// that finds something to clean.
    pub journaled: bool,
}

/// Shell lines that set up the environment every hook and app step runs in: the install's
/// env, `BALE_*` facts about the node and the site, a PATH with the bundle's binaries, and the
/// extracted tree as the working directory.
pub fn prelude(node: &Node) -> Result<Script, PhaseError> {
    let c = node_context(node);
    let mut vars: Vec<(String, String)> = vec![
        ("BALE_ROLE".into(), c.role.clone()),
        ("BALE_NODE_IP".into(), c.node_ip.clone()),
        (
            "BALE_FIRST_MASTER".into(),
            u8::from(c.first_master).to_string(),
        ),
        ("BALE_MASTERS".into(), c.masters.join(",")),
        ("BALE_NODES".into(), c.nodes.join(",")),
        ("BALE_DATA_DIR".into(), c.data_dir.clone()),
        ("BALE_REGISTRY".into(), c.registry_addr()),
    ];
    for (k, v) in &c.env {
        if !is_variable_name(k) {
            return Err(PhaseError::EnvName(k.clone()));
        }
        vars.push((k.clone(), v.clone()));
    }
    let s = vars
        .iter()
        .fold(Script::default(), |s, (k, v)| s.export(k, v))
        .then("export PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin\n")
        // kubectl and helm in the steps talk to the cluster as its admin, on the first master.
        .then("if [ -r {conf} ]; then export KUBECONFIG={conf}; fi\n")
        .value("conf", crate::kube::ADMIN_CONF)
        .then("if [ -d {root} ]; then cd {root}; else cd /; fi\n")
        .value("root", c.rootfs().to_string_lossy());
    Ok(s)
}

/// Runs `script` as root after the `prelude`, with stderr folded into stdout; a failure names
/// `what` (built only then), the exit code and the last 20 lines of output.
pub fn run_script(
    remote: &dyn Remote,
    prelude: &Script,
    script: &str,
    what: impl FnOnce() -> String,
) -> PhaseResult {
    let whole = prelude.clone().then("exec 2>&1\n").then_user_script(script);
    let o = remote.run(&Cmd::script("run a step", &whole))?;
    if o.code != 0 {
        return Err(PhaseError::Script {
            what: what(),
            code: o.code,
            output: tail(&o.stdout, 20),
        });
    }
    Ok(())
}

/// The last `n` lines of a command's output.
fn tail(out: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(out);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Hooks {
    fn mine<'a>(&self, node: &'a Node) -> Vec<&'a Plugin> {
        let facts = HostFacts {
            role: node.role(),
            addr: node.host.as_ref().map(|h| h.addr),
            first_master: node_context(node).first_master,
            roles: node
                .host
                .as_ref()
                .map(|h| h.roles.as_slice())
                .unwrap_or(&[]),
            labels: node
                .host
                .as_ref()
                .map(|h| h.labels.as_slice())
                .unwrap_or(&[]),
        };
        node.ctx
            .site
            .docs
            .hooks(self.action)
            .into_iter()
            .filter(|p| p.on.matches(&facts))
            .collect()
    }
}

impl Phase for Hooks {
    fn title(&self) -> &str {
        self.action.phase()
    }
    fn journaled(&self) -> bool {
        self.journaled
    }
    fn should_run(&self, node: &Node) -> bool {
        // A clean hook needs the install it cleans up after (its scripts live in the tree).
        !self.mine(node).is_empty() && (self.journaled || super::has_bundle(node))
    }
    fn dry_run(&self, node: &Node) -> String {
        let names: Vec<String> = self
            .mine(node)
            .iter()
            .map(|p| format!("{} ({})", p.name, p.origin))
            .collect();
        format!("run {} hook(s): {}", self.action.name(), names.join(", "))
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let remote = node.remote()?;
        let prelude = prelude(node)?;
        for p in self.mine(node) {
            run_script(&*remote, &prelude, &p.script, || {
                format!("{} hook {:?} ({})", self.action.name(), p.name, p.origin)
            })?;
            node.note(&format!("{} hook {:?} done", self.action.name(), p.name));
        }
        Ok(())
    }
}

//! Open the session to the host (or use this machine), learn what it is, read its journal.

use crate::engine::journal::Journal;
use crate::engine::{lock, Attempt, Facts, Node, Phase, PhaseResult};
use crate::remote::{Cmd, Remote, Script};
use crate::ssh::Conn;
use std::sync::Arc;

pub struct Connect;

const DETECT: &str = r#"export LC_ALL=C
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(cat /proc/sys/kernel/hostname 2>/dev/null || hostname)"
if [ -r /etc/os-release ]; then (. /etc/os-release; echo "os_id=${ID:-}"; echo "os_version=${VERSION_ID:-}"; echo "os_pretty=${PRETTY_NAME:-}"); fi
"#;

pub fn parse_facts(text: &str) -> Facts {
    let mut f = Facts::default();
    for (k, v) in text.lines().filter_map(|l| l.split_once('=')) {
        let v = v.trim().to_string();
        match k.trim() {
            "arch" => f.arch = v,
            "kernel" => f.kernel = v,
            "hostname" => f.hostname = v,
            "os_id" => f.os_id = v,
            "os_version" => f.os_version = v,
            "os_pretty" => f.os_pretty = v,
            _ => {}
        }
    }
    f
}

impl Phase for Connect {
    fn title(&self) -> &str {
        "connect"
    }
    fn dry_run(&self, node: &Node) -> String {
        format!("open an SSH session to {}", node.name())
    }
    fn read_only(&self) -> bool {
        true
    }
    fn journaled(&self) -> bool {
        false
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let remote: Arc<dyn Remote> = match &node.host {
            None => Arc::new(Conn::local()?),
            Some(h) => Arc::new(Conn::connect(h, &node.ctx.ssh)?),
        };
        let o = remote.run_as_user(&Cmd::script("detect the host", &Script::new(DETECT)))?;
        let facts = parse_facts(&o.stdout_str());
        let journal = Journal::load(&*remote, &node.ctx.data_dir, &node.ctx.bundle.digest)?;
        node.note(&format!(
            "{} {}, kernel {}, hostname {}{}",
            facts.arch,
            if facts.os_pretty.is_empty() {
                &facts.os_id
            } else {
                &facts.os_pretty
            },
            facts.kernel,
            facts.hostname,
            if journal.phases.is_empty() {
                String::new()
            } else {
                format!(
                    ", journal: {} done",
                    journal
                        .phases
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ));
        *lock(&node.facts) = Some(facts);
        *lock(&node.journal) = journal;
        node.set_remote(Some(remote));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detects_this_machine() {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(super::DETECT)
            .output()
            .unwrap();
        let f = super::parse_facts(&String::from_utf8_lossy(&o.stdout));
        assert_eq!(f.arch, std::env::consts::ARCH);
        assert!(!f.kernel.is_empty() && !f.hostname.is_empty());
    }
}

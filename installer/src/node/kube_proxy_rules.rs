//! Removing what kube-proxy left in the node's packet filter, for `reset`: kubeadm's own reset
//! leaves those rules behind on purpose, and the peers' users report them as leftovers.
//!
//! kube-proxy runs in a container with its own iptables (nft backend) or in nftables mode, so
//! its rules are in nftables either way: chains named `KUBE-*` in the iptables-nft tables, the
//! rules in other chains that jump to them, and the `kube-proxy` tables of nftables mode. They
//! are read with `nft -j list ruleset` and removed one by one, so nothing else in those tables
//! (a firewall's own rules) is touched. A host without `nft` gets its `iptables-save` output
//! filtered the same way when it has that instead.

use std::process::{Command, Stdio};

use serde_json::Value;

use super::host::HostCommands;
use super::step::{self, Progress};

/// A deletion to run with `nft`, as its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NftOp(pub Vec<String>);

fn is_kube_chain(name: &str) -> bool {
    name.starts_with("KUBE-")
}

/// The deletions that take kube-proxy's rules out of `ruleset` (`nft -j list ruleset`): first
/// the jumps into its chains, then its chains (flushed before deleted, since they jump to each
/// other), then its own tables.
pub fn plan(ruleset: &Value) -> Vec<NftOp> {
    let items = ruleset["nftables"].as_array().cloned().unwrap_or_default();
    let mut jumps = Vec::new();
    let mut chains = Vec::new();
    let mut tables = Vec::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    for item in &items {
        if let Some(t) = item.get("table") {
            if t["name"] == "kube-proxy" {
                tables.push(NftOp(vec![
                    "delete".into(),
                    "table".into(),
                    s(&t["family"]),
                    s(&t["name"]),
                ]));
            }
        } else if let Some(c) = item.get("chain") {
            if c["table"] != "kube-proxy" && is_kube_chain(c["name"].as_str().unwrap_or_default()) {
                chains.push((s(&c["family"]), s(&c["table"]), s(&c["name"])));
            }
        } else if let Some(r) = item.get("rule") {
            let chain = r["chain"].as_str().unwrap_or_default();
            if r["table"] == "kube-proxy" || is_kube_chain(chain) {
                continue;
            }
            let text = r["expr"].to_string();
            let jumps_in = ["\"jump\"", "\"goto\""].iter().any(|k| text.contains(k))
                && text.contains("\"target\":\"KUBE-");
            if jumps_in {
                if let Some(h) = r["handle"].as_u64() {
                    jumps.push(NftOp(vec![
                        "delete".into(),
                        "rule".into(),
                        s(&r["family"]),
                        s(&r["table"]),
                        chain.to_string(),
                        "handle".into(),
                        h.to_string(),
                    ]));
                }
            }
        }
    }
    let mut ops = jumps;
    for (f, t, c) in &chains {
        ops.push(NftOp(vec![
            "flush".into(),
            "chain".into(),
            f.clone(),
            t.clone(),
            c.clone(),
        ]));
    }
    for (f, t, c) in &chains {
        ops.push(NftOp(vec![
            "delete".into(),
            "chain".into(),
            f.clone(),
            t.clone(),
            c.clone(),
        ]));
    }
    ops.extend(tables);
    ops
}

/// Removes kube-proxy's rules from this host, saying what it did; best effort (a reset goes on).
pub fn remove(commands: &dyn HostCommands, p: &mut Progress) {
    if let Some(nft) = step::which("nft") {
        let nft = nft.to_string_lossy().into_owned();
        let Ok(out) = commands.run(&nft, &["-j", "list", "ruleset"]) else {
            p.note("nft -j list ruleset failed: kube-proxy's rules not checked");
            return;
        };
        let Ok(ruleset) = serde_json::from_str::<Value>(&out) else {
            p.note("nft printed no JSON ruleset: kube-proxy's rules not checked");
            return;
        };
        let ops = plan(&ruleset);
        let mut failed = 0;
        for op in &ops {
            let args: Vec<&str> = op.0.iter().map(String::as_str).collect();
            if commands.run(&nft, &args).is_err() {
                failed += 1;
            }
        }
        if !ops.is_empty() {
            p.changed(format!(
                "removed kube-proxy's packet filter rules ({} nft operations{})",
                ops.len(),
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ));
        }
        return;
    }
    for (save, restore) in [
        ("iptables-save", "iptables-restore"),
        ("ip6tables-save", "ip6tables-restore"),
    ] {
        let (Some(save), Some(restore)) = (step::which(save), step::which(restore)) else {
            continue;
        };
        let Ok(out) = commands.run(&save.to_string_lossy(), &[]) else {
            continue;
        };
        if !out.contains("KUBE-") {
            continue;
        }
        let kept: String = out
            .lines()
            .filter(|l| !l.contains("KUBE-"))
            .map(|l| format!("{l}\n"))
            .collect();
        let restored = Command::new(&restore)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .and_then(|mut c| {
                if let Some(mut i) = c.stdin.take() {
                    std::io::Write::write_all(&mut i, kept.as_bytes())?;
                }
                c.wait()
            });
        if restored.is_ok_and(|s| s.success()) {
            p.changed(format!(
                "removed kube-proxy's rules ({})",
                restore.display()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_removes_jumps_then_chains_then_tables_and_keeps_the_rest() {
        let ruleset: Value = serde_json::from_str(
            r#"{"nftables":[
              {"metainfo":{"json_schema_version":1}},
              {"table":{"family":"ip","name":"nat","handle":1}},
              {"chain":{"family":"ip","table":"nat","name":"PREROUTING","handle":1}},
              {"chain":{"family":"ip","table":"nat","name":"KUBE-SERVICES","handle":2}},
              {"chain":{"family":"ip","table":"nat","name":"MY-OWN","handle":3}},
              {"rule":{"family":"ip","table":"nat","chain":"PREROUTING","handle":7,
                       "expr":[{"counter":null},{"jump":{"target":"KUBE-SERVICES"}}]}},
              {"rule":{"family":"ip","table":"nat","chain":"PREROUTING","handle":8,
                       "expr":[{"jump":{"target":"MY-OWN"}}]}},
              {"rule":{"family":"ip","table":"nat","chain":"KUBE-SERVICES","handle":9,
                       "expr":[{"jump":{"target":"KUBE-SVC-X"}}]}},
              {"table":{"family":"ip","name":"kube-proxy","handle":4}},
              {"chain":{"family":"ip","table":"kube-proxy","name":"services","handle":1}}
            ]}"#,
        )
        .unwrap();
        let ops: Vec<String> = plan(&ruleset).iter().map(|o| o.0.join(" ")).collect();
        assert_eq!(
            ops,
            vec![
                "delete rule ip nat PREROUTING handle 7",
                "flush chain ip nat KUBE-SERVICES",
                "delete chain ip nat KUBE-SERVICES",
                "delete table ip kube-proxy",
            ]
        );
    }
}

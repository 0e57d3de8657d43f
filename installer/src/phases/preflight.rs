//! Check every host before changing anything; see [`crate::preflight`].

use crate::engine::{lock, Attempt, Ctx, Event, Node, Phase, PhaseError, PhaseResult};
use crate::preflight::{self, HostView, Probe, Status, Want};
use crate::remote::Cmd;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Preflight;

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Phase for Preflight {
    fn title(&self) -> &str {
        "preflight"
    }
    fn dry_run(&self, _node: &Node) -> String {
        "check the host".into()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn journaled(&self) -> bool {
        false
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let remote = node.remote()?;
        let peers: Vec<String> = node
            .ctx
            .peers
            .iter()
            .filter(|p| Some(p.0) != node.host.as_ref().map(|h| h.addr))
            .map(|(a, port)| format!("{a}:{port}"))
            .collect();
        // The clock first, alone, so the round trip is short.
        let t0 = now();
        let o = remote.run_as_user(&Cmd::new("read the clock", "date").arg("+%s.%N"))?;
        let t1 = now();
        let node_clock: f64 = o.stdout_str().trim().parse().unwrap_or(f64::NAN);
        let offset = node_clock - (t0 + t1) / 2.0;
        let probe = preflight::script(&node.ctx.data_dir, &peers);
        let text = remote.run_ok(&Cmd::script("preflight probe", &probe))?;
        *lock(&node.probe) = Some(Probe::parse(&text, offset));
        Ok(())
    }
    fn after_all(&self, nodes: &[&Node], ctx: &Ctx) -> PhaseResult {
        let facts: Vec<_> = nodes.iter().map(|n| n.facts()).collect();
        let probes: Vec<Probe> = nodes
            .iter()
            .map(|n| lock(&n.probe).clone().unwrap_or_default())
            .collect();
        let views: Vec<HostView> = nodes
            .iter()
            .zip(facts.iter().zip(&probes))
            .map(|(n, (f, p))| HostView {
                name: n.name(),
                role: n.role(),
                facts: f,
                probe: p,
            })
            .collect();
        let want = Want {
            arches: &ctx.bundle.arches,
            bundle_size: ctx.bundle.size,
            tree_size: ctx.site.tree_bytes,
            data_dir: &ctx.data_dir,
            ignore: &ctx.ignore_preflight,
        };
        let results = preflight::evaluate(&views, &want);
        let mut failures = Vec::new();
        for (v, checks) in views.iter().zip(&results) {
            ctx.reporter.emit(&Event::Preflight {
                node: &v.name,
                hostname: &v.facts.hostname,
                checks,
            });
            for c in checks.iter().filter(|c| c.status == Status::Fail) {
                failures.push((v.name.clone(), c.name, c.detail.clone()));
            }
        }
        if failures.is_empty() {
            return Ok(());
        }
        Err(PhaseError::Preflight { failures })
    }
}

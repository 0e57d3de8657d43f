//! `bale agent step podnet`: bale's own pod network, for a Kubernetes bundle that carries no CNI
//! of its own. Each node bridges its pods on `cni0` with addresses from the pod subnet the
//! controller-manager gave it (`node.spec.podCIDR`), and routes every other node's pod subnet
//! through that node's address. The nodes must share one L2 segment (or a router that knows
//! the pod subnets); a site where they do not bundles a CNI instead.
//!
//! The installer writes the cluster's nodes to `<data-dir>/podnet.json` before each apply, so
//! a join or a delete re-applies it everywhere and the routes follow. A oneshot unit applies it
//! again at boot (routes do not survive a restart). Routes bale added are tagged as bale's and
//! recorded; apply removes the recorded ones that are no longer wanted, never any other route.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::containerd_config as cc;
use super::host::HostCommands;
use super::kubernetes::KubeNode;
use super::step::{self, Finding, Progress, Step, StepEnv, StepError, StepResult};
use super::systemd;

pub const CONFLIST: &str = "/etc/cni/net.d/10-bale.conflist";
pub const BRIDGE: &str = "cni0";
pub const UNIT: &str = "bale-podnet.service";
/// The nodes as the installer last saw them, under the data dir.
pub const NODES_FILE: &str = "podnet.json";

/// One pod subnet and the node that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRoute {
    pub subnet: Ipv4Addr,
    pub len: u8,
    pub via: Ipv4Addr,
}

/// What apply made, for the next apply and for undo.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    routes: Vec<PodRoute>,
    files: Vec<String>,
    /// The cluster's pod subnet, refused here where no node's route covers it.
    #[serde(default)]
    unreachable: Option<(Ipv4Addr, u8)>,
}

/// Why the pod network step failed.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error(
        "no node with InternalIP {node_ip} in the cluster: kubelet registers the node during the \
         join; look at `journalctl -u kubelet` on it"
    )]
    NotRegistered { node_ip: String },
    #[error(
        "node {node} has no pod subnet yet (spec.podCIDR): the controller-manager allocates one \
         when the cluster's podSubnet is set; run the install again in a moment"
    )]
    NoPodSubnet { node: String },
    #[error("node {node}: pod subnet {cidr:?} is not an IPv4 CIDR (bale's pod network is IPv4)")]
    NotIpv4Cidr { node: String, cidr: String },
    #[error("pod route")]
    Route(#[source] bale_lvscare::VipError),
    #[error("{}: not a node list", path.display())]
    BadNodeList {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (a, l) = s.split_once('/')?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
    Some((a.parse().ok()?, len))
}

/// This node's subnet and the routes to every other node's, from the cluster's node list.
pub fn plan(nodes: &[KubeNode], node_ip: &str) -> StepResult<(String, Vec<PodRoute>)> {
    let me = nodes
        .iter()
        .find(|n| n.internal_ip == node_ip)
        .ok_or_else(|| PodNetError::NotRegistered {
            node_ip: node_ip.to_string(),
        })?;
    let own = me
        .pod_cidr
        .clone()
        .ok_or_else(|| PodNetError::NoPodSubnet {
            node: me.name.clone(),
        })?;
    Ok((own, routes_to_others(nodes, node_ip)?))
}

/// The routes to every other node's pod subnet.
pub fn routes_to_others(nodes: &[KubeNode], node_ip: &str) -> StepResult<Vec<PodRoute>> {
    let mut routes = Vec::new();
    for n in nodes.iter().filter(|n| n.internal_ip != node_ip) {
        let (Some(cidr), Ok(via)) = (n.pod_cidr.as_deref(), n.internal_ip.parse::<Ipv4Addr>())
        else {
            continue;
        };
        let (subnet, len) = parse_cidr(cidr).ok_or_else(|| PodNetError::NotIpv4Cidr {
            node: n.name.clone(),
            cidr: cidr.to_string(),
        })?;
        routes.push(PodRoute { subnet, len, via });
    }
    routes.sort();
    Ok(routes)
}

/// The CNI network: a bridge with this node's subnet. No masquerade: pods keep their
/// addresses across nodes, and nothing here leaves the site.
pub fn render_conflist(subnet: &str) -> String {
    let v = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "bale",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": subnet }]],
                "routes": [{ "dst": "0.0.0.0/0" }]
            }
        }]
    });
    format!("{v:#}\n")
}

fn unit(bundle: &Path, data_dir: &str) -> String {
    format!(
        "# Written by bale (bale agent step podnet): the pod routes again after a restart.\n\
         [Unit]\n\
         Description=bale pod network: routes to the other nodes' pods\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         RemainAfterExit=yes\n\
         ExecStart={} agent step podnet apply --data-dir {data_dir}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bundle.display()
    )
}

/// True once kube-proxy has written its Service rules on this node (iptables-nft chains
/// `KUBE-SVC-*`, or the `kube-proxy` table of its nftables mode).
fn service_rules_present(commands: &dyn HostCommands) -> Option<bool> {
    let nft = step::which("nft")?;
    let out = commands
        .run(&nft.to_string_lossy(), &["list", "ruleset"])
        .ok()?;
    Some(out.contains("KUBE-SVC-") || out.contains("table ip kube-proxy"))
}

/// Pods start as soon as the node has a CNI config. One that dials a Service (CoreDNS dials
/// the API server's) before kube-proxy has written the Service rules sends that packet to the
/// default gateway, off the site. So the config comes once the rules are there.
fn wait_for_service_rules(commands: &dyn HostCommands, p: &Progress) {
    if service_rules_present(commands).is_none() {
        p.note("no nft here to see kube-proxy's rules: not waiting for them");
        return;
    }
    let limit = std::time::Duration::from_secs(90);
    if super::kubernetes::wait_for("kube-proxy's Service rules", limit, || {
        service_rules_present(commands) == Some(true)
    })
    .is_err()
    {
        p.note(
            "kube-proxy's Service rules are not here after 90 s: writing the pod network anyway",
        );
    }
}

fn route_err(e: bale_lvscare::VipError) -> StepError {
    PodNetError::Route(e).into()
}

pub struct PodNet;

impl PodNet {
    fn nodes_file(env: &StepEnv) -> PathBuf {
        Path::new(&env.ctx.data_dir).join(NODES_FILE)
    }

    fn read_nodes(env: &StepEnv) -> StepResult<Option<Vec<KubeNode>>> {
        let path = Self::nodes_file(env);
        match env.root.read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|source| {
                PodNetError::BadNodeList {
                    path: env.root.path(&path),
                    source,
                }
                .into()
            }),
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Step for PodNet {
    fn name(&self) -> &'static str {
        "podnet"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        let Some(nodes) = Self::read_nodes(env)? else {
            return Ok(vec![Finding::ok("bale's pod network is not in use here")]);
        };
        let (own, routes) = plan(&nodes, &env.ctx.node_ip)?;
        let mut out = vec![Finding::file_holds(
            env.root,
            Path::new(CONFLIST),
            &render_conflist(&own),
        )];
        let table = env.root.read_or_default("/proc/net/route");
        for r in routes {
            // /proc/net/route: destination and gateway as little-endian hex.
            let dst = format!("{:08X}", u32::from(r.subnet).swap_bytes());
            let gw = format!("{:08X}", u32::from(r.via).swap_bytes());
            let present = table.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 2 && f[1] == dst && f[2] == gw
            });
            out.push(Finding::of(
                present,
                format!("route {}/{} via {}", r.subnet, r.len, r.via),
            ));
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let Some(nodes) = Self::read_nodes(env)? else {
            p.note("no node list from the installer: nothing to do");
            return Ok(());
        };
        // Before its join, a host is not in the list yet: it gets the routes to the others
        // (its control plane, once up, answers their pods through them) and no CNI config.
        let joining = !nodes.iter().any(|n| n.internal_ip == env.ctx.node_ip);
        let (own, routes) = if joining {
            (None, routes_to_others(&nodes, &env.ctx.node_ip)?)
        } else {
            let (own, routes) = plan(&nodes, &env.ctx.node_ip)?;
            (Some(own), routes)
        };
        let manifest = env.manifest_path("podnet");
        let root = env.root;
        let systemd = env.systemd();
        let mut record: Record = step::load_manifest(root, &manifest)?.unwrap_or_default();
        let unit_path = systemd::unit_path(UNIT);
        for f in [
            CONFLIST.to_string(),
            unit_path.to_string_lossy().into_owned(),
        ] {
            if !record.files.contains(&f) {
                record.files.push(f);
            }
        }
        step::save_manifest(root, &manifest, &record)?;
        for old in record.routes.clone() {
            if !routes.contains(&old)
                && bale_lvscare::remove_prefix_route(old.subnet, old.len).map_err(route_err)?
            {
                p.changed(format!(
                    "removed route {}/{} via {}",
                    old.subnet, old.len, old.via
                ));
            }
        }
        // A pod address that no node holds (a node just deleted, say) is refused here rather
        // than sent to the default gateway, off the site.
        let cluster = super::kubernetes::pod_subnet(env.ctx);
        let v4 = cluster.split(',').find_map(parse_cidr);
        if let Some((a, l)) = record.unreachable.filter(|old| Some(*old) != v4) {
            bale_lvscare::remove_unreachable_route(a, l).map_err(route_err)?;
        }
        record.unreachable = v4;
        record.routes = routes.clone();
        step::save_manifest(root, &manifest, &record)?;
        if let Some((a, l)) = v4 {
            bale_lvscare::ensure_unreachable_route(a, l).map_err(route_err)?;
        }
        for r in &routes {
            bale_lvscare::ensure_prefix_route(r.subnet, r.len, r.via).map_err(route_err)?;
        }
        if !routes.is_empty() {
            p.note(format!(
                "{} route(s) to other nodes' pods in place",
                routes.len()
            ));
        }
        // The CNI config last: this node's pods start once it exists, and their peers must
        // be reachable by then.
        if let Some(own) = &own {
            let conflist = render_conflist(own);
            if root.read_to_string(CONFLIST).ok().as_deref() != Some(conflist.as_str()) {
                wait_for_service_rules(env.commands, p);
            }
            if root.write_file(CONFLIST, conflist.as_bytes(), 0o644)? {
                p.changed(format!("wrote {CONFLIST} (pods on {BRIDGE}, subnet {own})"));
            }
        }

        if systemd.is_running() {
            let text = unit(&env.ctx.bundle_path(), &env.ctx.data_dir);
            if systemd.write_unit(UNIT, &text)? {
                systemd.daemon_reload()?;
                systemd.enable(UNIT)?;
                p.changed(format!("{UNIT} enabled (routes again at boot)"));
            }
        }
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let root = env.root;
        let systemd = env.systemd();
        let manifest = env.manifest_path("podnet");
        let record: Record = step::load_manifest(root, &manifest)?.unwrap_or_default();
        for r in &record.routes {
            if bale_lvscare::remove_prefix_route(r.subnet, r.len).unwrap_or(false) {
                p.changed(format!(
                    "removed route {}/{} via {}",
                    r.subnet, r.len, r.via
                ));
            }
        }
        if let Some((a, l)) = record.unreachable {
            if bale_lvscare::remove_unreachable_route(a, l).unwrap_or(false) {
                p.changed(format!("removed route unreachable {a}/{l}"));
            }
        }
        if systemd.is_enabled(UNIT) {
            let _ = systemd.stop_disable(UNIT);
        }
        for f in &record.files {
            if root.remove_file(f)? {
                p.changed(format!("removed {f}"));
            }
        }
        if bale_lvscare::remove_link(BRIDGE).unwrap_or(false) {
            p.changed(format!("removed the bridge {BRIDGE}"));
        }
        root.remove_empty_dirs(Path::new(cc::CNI_CONF_DIR), Path::new("/etc"));
        root.remove_file(Self::nodes_file(env))?;
        root.remove_file(&manifest)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str, cidr: Option<&str>) -> KubeNode {
        KubeNode {
            name: name.into(),
            internal_ip: ip.into(),
            pod_cidr: cidr.map(str::to_string),
            ready: true,
        }
    }

    #[test]
    fn plan_routes_every_other_nodes_subnet_through_it() {
        let nodes = vec![
            node("n1", "10.77.0.11", Some("100.64.0.0/24")),
            node("n2", "10.77.0.12", Some("100.64.1.0/24")),
            node("n3", "10.77.0.13", None),
        ];
        let (own, routes) = plan(&nodes, "10.77.0.12").unwrap();
        assert_eq!(own, "100.64.1.0/24");
        assert_eq!(
            routes,
            vec![PodRoute {
                subnet: "100.64.0.0".parse().unwrap(),
                len: 24,
                via: "10.77.0.11".parse().unwrap()
            }]
        );
        let err = plan(&nodes, "10.77.0.13").unwrap_err().to_string();
        assert!(err.contains("no pod subnet yet"), "{err}");
        let err = plan(&nodes, "10.77.0.99").unwrap_err().to_string();
        assert!(err.contains("no node with InternalIP"), "{err}");
    }

    #[test]
    fn conflist_is_a_bridge_on_the_nodes_subnet() {
        let v: serde_json::Value = serde_json::from_str(&render_conflist("100.64.2.0/24")).unwrap();
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["bridge"], BRIDGE);
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "100.64.2.0/24"
        );
        assert_eq!(v["plugins"][0]["ipMasq"], false);
    }
}

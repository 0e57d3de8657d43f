//! nftables data plane, for kernels built without IP_VS.
//!
//! A guardian owns exactly one table, `table ip bale_lvscare` (or
//! `bale_lvscare_<instance>` for a second guardian on the node, such as the
//! registry's), and every change rewrites that whole table in one `nft -f -`
//! transaction:
//!
//! ```text
//! add table ip bale_lvscare      # so the delete below never fails
//! delete table ip bale_lvscare
//! table ip bale_lvscare { ... }  # the complete new state
//! ```
//!
//! nftables commits a batch atomically, so a packet sees either the old
//! table or the new one, never a map whose modulus disagrees with its
//! element count (which would send some connections nowhere). Conntrack
//! keeps NAT bindings of established connections across the swap.
//!
//! Per virtual server the table holds:
//! - `map w_<vip>_<port>`: every destination with its weight, drained ones
//!   (weight 0) included. It is never matched; it records membership so a
//!   restarted guardian can read back what it had.
//! - in chains `prerouting` (traffic forwarded through the node, e.g. from
//!   pods) and `output` (the node's own processes, like kubelet): a DNAT rule
//!   `numgen inc mod N` (or `jhash ip saddr` for `sh`) over an inline map of
//!   the destinations with weight > 0.
//! - in chain `postrouting`: masquerade for connections DNATed from the VIP,
//!   so masters answer the node's real address rather than the VIP, which
//!   they cannot route back.
//!
//! Why the `nft` binary and not netlink: nf_tables' netlink dialect (batched
//! expression lists, NAT register layouts, concatenated set keys) is large,
//! and the Rust crates for it bind libnftnl (C, awkward for a static musl
//! binary). `nft` is present wherever nftables is, takes the same batch a
//! human would read, and the guardian keeps CAP_NET_ADMIN in its ambient set
//! so the child can use it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::backend::{Backend, BackendError, Scheduler, ServiceState};

/// Why `nft` did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "no `nft` binary found in $PATH, /usr/sbin or /sbin; install nftables or use \
         --backend ipvs on a kernel with IP_VS"
    )]
    NotFound,
    #[error("running {0}")]
    Spawn(PathBuf, #[source] std::io::Error),
    #[error("writing the batch for table ip {0} to nft")]
    WriteBatch(String, #[source] std::io::Error),
    #[error("waiting for nft")]
    Wait(#[source] std::io::Error),
    #[error("the batch for table ip {table} was rejected: {stderr}")]
    Rejected { table: String, stderr: String },
    #[error("listing table ip {table}: {stderr}")]
    List { table: String, stderr: String },
    #[error("unreadable `nft -j` output")]
    Json(#[source] serde_json::Error),
    #[error("`nft -j` output has no nftables array")]
    NoArray,
}

/// The table of the guardian without `--instance`.
pub const TABLE: &str = "bale_lvscare";
const COMMENT_PREFIX: &str = "bale-lvscare";
/// Keeps a weighted map small: weights are reduced by their gcd and then
/// scaled so the slots stay under this.
const MAX_SLOTS: u32 = 256;

fn map_name(vs: SocketAddr) -> String {
    format!("w_{}_{}", vs.ip().to_string().replace('.', "_"), vs.port())
}

fn v4(addr: SocketAddr) -> Result<Ipv4Addr, BackendError> {
    match addr.ip() {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(_) => Err(BackendError::NotIpv4(addr)),
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The DNAT slots of a service: one per active destination, or for `wrr`
/// each destination repeated in proportion to its weight.
pub fn slots(svc: &ServiceState) -> Vec<SocketAddr> {
    let active: Vec<(SocketAddr, u32)> = svc
        .dests
        .iter()
        .filter(|(_, w)| **w > 0)
        .map(|(a, w)| (*a, *w))
        .collect();
    if svc.scheduler != Scheduler::Wrr {
        return active.into_iter().map(|(a, _)| a).collect();
    }
    let g = active.iter().fold(0, |g, (_, w)| gcd(g, *w)).max(1);
    let total: u64 = active.iter().map(|(_, w)| u64::from(*w / g)).sum();
    let scale = if total > u64::from(MAX_SLOTS) {
        f64::from(MAX_SLOTS) / total as f64
    } else {
        1.0
    };
    let mut out = Vec::new();
    for (a, w) in active {
        let n = ((f64::from(w / g) * scale).floor() as usize).max(1);
        out.extend(std::iter::repeat_n(a, n));
    }
    out
}

fn service_comment(svc: &ServiceState) -> String {
    format!("{COMMENT_PREFIX} vs={} sched={}", svc.vs, svc.scheduler)
}

/// Renders the complete batch that replaces bale's table. Pure, so tests can
/// pin the exact text; also used as the transaction fed to `nft -f -`.
pub fn render_batch(
    table: &str,
    services: &BTreeMap<SocketAddr, ServiceState>,
) -> Result<String, BackendError> {
    let mut maps = String::new();
    let mut dnat = String::new();
    let mut masq = String::new();
    for svc in services.values() {
        let vip = v4(svc.vs)?;
        let port = svc.vs.port();
        let comment = service_comment(svc);
        let _ = writeln!(maps, "\tmap {} {{", map_name(svc.vs));
        let _ = writeln!(maps, "\t\ttype ipv4_addr . inet_service : mark");
        let elems: Vec<String> = svc
            .dests
            .iter()
            .map(|(a, w)| Ok(format!("{} . {} : {w}", v4(*a)?, a.port())))
            .collect::<Result<_, BackendError>>()?;
        if !elems.is_empty() {
            let _ = writeln!(maps, "\t\telements = {{ {} }}", elems.join(", "));
        }
        let _ = writeln!(maps, "\t}}");

        let slots = slots(svc);
        if !slots.is_empty() {
            let n = slots.len();
            let key = match svc.scheduler {
                Scheduler::Sh => format!("jhash ip saddr mod {n} seed 0x0"),
                _ => format!("numgen inc mod {n}"),
            };
            let entries: Vec<String> = slots
                .iter()
                .enumerate()
                .map(|(i, a)| Ok(format!("{i} : {} . {}", v4(*a)?, a.port())))
                .collect::<Result<_, BackendError>>()?;
            let _ = writeln!(
                dnat,
                "\t\tip daddr {vip} tcp dport {port} dnat ip addr . port to {key} map {{ {} }} comment \"{comment}\"",
                entries.join(", ")
            );
        }
        let _ = writeln!(
            masq,
            "\t\tct status dnat ct original ip daddr {vip} ct original protocol tcp ct original proto-dst {port} masquerade comment \"{comment}\""
        );
    }
    let mut out = String::new();
    let _ = writeln!(out, "add table ip {table}");
    let _ = writeln!(out, "delete table ip {table}");
    let _ = writeln!(out, "table ip {table} {{");
    out.push_str(&maps);
    // Numeric priorities (-100 = dstnat, 100 = srcnat) parse on nft older
    // than the named ones (0.9.6).
    for (chain, hook, prio, body) in [
        ("prerouting", "prerouting", -100, &dnat),
        ("output", "output", -100, &dnat),
        ("postrouting", "postrouting", 100, &masq),
    ] {
        let _ = writeln!(out, "\tchain {chain} {{");
        let _ = writeln!(
            out,
            "\t\ttype nat hook {hook} priority {prio}; policy accept;"
        );
        out.push_str(body);
        let _ = writeln!(out, "\t}}");
    }
    let _ = writeln!(out, "}}");
    Ok(out)
}

/// Deletes `table` and nothing else; succeeds when it does not exist.
pub fn render_clean(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// The table that gives IPVS in link mode the source NAT it needs: with the
/// VIP on a local interface, a process on this node dials the VIP *from* the
/// VIP, IPVS rewrites only the destination, and the master would answer an
/// address it cannot route back. Matching on the conntrack original tuple
/// catches exactly the connections made to the virtual server (IPVS keeps
/// conntrack informed when net.ipv4.vs.conntrack=1). What lvscare and
/// kube-proxy do with ipset and iptables, as one small nftables table (this
/// name for the guardian without `--instance`).
pub const IPVS_MASQ_TABLE: &str = "bale_lvscare_ipvs";

/// The batch that (re)writes the masquerade `table` for `vs`, atomically.
pub fn render_ipvs_masquerade(table: &str, vs: SocketAddr) -> Result<String, BackendError> {
    let vip = v4(vs)?;
    let port = vs.port();
    Ok(format!(
        "add table ip {table}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority 100; policy accept;\n\
         \t\tct original ip daddr {vip} ct original protocol tcp ct original proto-dst {port} \
         oifname != \"lo\" masquerade comment \"{COMMENT_PREFIX} ipvs vs={vs}\"\n\
         \t}}\n\
         }}\n"
    ))
}

/// How many rules `render_batch` produces for these services: used to notice
/// tables that were edited by hand or left half-written.
fn expected_rule_count(services: &BTreeMap<SocketAddr, ServiceState>) -> usize {
    services
        .values()
        .map(|s| if slots(s).is_empty() { 1 } else { 3 })
        .sum()
}

/// What `nft -j list table` told us.
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub services: BTreeMap<SocketAddr, ServiceState>,
    pub rule_count: usize,
    /// False when the table holds anything `render_batch` would not write
    /// exactly so; the next commit then rewrites it.
    pub canonical: bool,
}

fn parse_sock(ip: &Value, port: &Value) -> Option<SocketAddr> {
    let ip: Ipv4Addr = ip.as_str()?.parse().ok()?;
    let port = match port {
        Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(SocketAddr::new(IpAddr::V4(ip), port))
}

/// Parses the JSON listing of bale's table back into services.
pub fn parse_listing(json: &str) -> Result<Parsed, NftError> {
    let root: Value = serde_json::from_str(json).map_err(NftError::Json)?;
    let items = root
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or(NftError::NoArray)?;
    let mut maps: BTreeMap<String, BTreeMap<SocketAddr, u32>> = BTreeMap::new();
    let mut comments: BTreeMap<SocketAddr, Scheduler> = BTreeMap::new();
    let mut parsed = Parsed {
        canonical: true,
        ..Default::default()
    };
    for item in items {
        if let Some(m) = item.get("map") {
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            let mut dests = BTreeMap::new();
            for e in m
                .get("elem")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let pair = e.as_array();
                let key = pair.and_then(|p| p.first());
                // Elements with comments or timeouts nest as {"elem": {"val": ..}}.
                let key = key
                    .and_then(|k| k.get("elem").and_then(|x| x.get("val")).or(Some(k)))
                    .and_then(|k| k.get("concat"))
                    .and_then(Value::as_array);
                let weight = pair.and_then(|p| p.get(1)).and_then(Value::as_u64);
                match (key, weight) {
                    (Some(k), Some(w)) if k.len() == 2 => {
                        match (parse_sock(&k[0], &k[1]), u32::try_from(w)) {
                            (Some(a), Ok(w)) => {
                                dests.insert(a, w);
                            }
                            _ => parsed.canonical = false,
                        }
                    }
                    _ => parsed.canonical = false,
                }
            }
            maps.insert(name.to_string(), dests);
        } else if let Some(r) = item.get("rule") {
            parsed.rule_count += 1;
            let comment = r.get("comment").and_then(Value::as_str).unwrap_or_default();
            match parse_comment(comment) {
                Some((vs, sched)) => {
                    comments.insert(vs, sched);
                }
                None => parsed.canonical = false,
            }
        }
    }
    for (vs, scheduler) in comments {
        let dests = maps.remove(&map_name(vs)).unwrap_or_else(|| {
            parsed.canonical = false;
            BTreeMap::new()
        });
        parsed.services.insert(
            vs,
            ServiceState {
                vs,
                scheduler,
                dests,
            },
        );
    }
    if !maps.is_empty() || parsed.rule_count != expected_rule_count(&parsed.services) {
        parsed.canonical = false;
    }
    Ok(parsed)
}

fn parse_comment(c: &str) -> Option<(SocketAddr, Scheduler)> {
    let mut it = c.split_whitespace();
    if it.next()? != COMMENT_PREFIX {
        return None;
    }
    let vs = it.next()?.strip_prefix("vs=")?.parse().ok()?;
    let sched = it.next()?.strip_prefix("sched=")?.parse().ok()?;
    Some((vs, sched))
}

/// Finds the `nft` binary: $PATH first, then the usual sbin directories that
/// a minimal service environment may leave out of $PATH.
pub fn find_nft() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

pub struct NftBackend {
    nft: PathBuf,
    /// The one table this backend owns.
    table: String,
    model: BTreeMap<SocketAddr, ServiceState>,
    dirty: bool,
    /// The first commit after start always rewrites the table: whatever an
    /// earlier run (or a human) left is replaced in one transaction, so it
    /// can never be duplicated.
    force: bool,
}

impl NftBackend {
    pub fn new(nft: PathBuf, table: &str) -> Self {
        NftBackend {
            nft,
            table: table.to_string(),
            model: BTreeMap::new(),
            dirty: false,
            force: true,
        }
    }

    pub fn locate(table: &str) -> Result<Self, NftError> {
        find_nft()
            .map(|p| Self::new(p, table))
            .ok_or(NftError::NotFound)
    }

    /// Reads the table; an absent table is an empty model.
    pub fn read(&self) -> Result<Parsed, NftError> {
        let out = Command::new(&self.nft)
            .args(["-j", "list", "table", "ip", &self.table])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| NftError::Spawn(self.nft.clone(), e))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("No such file or directory") {
                return Ok(Parsed {
                    canonical: true,
                    ..Default::default()
                });
            }
            return Err(NftError::List {
                table: self.table.clone(),
                stderr: err.trim().to_string(),
            });
        }
        parse_listing(&String::from_utf8_lossy(&out.stdout))
    }

    /// Feeds one batch to `nft -f -`: one transaction, all or nothing.
    pub fn apply(&self, batch: &str) -> Result<(), NftError> {
        let mut child = Command::new(&self.nft)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| NftError::Spawn(self.nft.clone(), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.as_bytes())
                .map_err(|e| NftError::WriteBatch(self.table.clone(), e))?;
        }
        let out = child.wait_with_output().map_err(NftError::Wait)?;
        if !out.status.success() {
            return Err(NftError::Rejected {
                table: self.table.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Deletes this backend's table and nothing else; succeeds when it does not exist.
    pub fn remove_table(&self) -> Result<(), NftError> {
        self.apply(&render_clean(&self.table))
    }

    fn svc(&mut self, vs: SocketAddr) -> Result<&mut ServiceState, BackendError> {
        self.dirty = true;
        self.model.get_mut(&vs).ok_or(BackendError::NoService(vs))
    }
}

impl Backend for NftBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn list_service(&mut self, vs: SocketAddr) -> Result<Option<ServiceState>, BackendError> {
        v4(vs)?;
        let parsed = self.read()?;
        if !parsed.canonical {
            self.dirty = true;
        }
        self.model = parsed.services;
        Ok(self.model.get(&vs).cloned())
    }

    fn create_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError> {
        v4(vs)?;
        self.dirty = true;
        self.model.insert(
            vs,
            ServiceState {
                vs,
                scheduler: sched,
                dests: BTreeMap::new(),
            },
        );
        Ok(())
    }

    fn update_service(&mut self, vs: SocketAddr, sched: Scheduler) -> Result<(), BackendError> {
        self.svc(vs)?.scheduler = sched;
        Ok(())
    }

    fn delete_service(&mut self, vs: SocketAddr) -> Result<(), BackendError> {
        self.dirty = true;
        self.model.remove(&vs);
        Ok(())
    }

    fn add_dest(&mut self, vs: SocketAddr, rs: SocketAddr, w: u32) -> Result<(), BackendError> {
        v4(rs)?;
        self.svc(vs)?.dests.insert(rs, w);
        Ok(())
    }

    fn update_dest(&mut self, vs: SocketAddr, rs: SocketAddr, w: u32) -> Result<(), BackendError> {
        self.add_dest(vs, rs, w)
    }

    fn delete_dest(&mut self, vs: SocketAddr, rs: SocketAddr) -> Result<(), BackendError> {
        self.svc(vs)?.dests.remove(&rs);
        Ok(())
    }

    fn commit(&mut self) -> Result<(), BackendError> {
        if self.dirty || self.force {
            self.apply(&render_batch(&self.table, &self.model)?)?;
            self.dirty = false;
            self.force = false;
        }
        Ok(())
    }

    fn clean(&mut self, _vs: SocketAddr) -> Result<(), BackendError> {
        self.remove_table()?;
        self.model.clear();
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn svc(sched: Scheduler, dests: &[(&str, u32)]) -> BTreeMap<SocketAddr, ServiceState> {
        let vs = sa("10.103.97.2:6443");
        let mut m = BTreeMap::new();
        m.insert(
            vs,
            ServiceState {
                vs,
                scheduler: sched,
                dests: dests.iter().map(|(a, w)| (sa(a), *w)).collect(),
            },
        );
        m
    }

    #[test]
    fn batch_replaces_whole_table_with_drained_dest_out_of_rotation() {
        let got = render_batch(
            TABLE,
            &svc(
                Scheduler::Rr,
                &[
                    ("10.88.0.11:6443", 1),
                    ("10.88.0.12:6443", 0),
                    ("10.88.0.13:6443", 1),
                ],
            ),
        )
        .unwrap();
        let c = "comment \"bale-lvscare vs=10.103.97.2:6443 sched=rr\"";
        let dnat = format!("\t\tip daddr 10.103.97.2 tcp dport 6443 dnat ip addr . port to numgen inc mod 2 map {{ 0 : 10.88.0.11 . 6443, 1 : 10.88.0.13 . 6443 }} {c}\n");
        let expected = format!(
            "add table ip bale_lvscare\n\
             delete table ip bale_lvscare\n\
             table ip bale_lvscare {{\n\
             \tmap w_10_103_97_2_6443 {{\n\
             \t\ttype ipv4_addr . inet_service : mark\n\
             \t\telements = {{ 10.88.0.11 . 6443 : 1, 10.88.0.12 . 6443 : 0, 10.88.0.13 . 6443 : 1 }}\n\
             \t}}\n\
             \tchain prerouting {{\n\
             \t\ttype nat hook prerouting priority -100; policy accept;\n\
             {dnat}\
             \t}}\n\
             \tchain output {{\n\
             \t\ttype nat hook output priority -100; policy accept;\n\
             {dnat}\
             \t}}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority 100; policy accept;\n\
             \t\tct status dnat ct original ip daddr 10.103.97.2 ct original protocol tcp ct original proto-dst 6443 masquerade {c}\n\
             \t}}\n\
             }}\n"
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn wrr_repeats_by_reduced_weight_and_sh_hashes_source() {
        let m = svc(Scheduler::Wrr, &[("10.0.0.1:1", 4), ("10.0.0.2:1", 2)]);
        let s = slots(m.values().next().unwrap());
        assert_eq!(s.len(), 3, "4:2 reduces to 2:1");
        let got = render_batch(TABLE, &svc(Scheduler::Sh, &[("10.0.0.1:1", 1)])).unwrap();
        assert!(got.contains("to jhash ip saddr mod 1 seed 0x0 map { 0 : 10.0.0.1 . 1 }"));
    }

    #[test]
    fn wrr_caps_slot_count() {
        let m = svc(Scheduler::Wrr, &[("10.0.0.1:1", 60000), ("10.0.0.2:1", 1)]);
        let n = slots(m.values().next().unwrap()).len();
        assert!(n <= MAX_SLOTS as usize + 1 && n >= 2, "{n}");
    }

    #[test]
    fn all_drained_renders_no_dnat_rule() {
        let got = render_batch(TABLE, &svc(Scheduler::Rr, &[("10.0.0.1:1", 0)])).unwrap();
        assert!(!got.contains("dnat ip"));
        assert!(got.contains("masquerade"));
    }

    #[test]
    fn ipv6_is_refused_with_a_reason() {
        let vs = sa("[fd00::1]:6443");
        let mut m = BTreeMap::new();
        m.insert(
            vs,
            ServiceState {
                vs,
                scheduler: Scheduler::Rr,
                dests: BTreeMap::new(),
            },
        );
        assert!(matches!(
            render_batch(TABLE, &m),
            Err(BackendError::NotIpv4(_))
        ));
    }

    #[test]
    fn ipvs_masquerade_matches_the_original_tuple_only() {
        let b = render_ipvs_masquerade(IPVS_MASQ_TABLE, sa("10.103.97.2:6443")).unwrap();
        assert!(
            b.starts_with("add table ip bale_lvscare_ipvs\ndelete table ip bale_lvscare_ipvs\n")
        );
        assert!(b.contains(
            "ct original ip daddr 10.103.97.2 ct original protocol tcp ct original proto-dst 6443 \
             oifname != \"lo\" masquerade"
        ));
        assert!(
            !b.contains("bale_lvscare "),
            "never touches the nftables backend's table"
        );
        assert!(render_ipvs_masquerade(IPVS_MASQ_TABLE, sa("[::1]:6443")).is_err());
        assert_eq!(
            render_clean(IPVS_MASQ_TABLE),
            "add table ip bale_lvscare_ipvs\ndelete table ip bale_lvscare_ipvs\n"
        );
    }

    #[test]
    fn clean_batch_touches_only_bale_table() {
        assert_eq!(
            render_clean(TABLE),
            "add table ip bale_lvscare\ndelete table ip bale_lvscare\n"
        );
    }

    /// Shape taken from `nft -j list table` of nft 1.0.6 on this machine.
    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
      {"table": {"family": "ip", "name": "bale_lvscare", "handle": 2}},
      {"map": {"family": "ip", "name": "w_10_103_97_2_6443", "table": "bale_lvscare", "type": ["ipv4_addr", "inet_service"], "handle": 1, "map": "mark",
        "elem": [[{"concat": ["10.88.0.11", 6443]}, 1], [{"concat": ["10.88.0.12", 6443]}, 0]]}},
      {"chain": {"family": "ip", "table": "bale_lvscare", "name": "output", "handle": 1, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "bale_lvscare", "chain": "prerouting", "handle": 5, "comment": "bale-lvscare vs=10.103.97.2:6443 sched=rr", "expr": []}},
      {"rule": {"family": "ip", "table": "bale_lvscare", "chain": "output", "handle": 6, "comment": "bale-lvscare vs=10.103.97.2:6443 sched=rr", "expr": []}},
      {"rule": {"family": "ip", "table": "bale_lvscare", "chain": "postrouting", "handle": 7, "comment": "bale-lvscare vs=10.103.97.2:6443 sched=rr", "expr": []}}]}"#;

    #[test]
    fn listing_parses_back_into_the_model() {
        let p = parse_listing(LISTING).unwrap();
        assert_eq!(
            p.services,
            svc(
                Scheduler::Rr,
                &[("10.88.0.11:6443", 1), ("10.88.0.12:6443", 0)]
            )
        );
        assert_eq!(p.rule_count, 3);
        assert!(p.canonical);
    }

    #[test]
    fn listing_with_foreign_rule_is_not_canonical() {
        let body = LISTING.trim_end().strip_suffix("]}").unwrap();
        let extra = format!(
            r#"{body}, {{"rule": {{"chain": "output", "comment": "hand made", "expr": []}}}}]}}"#
        );
        let p = parse_listing(&extra).unwrap();
        assert_eq!(p.rule_count, 4);
        assert!(!p.canonical);
    }

    #[test]
    fn listing_garbage_is_an_error_not_a_panic() {
        assert!(parse_listing("not json").is_err());
        assert!(parse_listing("{}").is_err());
    }
}

//! Host checks before anything is changed. One probe script per host gathers raw facts
//! ([`Probe`]); [`evaluate`] turns the probes of all hosts into one table per host, including
//! the checks that compare hosts (unique hostnames, clock skew against the first master,
//! reachability between hosts). A failed check stops the install unless it is named in
//! `--ignore-preflight`.

use crate::engine::Facts;
use crate::hosts::Role;
use crate::remote::Script;
use serde::Serialize;
use std::collections::BTreeMap;

/// Every check's name, as `--ignore-preflight` takes them.
pub const CHECKS: &[&str] = &[
    "arch",
    "os",
    "kernel",
    "disk",
    "tmp",
    "hostname",
    "clock",
    "ports",
    "systemd",
    "conflicts",
    "reach",
    // Checked by the agent on the node, once the bundle is there (agent-check).
    "features",
];
/// Ports the cluster needs: the built-in registry, the API server, the kubelet.
pub const PORTS: &[u16] = &[5050, 6443, 10250];
/// Free space kept beyond what bale's own files take at the data dir (its journal, records and
/// the runtime's first writes).
pub const DISK_HEADROOM: u64 = 256 << 20;
pub const MAX_CLOCK_SKEW_SECS: f64 = 5.0;
pub const MIN_KERNEL: (u32, u32) = (4, 15);
const KNOWN_OS: &[&str] = &[
    "debian",
    "ubuntu",
    "centos",
    "rhel",
    "rocky",
    "almalinux",
    "ol",
    "fedora",
    "opensuse-leap",
    "sles",
    "openEuler",
    "anolis",
    "kylin",
    "amzn",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Ignored,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

/// Raw facts of one host: `key=value` lines from [`script`], and its clock offset.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub kv: BTreeMap<String, String>,
    /// Host clock minus this machine's clock, seconds.
    pub clock_offset: f64,
}

impl Probe {
    pub fn parse(text: &str, clock_offset: f64) -> Probe {
        let kv = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Probe { kv, clock_offset }
    }
    fn get(&self, k: &str) -> &str {
        self.kv.get(k).map(String::as_str).unwrap_or("")
    }
}

/// The probe script (run as root). `peers` are `addr:port` of the other hosts' SSH.
pub fn script(data_dir: &str, peers: &[String]) -> Script {
    let mut s = Script::new(
        r#"export LC_ALL=C
D={d}
B="$D"/{bundle}
J="$D"/{journal}
K="$D"/{steps}/kubelet.json
d="$D"; while [ ! -d "$d" ]; do d=$(dirname "$d"); done
echo "disk_path=$d"
echo "disk_avail_kib=$(df -Pk "$d" | awk 'NR==2{print $4}')"
if [ -f "$B" ]; then echo "existing_bundle=$(stat -c %s "$B")"; fi
echo "tmp_opts=$(awk '$2=="/tmp"{o=$4} END{print o}' /proc/mounts)"
if [ -d /run/systemd/system ]; then echo systemd=yes; else echo systemd=no; fi
# What an earlier install of bale put there is not a conflict: its registry unit, and the
# runtime its journal records.
ours_runtime=no
if [ -f "$J" ] && grep -q '"runtime"' "$J"; then ours_runtime=yes; fi
# ... and the kubelet its kubelet step installed, with the API server and kubelet ports.
ours_kube=no
if [ -f "$K" ]; then ours_kube=yes; fi
for p in {ports}; do
  h=$(printf ':%04X' "$p")
  if cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk -v h="$h" '$4=="0A" && substr($2, length($2)-4)==h {f=1} END{exit !f}'
  then
    if [ "$p" = {registry} ] && systemctl is-active -q bale-registry.service 2>/dev/null
    then echo "port_$p=bale"
    elif [ "$ours_kube" = yes ] && [ "$p" != {registry} ]; then echo "port_$p=bale"
    else echo "port_$p=busy"; fi
  else echo "port_$p=free"; fi
done
for b in containerd dockerd kubelet; do
  if p=$(command -v "$b" 2>/dev/null); then
    if [ "$b" = containerd ] && [ "$ours_runtime" = yes ]; then echo "bale_$b=$p"
    elif [ "$b" = kubelet ] && [ "$ours_kube" = yes ]; then echo "bale_$b=$p"
    else echo "conflict_$b=$p"; fi
  fi
done
"#,
    )
    .value("d", data_dir)
    .value("bundle", crate::layout::BUNDLE)
    .value("journal", crate::layout::JOURNAL)
    .value("steps", crate::layout::STEPS)
    .value("registry", crate::node::context::REGISTRY_PORT)
    .values("ports", PORTS);
    for t in peers {
        let (ip, port) = t.rsplit_once(':').unwrap_or((t, "22"));
        // The address and port reach bash's /dev/tcp as its arguments.
        s = s
            .then(
                "( if command -v bash >/dev/null 2>&1; then \
                   if timeout 3 bash -c 'exec 3<>/dev/tcp/$1/$2' sh {ip} {port} 2>/dev/null; \
                   then r=ok; else r=fail; fi; \
                 elif command -v nc >/dev/null 2>&1; then \
                   if nc -z -w 3 {ip} {port} 2>/dev/null; then r=ok; else r=fail; fi; \
                 else r=unknown; fi; echo reach_{peer}=\"$r\" ) &\n",
            )
            .value("ip", ip)
            .value("port", port)
            .value("peer", t);
    }
    s.then("wait\n")
}

/// One host as [`evaluate`] sees it.
pub struct HostView<'a> {
    pub name: String,
    pub role: Role,
    pub facts: &'a Facts,
    pub probe: &'a Probe,
}

/// Everything a check compares against.
pub struct Want<'a> {
    /// The architectures the bundle installs on.
    pub arches: &'a [String],
    pub bundle_size: u64,
    /// Bytes of the bundle's tree that the node extracts (all but the registry, which is served
    /// from the bundle in place).
    pub tree_size: u64,
    pub data_dir: &'a str,
    pub ignore: &'a [String],
}

/// What a node's data dir needs free for this bundle: the bundle (less a copy already there,
/// which the upload replaces), its extracted tree twice (a re-run extracts the new tree beside
/// the old before swapping them) and [`DISK_HEADROOM`]. The images are not extracted: the
/// registry serves them from the bundle.
pub fn disk_need(want: &Want, existing: u64) -> u64 {
    want.bundle_size.saturating_sub(existing) + 2 * want.tree_size + DISK_HEADROOM
}

/// containerd keeps its own copy of every image a pod runs, on the same disk as a rule: up to
/// the bundle's images once more. Less room than that is a warning, not a failure: which
/// images run, and where containerd's directory lives, is the site's to know.
fn disk_check(avail: Option<u64>, existing: u64, want: &Want, p: &Probe) -> (Status, String) {
    let Some(a) = avail else {
        return (Status::Fail, "cannot read free space".into());
    };
    let need = disk_need(want, existing);
    let images = want.bundle_size.saturating_sub(want.tree_size);
    let mut detail = format!(
        "{} free at {} ({}), need {} (bundle {}, its tree {} twice, {} spare)",
        human(a),
        want.data_dir,
        p.get("disk_path"),
        human(need),
        human(want.bundle_size.saturating_sub(existing)),
        human(want.tree_size),
        human(DISK_HEADROOM),
    );
    let status = if a < need {
        Status::Fail
    } else if a < need + images {
        detail.push_str(&format!(
            "; containerd stores the images pods run once more, up to {} for all of them",
            human(images)
        ));
        Status::Warn
    } else {
        Status::Ok
    };
    (status, detail)
}

/// The checks of every host, in order.
pub fn evaluate(hosts: &[HostView], want: &Want) -> Vec<Vec<Check>> {
    let reference = hosts
        .iter()
        .find(|h| h.role == Role::Master)
        .or(hosts.first());
    let mut out = Vec::new();
    for h in hosts {
        let mut c = Vec::new();
        let mut add = |name: &'static str, status: Status, detail: String| {
            let status = if status == Status::Fail && want.ignore.iter().any(|i| i == name) {
                Status::Ignored
            } else {
                status
            };
            c.push(Check {
                name,
                status,
                detail,
            });
        };
        let f = h.facts;
        let p = h.probe;
        add(
            "arch",
            if want.arches.contains(&f.arch) {
                Status::Ok
            } else {
                Status::Fail
            },
            format!("{} (bundle {})", f.arch, want.arches.join(", ")),
        );
        add(
            "os",
            if KNOWN_OS.contains(&f.os_id.as_str()) {
                Status::Ok
            } else {
                Status::Warn
            },
            if f.os_pretty.is_empty() {
                format!("{} {} (untested)", f.os_id, f.os_version)
            } else {
                f.os_pretty.clone()
            },
        );
        let kv = kernel_version(&f.kernel);
        add(
            "kernel",
            match kv {
                Some(v) if v >= MIN_KERNEL => Status::Ok,
                Some(_) => Status::Fail,
                None => Status::Warn,
            },
            format!("{} (need {}.{}+)", f.kernel, MIN_KERNEL.0, MIN_KERNEL.1),
        );
        let avail = p
            .get("disk_avail_kib")
            .parse::<u64>()
            .ok()
            .map(|k| k.saturating_mul(1024));
        let existing: u64 = p.get("existing_bundle").parse().unwrap_or(0);
        let (status, detail) = disk_check(avail, existing, want, p);
        add("disk", status, detail);
        let tmp = p.get("tmp_opts");
        add(
            "tmp",
            if tmp.split(',').any(|o| o == "noexec") {
                Status::Warn
            } else {
                Status::Ok
            },
            if tmp.is_empty() {
                "/tmp on the root filesystem".into()
            } else {
                format!("/tmp mounted {tmp}")
            },
        );
        let dups: Vec<String> = hosts
            .iter()
            .filter(|o| o.name != h.name && o.facts.hostname == f.hostname)
            .map(|o| o.name.clone())
            .collect();
        add(
            "hostname",
            if dups.is_empty() && !f.hostname.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            if dups.is_empty() {
                f.hostname.clone()
            } else {
                format!("{} is also the hostname of {}", f.hostname, dups.join(", "))
            },
        );
        if let Some(r) = reference {
            let skew = p.clock_offset - r.probe.clock_offset;
            add(
                "clock",
                if skew.abs() <= MAX_CLOCK_SKEW_SECS {
                    Status::Ok
                } else {
                    Status::Fail
                },
                format!(
                    "{skew:+.1}s against {} (max {MAX_CLOCK_SKEW_SECS}s)",
                    r.name
                ),
            );
        }
        let busy: Vec<String> = PORTS
            .iter()
            .filter(|port| p.get(&format!("port_{port}")) == "busy")
            .map(|p| p.to_string())
            .collect();
        add(
            "ports",
            if busy.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            if busy.is_empty() {
                format!("{} free", join(PORTS))
            } else {
                format!("in use: {}", busy.join(", "))
            },
        );
        add(
            "systemd",
            if p.get("systemd") == "yes" {
                Status::Ok
            } else {
                Status::Fail
            },
            if p.get("systemd") == "yes" {
                "running".into()
            } else {
                "not running (/run/systemd/system missing)".into()
            },
        );
        let conflicts: Vec<String> =
            p.kv.iter()
                .filter(|(k, _)| k.starts_with("conflict_"))
                .map(|(_, v)| v.clone())
                .collect();
        add(
            "conflicts",
            if conflicts.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            if conflicts.is_empty() {
                "no containerd, dockerd or kubelet".into()
            } else {
                format!("already installed: {}", conflicts.join(", "))
            },
        );
        let reach: Vec<(&str, &str)> =
            p.kv.iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("reach_")?, v.as_str())))
                .collect();
        let mut bad: Vec<&str> = Vec::new();
        for &(t, v) in &reach {
            match v {
                "ok" => {}
                "unknown" => bad.push("(no bash or nc to test with)"),
                _ => bad.push(t),
            }
        }
        add(
            "reach",
            if bad.is_empty() {
                Status::Ok
            } else {
                Status::Fail
            },
            if reach.is_empty() {
                "no other hosts".into()
            } else if bad.is_empty() {
                format!("reaches {} other host(s)", reach.len())
            } else {
                format!("cannot reach {}", bad.join(", "))
            },
        );
        out.push(c);
    }
    out
}

fn join(p: &[u16]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn human(n: u64) -> String {
    bale_payload::error::human_bytes(n)
}

/// `6.1.0-18-amd64` → (6, 1).
pub fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// A host's checks as a small table.
pub fn table(node: &str, hostname: &str, checks: &[Check]) -> String {
    let mut s = format!("preflight {node} ({hostname})\n");
    for c in checks {
        let st = match c.status {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Ignored => "ignored",
        };
        s.push_str(&format!("  {:<10} {:<8} {}\n", c.name, st, c.detail));
    }
    s.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(host: &str) -> Facts {
        Facts {
            arch: "x86_64".into(),
            kernel: "6.1.0-18-amd64".into(),
            hostname: host.into(),
            os_id: "debian".into(),
            os_version: "12".into(),
            os_pretty: "Debian 12".into(),
        }
    }

    fn probe(avail_kib: u64, offset: f64, extra: &str) -> Probe {
        Probe::parse(
            &format!(
                "disk_path=/var/lib\ndisk_avail_kib={avail_kib}\ntmp_opts=rw,nosuid\nsystemd=yes\n\
                 port_5050=free\nport_6443=free\nport_10250=free\nreach_10.0.0.3:22=ok\n{extra}"
            ),
            offset,
        )
    }

    fn status(c: &[Check], name: &str) -> Status {
        c.iter().find(|c| c.name == name).map(|c| c.status).unwrap()
    }

    #[test]
    fn checks_compare_hosts() {
        let (fa, fb, fc) = (facts("a"), facts("b"), facts("b"));
        let pa = probe(10 << 20, 0.0, "");
        let pb = probe(
            100,
            7.5,
            "port_6443=busy\nconflict_kubelet=/usr/bin/kubelet\nreach_10.0.0.2:22=fail",
        );
        let pc = probe(10 << 20, 1.0, "existing_bundle=5");
        let hosts = [
            HostView {
                name: "a".into(),
                role: Role::Master,
                facts: &fa,
                probe: &pa,
            },
            HostView {
                name: "b".into(),
                role: Role::Node,
                facts: &fb,
                probe: &pb,
            },
            HostView {
                name: "c".into(),
                role: Role::Node,
                facts: &fc,
                probe: &pc,
            },
        ];
        let ignore = vec!["clock".to_string()];
        let want = Want {
            arches: &["x86_64".to_string()],
            bundle_size: 1 << 20,
            tree_size: 1 << 18,
            data_dir: "/var/lib/bale",
            ignore: &ignore,
        };
        let r = evaluate(&hosts, &want);
        assert!(r[0].iter().all(|c| c.status == Status::Ok), "{:?}", r[0]);
        for (n, s) in [
            ("disk", Status::Fail),
            ("hostname", Status::Fail),
            ("clock", Status::Ignored),
            ("ports", Status::Fail),
            ("conflicts", Status::Fail),
            ("reach", Status::Fail),
        ] {
            assert_eq!(status(&r[1], n), s, "{n}");
        }
        assert!(r[1]
            .iter()
            .any(|c| c.detail.contains("also the hostname of c")));
        assert_eq!(status(&r[2], "clock"), Status::Ok);
        let t = table("b", "b", &r[1]);
        assert!(t.contains("disk") && t.contains("FAIL"), "{t}");
    }

    #[test]
    fn a_host_passes_when_the_bundle_carries_its_architecture() {
        let mut arm = facts("arm");
        arm.arch = "aarch64".into();
        let p = probe(10 << 20, 0.0, "");
        let hosts = [HostView {
            name: "arm".into(),
            role: Role::Node,
            facts: &arm,
            probe: &p,
        }];
        let arch_check = |arches: &[String]| {
            let want = Want {
                arches,
                bundle_size: 1 << 20,
                tree_size: 1 << 18,
                data_dir: "/var/lib/bale",
                ignore: &[],
            };
            let r = evaluate(&hosts, &want);
            let c = r[0].iter().find(|c| c.name == "arch").unwrap();
            (c.status, c.detail.clone())
        };
        assert_eq!(
            arch_check(&["x86_64".into()]),
            (Status::Fail, "aarch64 (bundle x86_64)".into())
        );
        assert_eq!(
            arch_check(&["aarch64".into(), "x86_64".into()]),
            (Status::Ok, "aarch64 (bundle aarch64, x86_64)".into())
        );
    }

    #[test]
    fn the_disk_needs_the_bundle_and_its_tree_and_warns_short_of_room_for_the_images() {
        const GIB: u64 = 1 << 30;
        let want = Want {
            arches: &[],
            bundle_size: 20 * GIB,
            tree_size: GIB / 4,
            data_dir: "/var/lib/bale",
            ignore: &[],
        };
        let need = 20 * GIB + GIB / 2 + DISK_HEADROOM;
        assert_eq!(disk_need(&want, 0), need);
        // A node holding an older copy of the bundle needs room for the difference only.
        assert_eq!(disk_need(&want, 20 * GIB), GIB / 2 + DISK_HEADROOM);
        // At most 4% beyond the bundle for a 20 GiB bundle of images.
        assert!(need * 100 <= 20 * GIB * 104, "{need}");
        let p = Probe::parse("disk_path=/var\n", 0.0);
        let at = |avail: Option<u64>| disk_check(avail, 0, &want, &p);
        assert_eq!(at(Some(need - 1)).0, Status::Fail);
        assert_eq!(at(Some(need)).0, Status::Warn);
        assert_eq!(at(Some(need + 20 * GIB - GIB / 4)).0, Status::Ok);
        let d = at(Some(need)).1;
        assert!(
            d.contains("need 20.8 GiB") && d.contains("containerd"),
            "{d}"
        );
        assert!(!at(Some(need - 1)).1.contains("containerd"));
        assert_eq!(at(None).0, Status::Fail);
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
        assert_eq!(kernel_version("weird"), None);
    }

    #[test]
    fn probe_script_runs_here() {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script("/nonexistent/bale", &["127.0.0.1:1".into()]).text())
            .output()
            .unwrap();
        let p = Probe::parse(&String::from_utf8_lossy(&out.stdout), 0.0);
        assert_eq!(p.get("disk_path"), "/");
        assert!(p.get("disk_avail_kib").parse::<u64>().is_ok(), "{:?}", p.kv);
        assert!(["free", "busy"].contains(&p.get("port_6443")));
        assert!(
            ["fail", "unknown"].contains(&p.get("reach_127.0.0.1:1")),
            "{:?}",
            p.kv
        );
    }
}

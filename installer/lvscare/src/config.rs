//! Flags, the config file, and the resolved configuration.
//!
//! Precedence: built-in defaults < `--config` file < flags. The file is
//! re-read on SIGHUP (the installer rewrites it when masters join or leave);
//! the flags given at start keep overriding it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::backend::Scheduler;

pub const DEFAULT_VS: &str = "10.103.97.2:6443";
/// [`DEFAULT_VS`] as an address, so resolving needs no parse that could fail.
const DEFAULT_VS_ADDR: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    Ipv4Addr::new(10, 103, 97, 2),
    6443,
));
pub const LINK_NAME: &str = "bale-lvs0";
/// The longest `--instance` name: `bale-` plus it must fit an interface name (15 bytes).
const INSTANCE_MAX: usize = 10;

/// What one guardian owns on the node. The guardian without `--instance` (the apiserver's) has
/// the plain names; a second guardian, such as the registry's, gets its own table, masquerade
/// table and link, so neither ever rewrites or cleans the other's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub instance: Option<String>,
    /// `table ip <table>` of the nftables backend.
    pub table: String,
    /// `table ip <masq_table>`: IPVS link mode's source NAT.
    pub masq_table: String,
    /// The dummy interface of link mode.
    pub link: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            instance: None,
            table: super::nft::TABLE.into(),
            masq_table: super::nft::IPVS_MASQ_TABLE.into(),
            link: LINK_NAME.into(),
        }
    }
}

/// Why an `--instance` name cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "--instance {0:?}: use 1 to {INSTANCE_MAX} lowercase letters or digits (it names the \
         interface bale-{0}, which must fit 15 bytes)"
    )]
    BadName(String),
    #[error(
        "--instance {0:?} is taken by the guardian without --instance (table {masq}, link \
         {LINK_NAME}): choose another name",
        masq = super::nft::IPVS_MASQ_TABLE
    )]
    Taken(String),
}

impl Names {
    pub fn of(instance: Option<&str>) -> Result<Names, InstanceError> {
        let Some(name) = instance else {
            return Ok(Names::default());
        };
        let ok = !name.is_empty()
            && name.len() <= INSTANCE_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !ok {
            return Err(InstanceError::BadName(name.to_string()));
        }
        // The names of the guardian without --instance would come out of these two.
        if name == "ipvs" || format!("bale-{name}") == LINK_NAME {
            return Err(InstanceError::Taken(name.to_string()));
        }
        Ok(Names {
            instance: Some(name.to_string()),
            table: format!("{}_{name}", super::nft::TABLE),
            masq_table: format!("{}_{name}", super::nft::IPVS_MASQ_TABLE),
            link: format!("bale-{name}"),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthScheme {
    /// TLS then `GET <path>`; the apiserver's own port speaks only TLS.
    #[default]
    Https,
    /// Plain `GET <path>`.
    Http,
    /// TCP connect only: proves something listens, not that it is healthy.
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// IPVS when the kernel has it, else nftables.
    #[default]
    Auto,
    /// IPVS over generic netlink (needs the ip_vs module).
    Ipvs,
    /// An nftables table `ip bale_lvscare` (needs the `nft` tool).
    Nftables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VipMode {
    /// A /32 route to the VIP via this node's own address: no interface, no
    /// address that other hosts could see.
    #[default]
    Route,
    /// A dummy interface `bale-lvs0` holding the VIP (what kube-proxy's IPVS
    /// mode does with kube-ipvs0).
    Link,
}

/// Accepted HTTP status codes, as inclusive ranges ("200,401" or "200-399").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl StatusSet {
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|(lo, hi)| (*lo..=*hi).contains(&code))
    }
}

impl Default for StatusSet {
    /// Matches lvscare: anything below 400 is healthy.
    fn default() -> Self {
        StatusSet(vec![(200, 399)])
    }
}

impl std::fmt::Display for StatusSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// Why a list of HTTP status codes does not parse.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{0:?} is not an HTTP status code (100-599)")]
    NotACode(String),
    #[error("range {0:?} is backwards")]
    Backwards(String),
    #[error("no status codes given (e.g. 200 or 200,401 or 200-399)")]
    Empty,
}

pub fn parse_status(s: &str) -> Result<StatusSet, StatusError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let code = |x: &str| -> Result<u16, StatusError> {
            x.parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .ok_or_else(|| StatusError::NotACode(x.to_string()))
        };
        let (lo, hi) = (code(lo)?, code(hi)?);
        if lo > hi {
            return Err(StatusError::Backwards(part.to_string()));
        }
        out.push((lo, hi));
    }
    if out.is_empty() {
        return Err(StatusError::Empty);
    }
    Ok(StatusSet(out))
}

/// Why a duration does not parse.
#[derive(Debug, thiserror::Error)]
pub enum DurationError {
    #[error("{0:?} is not a duration (try 5s, 500ms, 1m)")]
    NotANumber(String),
    #[error("unknown unit {unit:?} in {text:?} (ms, s, m, h)")]
    UnknownUnit { unit: String, text: String },
    #[error("{0:?} must be more than 0 and at most 24h")]
    OutOfRange(String),
}

/// "5s", "200ms", "1m", "1.5s", or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| DurationError::NotANumber(s.to_string()))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => {
            return Err(DurationError::UnknownUnit {
                unit: u.to_string(),
                text: s.to_string(),
            })
        }
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(DurationError::OutOfRange(s.to_string()));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The settings given when the guardian starts (the command line, or a caller embedding it).
/// Each one left unset comes from the `--config` file, else from the default; the file is
/// re-read on reload and these keep winning over it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Virtual server IP:PORT that clients dial [default: 10.103.97.2:6443].
    pub vs: Option<SocketAddr>,
    /// Real servers (the masters' apiservers); when given, they replace the file's list.
    pub rs: Vec<SocketAddr>,
    pub scheduler: Option<Scheduler>,
    /// Time between probe rounds [default: 5s].
    pub interval: Option<Duration>,
    /// HTTP path to GET [default: /healthz].
    pub health_path: Option<String>,
    pub health_scheme: Option<HealthScheme>,
    /// Give up on one probe after this long [default: 2s].
    pub health_timeout: Option<Duration>,
    /// Accepted HTTP status codes [default: 200-399].
    pub health_status: Option<StatusSet>,
    /// Do not verify the server certificate (the file may also turn this on).
    pub insecure_skip_verify: bool,
    /// PEM file of the CAs that sign the masters' serving certificates.
    pub ca_file: Option<PathBuf>,
    /// Consecutive failed probes before a server is removed [default: 2].
    pub fall: Option<u32>,
    /// Consecutive good probes before a removed or drained server returns [default: 1].
    pub rise: Option<u32>,
    /// Set up the virtual server, probe once, apply, and return.
    pub run_once: bool,
    /// Remove the virtual server, the nftables table and the VIP route/link, then return.
    pub clean: bool,
    pub backend: Option<BackendKind>,
    pub mode: Option<VipMode>,
    /// Node address the VIP route points at [default: the source address the kernel picks
    /// towards the first real server].
    pub node_ip: Option<Ipv4Addr>,
    /// YAML or JSON file with the same settings; re-read on reload.
    pub config: Option<PathBuf>,
    /// Name of a second guardian on this node: it owns its own table and link. Only set here,
    /// never by the file, so the names cannot change on a reload.
    pub instance: Option<String>,
}

/// A real server in the file: "IP:PORT" or {addr: "IP:PORT", weight: N}.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileRs {
    Plain(SocketAddr),
    Weighted { addr: SocketAddr, weight: u32 },
}

/// A duration in the file: "5s" or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Secs(f64),
    Text(String),
}

impl FileDuration {
    fn get(&self, field: &'static str) -> Result<Duration, ConfigError> {
        let r = match self {
            FileDuration::Secs(n) => parse_duration(&n.to_string()),
            FileDuration::Text(s) => parse_duration(s),
        };
        r.map_err(|source| ConfigError::Duration { field, source })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum FileStatus {
    List(Vec<u16>),
    Text(String),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHealth {
    path: Option<String>,
    scheme: Option<HealthScheme>,
    timeout: Option<FileDuration>,
    status: Option<FileStatus>,
    insecure_skip_verify: Option<bool>,
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    vs: Option<SocketAddr>,
    #[serde(default)]
    rs: Vec<FileRs>,
    scheduler: Option<Scheduler>,
    interval: Option<FileDuration>,
    #[serde(default)]
    health: FileHealth,
    fall: Option<u32>,
    rise: Option<u32>,
    backend: Option<BackendKind>,
    mode: Option<VipMode>,
    node_ip: Option<Ipv4Addr>,
}

/// Why the flags and the config file do not make a usable guardian. Each message names the
/// file, field or flag at fault and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `path` is `<text>` for [`Config::from_text`].
    #[error("parsing {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{field}")]
    Duration {
        field: &'static str,
        #[source]
        source: DurationError,
    },
    #[error("health.status")]
    Status(#[source] StatusError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("real server {0} is listed twice")]
    ListedTwice(SocketAddr),
    #[error("--vs {0} needs a port")]
    VsWithoutPort(SocketAddr),
    #[error("--vs {0}: only IPv4 VIPs are supported (route, link and nftables are IPv4 here)")]
    VsNotIpv4(SocketAddr),
    #[error(
        "no real servers: pass --rs IP:PORT (repeatable) or list them under `rs:` in --config"
    )]
    NoRealServers,
    #[error("real server {0} needs a port")]
    RsWithoutPort(SocketAddr),
    #[error("real server {0} is the virtual server itself")]
    RsIsVs(SocketAddr),
    #[error("real server {rs} and virtual server {vs} are different IP versions")]
    MixedIpVersions { rs: SocketAddr, vs: SocketAddr },
    #[error("--fall and --rise must be at least 1")]
    ZeroThreshold,
    #[error("--health-path {0:?} must start with /")]
    RelativeHealthPath(String),
    #[error("--health-path must not contain spaces or line breaks")]
    HealthPathWithSpace,
    #[error(
        "https probes need a CA to verify the masters: pass --ca-file /etc/kubernetes/pki/ca.crt, \
         or --insecure-skip-verify where that file is not on this node yet (a worker before it \
         joins)"
    )]
    HttpsWithoutCa,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub scheme: HealthScheme,
    pub path: String,
    pub timeout: Duration,
    pub status: StatusSet,
    pub insecure_skip_verify: bool,
    pub ca_file: Option<PathBuf>,
}

/// Everything resolved and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub vs: SocketAddr,
    /// Real servers with weights, sorted and unique.
    pub rs: Vec<(SocketAddr, u32)>,
    pub scheduler: Scheduler,
    pub interval: Duration,
    pub health: HealthConfig,
    pub fall: u32,
    pub rise: u32,
    pub backend: BackendKind,
    pub mode: VipMode,
    pub node_ip: Option<Ipv4Addr>,
    pub run_once: bool,
    pub clean: bool,
    /// The tables and link this guardian owns (from `--instance`, which only a flag sets: the
    /// names must not change on a reload).
    pub names: Names,
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// YAML is a superset of JSON, so one parser reads what the installer writes
/// in either form.
fn parse_file(text: &str) -> Result<FileConfig, serde_yaml::Error> {
    if text.trim().is_empty() {
        return Ok(FileConfig::default());
    }
    serde_yaml::from_str(text)
}

impl Config {
    /// Resolves flags over the file over defaults, and checks the result.
    pub fn resolve(args: &Options) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    /// Same as `resolve` from config text instead of a path (tests, tools).
    pub fn from_text(args: &Options, text: &str) -> Result<Config, ConfigError> {
        let file = parse_file(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            source,
        })?;
        Self::merge(args, file)
    }

    fn merge(args: &Options, file: FileConfig) -> Result<Config, ConfigError> {
        let vs = args.vs.or(file.vs).unwrap_or(DEFAULT_VS_ADDR);
        let mut rs: Vec<(SocketAddr, u32)> = if args.rs.is_empty() {
            file.rs
                .iter()
                .map(|r| match r {
                    FileRs::Plain(a) => (*a, 1),
                    FileRs::Weighted { addr, weight } => (*addr, *weight),
                })
                .collect()
        } else {
            args.rs.iter().map(|a| (*a, 1)).collect()
        };
        rs.sort();
        for w in rs.windows(2) {
            if w[0].0 == w[1].0 {
                return Err(ConfigError::ListedTwice(w[0].0));
            }
        }
        let h = file.health;
        let status = match (&args.health_status, &h.status) {
            (Some(s), _) => s.clone(),
            (None, Some(FileStatus::Text(t))) => parse_status(t).map_err(ConfigError::Status)?,
            (None, Some(FileStatus::List(l))) => {
                let t = l.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
                parse_status(&t).map_err(ConfigError::Status)?
            }
            (None, None) => StatusSet::default(),
        };
        let health = HealthConfig {
            scheme: args.health_scheme.or(h.scheme).unwrap_or_default(),
            path: args
                .health_path
                .clone()
                .or(h.path)
                .unwrap_or_else(|| "/healthz".into()),
            timeout: match (args.health_timeout, &h.timeout) {
                (Some(t), _) => t,
                (None, Some(t)) => t.get("health.timeout")?,
                (None, None) => Duration::from_secs(2),
            },
            status,
            insecure_skip_verify: args.insecure_skip_verify
                || h.insecure_skip_verify.unwrap_or(false),
            ca_file: args.ca_file.clone().or(h.ca_file),
        };
        let cfg = Config {
            vs,
            rs,
            scheduler: args.scheduler.or(file.scheduler).unwrap_or_default(),
            interval: match (args.interval, &file.interval) {
                (Some(t), _) => t,
                (None, Some(t)) => t.get("interval")?,
                (None, None) => Duration::from_secs(5),
            },
            health,
            fall: args.fall.or(file.fall).unwrap_or(2),
            rise: args.rise.or(file.rise).unwrap_or(1),
            backend: args.backend.or(file.backend).unwrap_or_default(),
            mode: args.mode.or(file.mode).unwrap_or_default(),
            node_ip: args.node_ip.or(file.node_ip),
            run_once: args.run_once,
            clean: args.clean,
            names: Names::of(args.instance.as_deref())?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.vs.port() == 0 {
            return Err(ConfigError::VsWithoutPort(self.vs));
        }
        if !self.vs.is_ipv4() {
            return Err(ConfigError::VsNotIpv4(self.vs));
        }
        if self.clean {
            return Ok(()); // cleaning needs only the VIP
        }
        if self.rs.is_empty() {
            return Err(ConfigError::NoRealServers);
        }
        for (a, _) in &self.rs {
            if a.port() == 0 {
                return Err(ConfigError::RsWithoutPort(*a));
            }
            if *a == self.vs {
                return Err(ConfigError::RsIsVs(*a));
            }
            if a.is_ipv4() != self.vs.is_ipv4() {
                return Err(ConfigError::MixedIpVersions {
                    rs: *a,
                    vs: self.vs,
                });
            }
        }
        if self.fall == 0 || self.rise == 0 {
            return Err(ConfigError::ZeroThreshold);
        }
        if !self.health.path.starts_with('/') {
            return Err(ConfigError::RelativeHealthPath(self.health.path.clone()));
        }
        if self.health.path.contains(['\r', '\n', ' ']) {
            return Err(ConfigError::HealthPathWithSpace);
        }
        if self.health.scheme == HealthScheme::Https
            && !self.health.insecure_skip_verify
            && self.health.ca_file.is_none()
        {
            return Err(ConfigError::HttpsWithoutCa);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// `--clean` alone, optionally with `--instance`.
    fn clean(instance: Option<&str>) -> Options {
        Options {
            clean: true,
            instance: instance.map(str::to_string),
            ..Options::default()
        }
    }

    #[test]
    fn durations_parse_and_reject() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn statuses_parse_lists_and_ranges() {
        let s = parse_status("200,401, 500-502").unwrap();
        assert!(s.contains(200) && s.contains(401) && s.contains(501));
        assert!(!s.contains(404));
        assert_eq!(s.to_string(), "200,401,500-502");
        assert!(parse_status("20").is_err());
        assert!(parse_status("300-200").is_err());
        assert!(parse_status(",").is_err());
    }

    #[test]
    fn flags_alone_resolve_with_lvscare_defaults() {
        let c = Config::resolve(&Options {
            rs: vec![
                sa("10.0.0.2:6443"),
                sa("10.0.0.1:6443"),
                sa("10.0.0.3:6443"),
            ],
            insecure_skip_verify: true,
            ..Options::default()
        })
        .unwrap();
        assert_eq!(c.vs, DEFAULT_VS.parse().unwrap());
        assert_eq!(c.rs.len(), 3);
        assert_eq!(c.rs[0].0, "10.0.0.1:6443".parse().unwrap());
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!((c.fall, c.rise), (2, 1));
        assert_eq!(c.health.path, "/healthz");
        assert!(c.health.status.contains(204) && !c.health.status.contains(403));
    }

    #[test]
    fn file_yaml_and_flags_override() {
        let text = r#"
vs: 10.103.97.9:6443
rs:
  - 192.168.0.2:6443
  - {addr: "192.168.0.3:6443", weight: 3}
scheduler: wrr
interval: 500ms
health: {scheme: http, timeout: 1, status: [200, 401]}
fall: 3
"#;
        let c = Config::from_text(
            &Options {
                fall: Some(4),
                ..Options::default()
            },
            text,
        )
        .unwrap();
        assert_eq!(c.vs, "10.103.97.9:6443".parse().unwrap());
        assert_eq!(c.rs[1], ("192.168.0.3:6443".parse().unwrap(), 3));
        assert_eq!(c.scheduler, Scheduler::Wrr);
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.health.timeout, Duration::from_secs(1));
        assert!(c.health.status.contains(401) && !c.health.status.contains(302));
        assert_eq!(c.fall, 4, "flag wins over file");
        // Flags' rs replace the file's list entirely.
        let c = Config::from_text(
            &Options {
                rs: vec![sa("192.168.0.9:6443")],
                ..Options::default()
            },
            text,
        )
        .unwrap();
        assert_eq!(c.rs.len(), 1);
    }

    #[test]
    fn help_config_example_parses() {
        let text = "vs: 10.103.97.2:6443\n\
            rs: [192.168.0.2:6443, {addr: 192.168.0.3:6443, weight: 2}]\n\
            health: {scheme: https, path: /healthz, timeout: 2s, status: 200-399, insecure_skip_verify: true}\n\
            interval: 5s\nfall: 2\nrise: 1\n";
        let c = Config::from_text(&Options::default(), text).unwrap();
        assert_eq!(c.rs[1], ("192.168.0.3:6443".parse().unwrap(), 2));
        assert!(c.health.status.contains(399));
    }

    #[test]
    fn file_json_is_read_too() {
        let c = Config::from_text(
            &Options::default(),
            r#"{"rs": ["10.1.0.1:6443"], "health": {"scheme": "tcp"}}"#,
        )
        .unwrap();
        assert_eq!(c.health.scheme, HealthScheme::Tcp);
    }

    #[test]
    fn config_errors_say_what_is_wrong() {
        let e = |text: &str, insecure: bool| {
            let flags = Options {
                insecure_skip_verify: insecure,
                ..Options::default()
            };
            crate::error_chain(&Config::from_text(&flags, text).unwrap_err())
        };
        assert!(e("", false).contains("no real servers"));
        assert!(e("rs: [1.2.3.4:1]", false).contains("--ca-file"));
        assert!(e("rs: [1.2.3.4:1]\nhelth: {}", false).contains("unknown field"));
        assert!(e("rs: [not-an-address]", false).contains("parsing"));
        assert!(e("rs: [1.2.3.4:1, 1.2.3.4:1]", true).contains("twice"));
        assert!(e("rs: [1.2.3.4:1]\ninterval: 0s", false).contains("interval"));
        assert!(e("rs: [1.2.3.4:1]\nfall: 0", true).contains("--fall"));
        assert!(e(
            "rs: [1.2.3.4:1]\nhealth: {path: healthz, scheme: http}",
            false
        )
        .contains("start with"));
        assert!(e("rs: ['[::1]:5']", true).contains("IP versions"));
        assert!(e("vs: '[fd00::1]:6443'\nrs: ['[::1]:5']", false).contains("IPv4"));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let a = Options {
            config: Some(PathBuf::from("/nonexistent/bale-lvscare.yaml")),
            ..Options::default()
        };
        assert!(matches!(Config::resolve(&a), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn an_instance_owns_its_own_table_and_link() {
        let plain = Config::resolve(&clean(None)).unwrap().names;
        assert_eq!(
            (
                plain.table.as_str(),
                plain.masq_table.as_str(),
                plain.link.as_str()
            ),
            ("bale_lvscare", "bale_lvscare_ipvs", "bale-lvs0")
        );
        let reg = Config::resolve(&clean(Some("registry"))).unwrap().names;
        assert_eq!(
            (
                reg.table.as_str(),
                reg.masq_table.as_str(),
                reg.link.as_str()
            ),
            (
                "bale_lvscare_registry",
                "bale_lvscare_ipvs_registry",
                "bale-registry"
            )
        );
        let longest = Config::resolve(&clean(Some("abcdefghij"))).unwrap();
        assert!(
            longest.names.link.len() <= 15,
            "an interface name fits IFNAMSIZ"
        );
        for bad in ["abcdefghijk", "Reg", "a-b", "", "ipvs", "lvs0"] {
            let e = Config::resolve(&clean(Some(bad))).unwrap_err();
            assert!(e.to_string().contains("--instance"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_default_vip_is_the_documented_one() {
        assert_eq!(DEFAULT_VS_ADDR, DEFAULT_VS.parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn clean_needs_no_real_servers() {
        assert!(Config::resolve(&clean(None)).unwrap().clean);
    }
}

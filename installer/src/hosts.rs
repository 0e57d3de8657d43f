//! The host list: who to install on, in which role, and how to log in.
//!
//! Hosts come from `--masters`/`--nodes` (comma-separated addresses and IPv4 ranges such as
//! `10.0.0.2-10.0.0.9`) or from a Clusterfile (`-f`, see [`crate::clusterfile`]). Login settings
//! layer: built-in defaults, then the Clusterfile's `spec.ssh`, then the command-line flags, then
//! each host's own `ssh` block. Secrets are never taken from the command line: passwords come
//! from a file (`--password-file`), the `BALE_SSH_PASSWORD` environment variable or the
//! Clusterfile, and are carried in [`Secret`], which never prints its content.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// Most addresses one range may expand to (a typo like `10.0.0.1-10.9.0.1` is refused).
pub const MAX_RANGE: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "{field}: {value:?} is not an IP address or range (e.g. 10.0.0.2 or 10.0.0.2-10.0.0.9)"
    )]
    BadAddress { field: String, value: String },
    #[error("{field}: range {value:?} runs backwards")]
    BackwardsRange { field: String, value: String },
    #[error("{field}: range {value:?} has more than {MAX_RANGE} addresses")]
    RangeTooBig { field: String, value: String },
    #[error("{field}: {addr} is listed more than once")]
    Duplicate { field: String, addr: IpAddr },
    #[error("{field}: {value:?} is not a port number (1-65535)")]
    BadPort { field: String, value: String },
    #[error("{field}: unknown role {value:?} (expected master or node)")]
    BadRole { field: String, value: String },
    #[error("{field}: cannot read {}", path.display())]
    ReadFile {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{field}: {path} is empty")]
    EmptyFile { field: String, path: PathBuf },
    #[error(
        "{field}: user name {value:?} is not a portable user name; use letters, digits, `.`, `_` \
         and `-` (not first), at most {MAX_USER} characters"
    )]
    BadUser { field: String, value: String },
    #[error(
        "{field}: {value:?} holds a control character or a double quote; give a plain file path"
    )]
    BadPath { field: String, value: String },
}

/// Longest user name accepted (Linux allows 32 in `useradd`).
pub const MAX_USER: usize = 32;

/// Refuses a user name that is not POSIX-portable: it goes into the ssh config and into
/// messages, and nothing but `[A-Za-z0-9._-]` may end up there.
pub fn check_user(field: &str, user: &str) -> Result<(), HostError> {
    let portable = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if user.is_empty()
        || user.len() > MAX_USER
        || user.starts_with('-')
        || !user.chars().all(portable)
    {
        return Err(HostError::BadUser {
            field: field.into(),
            value: user.into(),
        });
    }
    Ok(())
}

/// Refuses a path that could not be written as one ssh config value: control characters
/// (a newline would start a directive of its own) and double quotes (which end the value).
pub fn check_path(field: &str, path: &std::path::Path) -> Result<(), HostError> {
    let text = path.to_string_lossy();
    if text.is_empty() || text.chars().any(|c| c.is_control() || c == '"') {
        return Err(HostError::BadPath {
            field: field.into(),
            value: text.into_owned(),
        });
    }
    Ok(())
}

/// A password or passphrase. Debug and Display never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Takes a password from the environment variable `name` and removes the variable, so that
    /// no child (an ssh master, a mux client whose config says `SendEnv`) inherits it. Call it
    /// while this process runs one thread, before any connection.
    pub fn take_env(name: &str) -> Option<Secret> {
        let value = std::env::var(name).ok();
        std::env::remove_var(name);
        value.filter(|v| !v.is_empty()).map(Secret)
    }

    /// Reads the first line of a file (trailing newline removed).
    pub fn from_file(field: &str, path: &std::path::Path) -> Result<Self, HostError> {
        let s = std::fs::read_to_string(path).map_err(|source| HostError::ReadFile {
            field: field.into(),
            path: path.into(),
            source,
        })?;
        let line = s.lines().next().unwrap_or("");
        if line.is_empty() {
            return Err(HostError::EmptyFile {
                field: field.into(),
                path: path.into(),
            });
        }
        Ok(Secret(line.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Node,
}

impl Role {
    pub fn parse(field: &str, s: &str) -> Result<Role, HostError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "master" | "masters" | "control-plane" => Ok(Role::Master),
            "node" | "nodes" | "worker" => Ok(Role::Node),
            _ => Err(HostError::BadRole {
                field: field.into(),
                value: s.into(),
            }),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Master => "master",
            Role::Node => "node",
        })
    }
}

/// How to log in to one host. Every field is optional so layers can be merged.
#[derive(Debug, Clone, Default)]
pub struct SshOverrides {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub key: Option<PathBuf>,
    pub key_passphrase: Option<Secret>,
    pub password: Option<Secret>,
    pub sudo: Option<bool>,
}

impl SshOverrides {
    /// `self` with every field `over` sets replaced.
    pub fn merged(&self, over: &SshOverrides) -> SshOverrides {
        SshOverrides {
            user: over.user.clone().or_else(|| self.user.clone()),
            port: over.port.or(self.port),
            key: over.key.clone().or_else(|| self.key.clone()),
            key_passphrase: over
                .key_passphrase
                .clone()
                .or_else(|| self.key_passphrase.clone()),
            password: over.password.clone().or_else(|| self.password.clone()),
            sudo: over.sudo.or(self.sudo),
        }
    }

    /// Refuses a user or key path that cannot be passed to ssh safely; the fields are named
    /// as the user wrote them (`--user`, `spec.ssh.user`).
    pub fn check(&self, user_field: &str, key_field: &str) -> Result<(), HostError> {
        if let Some(u) = &self.user {
            check_user(user_field, u)?;
        }
        if let Some(k) = &self.key {
            check_path(key_field, k)?;
        }
        Ok(())
    }

    pub fn resolve(&self) -> SshSpec {
        let user = self.user.clone().unwrap_or_else(|| "root".into());
        SshSpec {
            sudo: self.sudo.unwrap_or(user != "root"),
            user,
            port: self.port.unwrap_or(22),
            key: self.key.clone(),
            key_passphrase: self.key_passphrase.clone(),
            password: self.password.clone(),
        }
    }
}

/// Resolved login settings of one host.
#[derive(Debug, Clone)]
pub struct SshSpec {
    pub user: String,
    pub port: u16,
    pub key: Option<PathBuf>,
    pub key_passphrase: Option<Secret>,
    pub password: Option<Secret>,
    /// Run privileged commands through sudo.
    pub sudo: bool,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub addr: IpAddr,
    pub role: Role,
    pub ssh: SshSpec,
    pub env: Vec<(String, String)>,
    /// The host's other roles in a Clusterfile (`roles: [node, db]`), which a hook's `scope`
    /// may name.
    pub roles: Vec<String>,
    /// Labels and taints for the host's Node, applied after it joins.
    pub labels: Vec<(String, String)>,
    pub taints: Vec<crate::marks::Taint>,
}

impl Host {
    /// `10.0.0.2` or `[fd00::2]:2222`-free form used in messages: the address, and the port when
    /// it is not 22.
    pub fn label(&self) -> String {
        if self.ssh.port == 22 {
            self.addr.to_string()
        } else {
            format!("{}:{}", self.addr, self.ssh.port)
        }
    }
}

/// Parses `10.0.0.2,10.0.0.5-10.0.0.9,fd00::1` (also `10.0.0.5-9`, the last octet only).
pub fn parse_addrs(field: &str, list: &str) -> Result<Vec<IpAddr>, HostError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || HostError::BadAddress {
            field: field.into(),
            value: item.into(),
        };
        if let Ok(ip) = item.parse::<IpAddr>() {
            out.push(ip);
            continue;
        }
        let (a, b) = item.split_once('-').ok_or_else(bad)?;
        let start: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let end: Ipv4Addr = match b.trim().parse::<Ipv4Addr>() {
            Ok(e) => e,
            Err(_) => {
                let last: u8 = b.trim().parse().map_err(|_| bad())?;
                let o = start.octets();
                Ipv4Addr::new(o[0], o[1], o[2], last)
            }
        };
        let (s, e) = (u32::from(start), u32::from(end));
        if e < s {
            return Err(HostError::BackwardsRange {
                field: field.into(),
                value: item.into(),
            });
        }
        if e - s >= MAX_RANGE {
            return Err(HostError::RangeTooBig {
                field: field.into(),
                value: item.into(),
            });
        }
        out.extend((s..=e).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
    }
    Ok(out)
}

pub fn parse_port(field: &str, s: &str) -> Result<u16, HostError> {
    match s.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(HostError::BadPort {
            field: field.into(),
            value: s.into(),
        }),
    }
}

/// Refuses an address that appears twice anywhere in the list.
pub fn check_unique(hosts: &[Host]) -> Result<(), HostError> {
    let mut seen = std::collections::HashSet::new();
    for h in hosts {
        if !seen.insert(h.addr) {
            return Err(HostError::Duplicate {
                field: "hosts".into(),
                addr: h.addr,
            });
        }
    }
    Ok(())
}

/// Hosts from `--masters` and `--nodes` with the same login settings.
pub fn from_flags(
    masters: Option<&str>,
    nodes: Option<&str>,
    ssh: &SshOverrides,
) -> Result<Vec<Host>, HostError> {
    ssh.check("--user", "--key")?;
    let spec = ssh.resolve();
    let mut out = Vec::new();
    for (field, list, role) in [
        ("--masters", masters, Role::Master),
        ("--nodes", nodes, Role::Node),
    ] {
        for addr in parse_addrs(field, list.unwrap_or(""))? {
            if out.iter().any(|h: &Host| h.addr == addr) {
                return Err(HostError::Duplicate {
                    field: field.into(),
                    addr,
                });
            }
            out.push(Host {
                addr,
                role,
                ssh: spec.clone(),
                env: Vec::new(),
                roles: Vec::new(),
                labels: Vec::new(),
                taints: Vec::new(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_ranges() {
        let v = parse_addrs("--nodes", "10.0.0.2-10.0.0.4, 10.0.1.1,fd00::1,10.0.2.8-9").unwrap();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            s,
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.1.1", "fd00::1", "10.0.2.8", "10.0.2.9"]
        );
        assert!(parse_addrs("--nodes", "").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_addrs("--masters", "10.0.0.300")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--masters") && e.contains("10.0.0.300"), "{e}");
        let e = parse_addrs("--nodes", "10.0.0.9-10.0.0.2").unwrap_err();
        assert!(matches!(e, HostError::BackwardsRange { .. }));
        let e = parse_addrs("--nodes", "10.0.0.0-10.1.0.0").unwrap_err();
        assert!(matches!(e, HostError::RangeTooBig { .. }));
        let e = from_flags(Some("10.0.0.1"), Some("10.0.0.1"), &SshOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--nodes") && e.contains("more than once"), "{e}");
        assert!(parse_port("--port", "0").is_err());
        assert!(parse_port("--port", "x").is_err());
    }

    /// F8: `--user` reached the ssh config unchecked.
    #[test]
    fn user_names_and_key_paths_are_checked() {
        for ok in ["root", "ops", "svc-deploy", "a.b_c", "_x", "9lives"] {
            check_user("--user", ok).unwrap();
        }
        for bad in [
            "",
            "-oProxyCommand=x",
            "a b",
            "x\"\nProxyCommand id",
            "ü",
            "a@b",
            "a/b",
        ] {
            let e = check_user("--user", bad).unwrap_err().to_string();
            assert!(e.starts_with("--user: "), "{e}");
        }
        check_user("--user", &"a".repeat(MAX_USER)).unwrap();
        check_user("--user", &"a".repeat(MAX_USER + 1)).unwrap_err();
        check_path("--key", std::path::Path::new("/keys/id 50% ~x")).unwrap();
        for bad in ["/k\nProxyCommand x", "/k\"x", "/k\tx", ""] {
            check_path("--key", std::path::Path::new(bad)).unwrap_err();
        }
        let flags = SshOverrides {
            user: Some("x\"\nProxyCommand touch /tmp/p".into()),
            ..Default::default()
        };
        let e = from_flags(Some("10.0.0.2"), None, &flags)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--user"), "{e}");
    }

    #[test]
    fn layers_and_sudo_default() {
        let base = SshOverrides {
            user: Some("ops".into()),
            port: Some(2200),
            ..Default::default()
        };
        let over = SshOverrides {
            port: Some(22),
            ..Default::default()
        };
        let s = base.merged(&over).resolve();
        assert_eq!((s.user.as_str(), s.port, s.sudo), ("ops", 22, true));
        assert!(!SshOverrides::default().resolve().sudo);
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "Secret(***)");
    }
}

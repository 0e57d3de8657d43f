//! Registry credentials (Docker's `config.json` and credential helpers) and the
//! `WWW-Authenticate` challenges that ask for them.

use crate::images::error::{ImagesError, Result};
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A user name and password for one registry, and where they came from (for messages).
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub pass: String,
    pub origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password, even in debug output.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.user, self.pass);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    creds_store: Option<String>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
}

/// Docker's client configuration, as `docker login` leaves it.
#[derive(Debug, Default)]
pub struct DockerConfig {
    path: PathBuf,
    raw: RawConfig,
}

/// Docker Hub's server address in credential stores, and its other spellings.
const HUB_KEYS: [&str; 4] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "docker.io",
    "registry-1.docker.io",
];

impl DockerConfig {
    /// `dir/config.json`; without `dir`, `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`. A missing file means no credentials.
    pub fn load(dir: Option<&Path>) -> Result<DockerConfig> {
        let dir = match dir {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
                Some(d) => PathBuf::from(d),
                None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                    Some(h) => PathBuf::from(h).join(".docker"),
                    None => return Ok(DockerConfig::default()),
                },
            },
        };
        let path = dir.join("config.json");
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path,
                    raw: RawConfig::default(),
                })
            }
            Err(e) => return Err(ImagesError::io(&path, e)),
        };
        let raw: RawConfig = serde_json::from_slice(&data).map_err(|e| {
            ImagesError::invalid(path.display().to_string(), format!("not valid JSON: {e}"))
        })?;
        Ok(DockerConfig { path, raw })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The credentials for registry `host` (as written in image references), if any.
    pub fn credentials(&self, host: &str) -> Result<Option<Credentials>> {
        let hub = host == "docker.io";
        let wanted = |key: &str| {
            let k = strip_url(key);
            if hub {
                HUB_KEYS.iter().any(|h| strip_url(h) == k)
            } else {
                k == host
            }
        };
        // An exact key first: "host" beats "https://host/v2/" when both are there.
        let mut keys: Vec<&String> = self.raw.auths.keys().filter(|k| wanted(k)).collect();
        keys.sort_by_key(|k| (k.as_str() != host, k.len()));
        for key in keys {
            let Some(e) = self.raw.auths.get(key) else {
                continue;
            };
            let origin = format!("{} (auths.{key})", self.path.display());
            if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ImagesError::invalid(&origin, "\"auth\" is not base64 of user:password")
                    })?;
                let (user, pass) = decoded.split_once(':').ok_or_else(|| {
                    ImagesError::invalid(&origin, "\"auth\" is not base64 of user:password")
                })?;
                return Ok(Some(Credentials {
                    user: user.to_string(),
                    pass: pass.to_string(),
                    origin,
                }));
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Some(Credentials {
                    user: u.clone(),
                    pass: p.clone(),
                    origin,
                }));
            }
        }
        let helper = self
            .raw
            .cred_helpers
            .iter()
            .find(|(k, _)| wanted(k))
            .map(|(_, v)| v.clone())
            .or_else(|| self.raw.creds_store.clone())
            .filter(|h| !h.is_empty());
        match helper {
            Some(h) => run_helper(&h, if hub { HUB_KEYS[0] } else { host }),
            None => Ok(None),
        }
    }
}

fn strip_url(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Asks `docker-credential-NAME` for the credentials of `server`, as the docker CLI does.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Out {
        username: String,
        secret: String,
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ImagesError::invalid(
            format!("credential helper {name:?}"),
            "not a valid helper name",
        ));
    }
    let program = format!("docker-credential-{name}");
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        // Configured but not installed here: the registry may still allow anonymous pulls.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ImagesError::io(&program, e)),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| ImagesError::io(&program, e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("credentials not found") || err.contains("credentials not found") {
            return Ok(None);
        }
        return Err(ImagesError::Auth {
            host: server.to_string(),
            message: format!("{program} failed: {}", err.trim()),
        });
    }
    let o: Out = serde_json::from_slice(&out.stdout).map_err(|e| ImagesError::Auth {
        host: server.to_string(),
        message: format!("{program} gave an answer that is not its JSON: {e}"),
    })?;
    Ok(Some(Credentials {
        user: o.username,
        pass: o.secret,
        origin: program,
    }))
}

/// What a registry's 401 asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
    Other(String),
}

/// Parses `WWW-Authenticate: Bearer realm="...",service="...",scope="..."` (or `Basic ...`).
pub fn parse_challenge(header: &str) -> Challenge {
    let header = header.trim();
    let (scheme, rest) = header
        .split_once(char::is_whitespace)
        .unwrap_or((header, ""));
    let params = parse_params(rest);
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => match params.get("realm") {
            Some(realm) => Challenge::Bearer {
                realm: realm.clone(),
                service: params.get("service").cloned(),
                scope: params.get("scope").cloned(),
            },
            None => Challenge::Other(header.to_string()),
        },
        "basic" => Challenge::Basic,
        _ => Challenge::Other(header.to_string()),
    }
}

/// `k=v, k2="v, with comma"` -> map with lowercase keys.
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            }
        );
        assert_eq!(parse_challenge(r#"Basic realm="x""#), Challenge::Basic);
        assert!(matches!(parse_challenge("Negotiate"), Challenge::Other(_)));
    }

    #[test]
    fn config_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = base64::engine::general_purpose::STANDARD.encode("u:p:w");
        std::fs::write(
            dir.path().join("config.json"),
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},
                "https://reg.example:5000":{{"username":"x","password":"y"}},
                "bad.example":{{"auth":"!!"}}}}}}"#
            ),
        )
        .expect("write");
        let c = DockerConfig::load(Some(dir.path())).expect("load");
        let hub = c.credentials("docker.io").expect("ok").expect("some");
        assert_eq!((hub.user.as_str(), hub.pass.as_str()), ("u", "p:w"));
        let r = c
            .credentials("reg.example:5000")
            .expect("ok")
            .expect("some");
        assert_eq!(r.user, "x");
        assert!(c.credentials("other.example").expect("ok").is_none());
        assert!(c.credentials("bad.example").is_err());
        assert!(!format!("{hub:?}").contains("p:w"));
    }
}

//! Pulling images natively with the OCI distribution API.
//!
//! One [`Registry`] per host: it finds out whether the host speaks HTTPS (or, when allowed,
//! plain HTTP), answers 401 challenges (Bearer tokens from the realm, or Basic) with the
//! credentials `docker login` stored, and retries what failed on the server's or the network's
//! side with exponential backoff. Manifests are fetched one by one; layers go through
//! [`download`], a few at a time. The same client pushes: blob uploads (POST, then one PUT
//! with the bytes) and manifests, for `bale push` (see `crate::share`).

pub mod auth;
mod tls;

use super::cache::Cache;
use super::error::{ImagesError, Result};
use super::oci::{self, Descriptor, Parsed, Platform, MANIFEST_ACCEPT, MAX_MANIFEST_LEN};
use super::{resolve_tree, Tree};
use crate::imageref::ImageRef;
use auth::{parse_challenge, Challenge, Credentials};
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How failed requests are tried again.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries after the first one.
    pub retries: u32,
    /// Wait before the first retry; doubled each time, at most 30 s.
    pub delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 4,
            delay: Duration::from_millis(500),
        }
    }
}

impl RetryPolicy {
    /// Runs `f` until it succeeds, fails for good, or the tries run out.
    pub(crate) fn run<T>(&self, mut f: impl FnMut() -> Result<T>) -> Result<T> {
        let mut delay = self.delay;
        let mut attempt = 0;
        loop {
            match f() {
                Err(e) if e.is_transient() && attempt < self.retries => {
                    attempt += 1;
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
                r => return r,
            }
        }
    }
}

/// The registry API's host for an image domain: Docker Hub's API is not at `docker.io`.
pub fn api_host(domain: &str) -> &str {
    if domain == "docker.io" {
        "registry-1.docker.io"
    } else {
        domain
    }
}

/// `localhost`, 127.0.0.0/8 and ::1, with or without a port.
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.split(':').next().unwrap_or(host)
    };
    h.eq_ignore_ascii_case("localhost") || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[derive(Default)]
struct AuthState {
    /// Basic credentials are sent with every request once the registry asked for them.
    basic: bool,
    /// Bearer tokens by scope.
    tokens: HashMap<String, String>,
}

/// How a [`Registry`] reaches its host.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Plain HTTP and unverified TLS allowed (always so for loopback without `ca_file`).
    pub insecure: bool,
    /// PEM file of CA certificates trusted besides the built-in roots. With it, TLS is
    /// verified even on loopback: the user asked for that CA to be checked.
    pub ca_file: Option<std::path::PathBuf>,
}

/// A request body: nothing, bytes in memory, or a range of a file (streamed, never held).
pub enum Body<'a> {
    Empty,
    Bytes {
        data: &'a [u8],
        content_type: &'a str,
    },
    File {
        file: &'a std::fs::File,
        offset: u64,
        len: u64,
        /// Counts bytes sent, so a failed try can take them back from a progress bar.
        sent: &'a std::sync::atomic::AtomicU64,
        bar: &'a indicatif::ProgressBar,
    },
}

/// Reads `len` bytes of a file from `pos` on, with positioned reads (no shared cursor, so
/// several uploads read one file at once).
struct FileRange<'a> {
    file: &'a std::fs::File,
    pos: u64,
    end: u64,
    sent: &'a std::sync::atomic::AtomicU64,
    bar: &'a indicatif::ProgressBar,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let want = (self.end - self.pos).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was sent",
            ));
        }
        self.pos += n as u64;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        self.bar.inc(n as u64);
        Ok(n)
    }
}

/// A client for one registry host.
pub struct Registry {
    domain: String,
    api_host: String,
    insecure: bool,
    agent: ureq::Agent,
    base: Mutex<Option<String>>,
    creds: Option<Credentials>,
    config_path: String,
    auth: Mutex<AuthState>,
    retry: RetryPolicy,
}

impl Registry {
    /// `insecure` allows plain HTTP and unverified TLS; loopback hosts always allow them.
    pub fn new(
        domain: &str,
        insecure: bool,
        creds: Option<Credentials>,
        config_path: String,
        retry: RetryPolicy,
    ) -> Result<Registry> {
        let conn = Connection {
            insecure,
            ca_file: None,
        };
        Registry::connect(domain, &conn, creds, config_path, retry)
    }

    /// Like [`Registry::new`], with a CA file possibly.
    pub fn connect(
        domain: &str,
        conn: &Connection,
        creds: Option<Credentials>,
        config_path: String,
        retry: RetryPolicy,
    ) -> Result<Registry> {
        let api_host = api_host(domain).to_string();
        let loopback = is_loopback(&api_host);
        let insecure = conn.insecure || (loopback && conn.ca_file.is_none());
        let mut b = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            // Parallel transfers each keep their connection between requests.
            .max_idle_connections_per_host(32)
            .user_agent(concat!("bale/", env!("CARGO_PKG_VERSION")))
            .redirects(8)
            // ureq ignores NO_PROXY, so a proxy never sees what is meant for this machine.
            .try_proxy_from_env(!loopback);
        if let Some(ca) = &conn.ca_file {
            b = b.tls_config(tls::with_ca(ca)?);
        } else if insecure {
            b = b.tls_config(tls::unverified()?);
        }
        Ok(Registry {
            domain: domain.to_string(),
            api_host,
            insecure,
            agent: b.build(),
            base: Mutex::new(None),
            creds,
            config_path,
            auth: Mutex::new(AuthState::default()),
            retry,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `https://host` or, for an insecure registry that does not speak TLS, `http://host`.
    fn base(&self) -> Result<String> {
        if let Ok(g) = self.base.lock() {
            if let Some(b) = g.as_ref() {
                return Ok(b.clone());
            }
        }
        let schemes: &[&str] = if self.insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        let mut last = None;
        for (i, scheme) in schemes.iter().enumerate() {
            let url = format!("{scheme}://{}/v2/", self.api_host);
            let more = i + 1 < schemes.len();
            let mut req = self.agent.get(&url);
            if more {
                // A plain-HTTP server that does not answer a TLS hello at all would otherwise
                // hold the probe for the whole read timeout.
                req = req.timeout(Duration::from_secs(10));
            }
            let ping = || match req.clone().call() {
                // Any HTTP answer (200, or 401 asking for credentials) means it speaks this.
                Ok(_) | Err(ureq::Error::Status(..)) => Ok(()),
                Err(ureq::Error::Transport(t)) => Err(transport_error(&url, &t, more)),
            };
            // A plain-HTTP server fails the TLS handshake at once: no point retrying HTTPS
            // when plain HTTP is the next thing to try.
            let r = if more { ping() } else { self.retry.run(ping) };
            match r {
                Ok(()) => {
                    let base = format!("{scheme}://{}", self.api_host);
                    if let Ok(mut g) = self.base.lock() {
                        *g = Some(base.clone());
                    }
                    return Ok(base);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ImagesError::Connect {
            url: self.api_host.clone(),
            message: "no usable scheme".into(),
        }))
    }

    fn auth_header(&self, scope: &str) -> Option<String> {
        let st = self.auth.lock().ok()?;
        if let Some(t) = st.tokens.get(scope) {
            return Some(format!("Bearer {t}"));
        }
        if st.basic {
            return self.creds.as_ref().map(Credentials::basic_header);
        }
        None
    }

    /// One GET, answering at most one 401 challenge; no retries.
    fn get_once(&self, url: &str, accept: Option<&str>, scope: &str) -> Result<ureq::Response> {
        self.send_once("GET", url, accept, &Body::Empty, scope)
    }

    /// One request, answering at most one 401 challenge (the body is sent again then); no
    /// retries. Credentials only go to this registry's own host, not to where an upload
    /// location may point.
    pub(crate) fn send_once(
        &self,
        method: &str,
        url: &str,
        accept: Option<&str>,
        body: &Body<'_>,
        scope: &str,
    ) -> Result<ureq::Response> {
        let own = self.base().is_ok_and(|b| url.starts_with(&format!("{b}/")));
        let mut answered = false;
        loop {
            let mut req = self.agent.request(method, url);
            if let Some(a) = accept {
                req = req.set("Accept", a);
            }
            let sent_auth = if own { self.auth_header(scope) } else { None };
            if let Some(h) = &sent_auth {
                req = req.set("Authorization", h);
            }
            let r = match body {
                Body::Empty if method == "GET" || method == "HEAD" => req.call(),
                Body::Empty => req.set("Content-Length", "0").send_bytes(&[]),
                Body::Bytes { data, content_type } => {
                    req.set("Content-Type", content_type).send_bytes(data)
                }
                Body::File {
                    file,
                    offset,
                    len,
                    sent,
                    bar,
                } => req
                    .set("Content-Type", "application/octet-stream")
                    .set("Content-Length", &len.to_string())
                    .send(FileRange {
                        file,
                        pos: *offset,
                        end: offset + len,
                        sent,
                        bar,
                    }),
            };
            match r {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, resp)) if own => {
                    let challenge = resp.header("www-authenticate").map(parse_challenge);
                    if answered {
                        return Err(self.rejected(challenge.as_ref()));
                    }
                    answered = true;
                    self.answer(challenge, scope)?;
                    if let Body::File { sent, bar, .. } = body {
                        bar.dec(sent.swap(0, Ordering::Relaxed));
                    }
                }
                Err(ureq::Error::Status(status, resp)) => {
                    return Err(ImagesError::Http {
                        url: url.to_string(),
                        status,
                        message: error_detail(resp),
                    })
                }
                Err(ureq::Error::Transport(t)) => return Err(transport_error(url, &t, false)),
            }
        }
    }

    /// The registry's base URL (`https://host`), probing the scheme on first use.
    pub fn base_url(&self) -> Result<String> {
        self.base()
    }

    /// Whether blob `digest` is in `repo`, by a HEAD; its size when it is.
    pub fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let scope = push_scope(repo);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/blobs/{digest}", self.base()?);
            match self.send_once("HEAD", &url, None, &Body::Empty, &scope) {
                Ok(r) => Ok(Some(
                    r.header("content-length")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0),
                )),
                Err(ImagesError::Http { status: 404, .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    /// Uploads one blob: POST for an upload location, then one PUT with every byte and the
    /// digest. A retry starts a new upload; the registry checks the digest itself.
    pub fn upload_blob(&self, repo: &str, digest: &str, body: &Body<'_>) -> Result<()> {
        let scope = push_scope(repo);
        self.retry.run(|| {
            let base = self.base()?;
            let start = format!("{base}/v2/{repo}/blobs/uploads/");
            let resp = self.send_once("POST", &start, None, &Body::Empty, &scope)?;
            let location = resp.header("location").map(str::to_string).ok_or_else(|| {
                ImagesError::invalid(&start, "the upload answer has no Location header")
            })?;
            drain(resp);
            let mut url = if location.starts_with('/') {
                format!("{base}{location}")
            } else if location.starts_with("http://") || location.starts_with("https://") {
                location
            } else {
                return Err(ImagesError::invalid(
                    &start,
                    format!("the upload location {location:?} is not a URL"),
                ));
            };
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("digest=");
            url.push_str(&encode_query(digest));
            if let Body::File { sent, .. } = body {
                sent.store(0, Ordering::Relaxed);
            }
            let r = self.send_once("PUT", &url, None, body, &scope);
            if let (Err(_), Body::File { sent, bar, .. }) = (&r, body) {
                // A retry sends the blob again from its start.
                bar.dec(sent.swap(0, Ordering::Relaxed));
            }
            drain(r?);
            Ok(())
        })
    }

    /// Stores a manifest under `reference` (a tag or its digest); returns its digest.
    pub fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        data: &[u8],
    ) -> Result<String> {
        let scope = push_scope(repo);
        let digest = oci::sha256_digest(data);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/manifests/{reference}", self.base()?);
            let body = Body::Bytes {
                data,
                content_type: media_type,
            };
            drain(self.send_once("PUT", &url, None, &body, &scope)?);
            Ok(())
        })?;
        Ok(digest)
    }

    /// A manifest as [`Registry::manifest`] gives it, or `None` when the registry has none
    /// under that name.
    pub fn manifest_if_any(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<(Vec<u8>, Option<String>)>> {
        match self.manifest(repo, reference) {
            Ok(m) => Ok(Some(m)),
            Err(ImagesError::Http { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the registry answers the OCI 1.1 referrers API for `digest` in `repo`; a
    /// registry without it (distribution 2.8) answers 404 and needs the tag fallback.
    pub fn has_referrers_api(&self, repo: &str, digest: &str) -> Result<bool> {
        let scope = pull_scope(repo);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/referrers/{digest}", self.base()?);
            match self.send_once("GET", &url, Some(oci::OCI_INDEX), &Body::Empty, &scope) {
                Ok(r) => {
                    let is_index = r
                        .header("content-type")
                        .is_some_and(|c| c.starts_with(oci::OCI_INDEX));
                    drain(r);
                    Ok(is_index)
                }
                Err(ImagesError::Http {
                    status: 404 | 400 | 405,
                    ..
                }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// One GET of blob `digest`, for the caller to read (no retries: the caller knows what
    /// it already has).
    pub fn blob_response(&self, repo: &str, digest: &str) -> Result<ureq::Response> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base()?);
        self.get_once(&url, None, &pull_scope(repo))
    }

    /// The retry policy, for callers that retry whole steps.
    pub fn retry(&self) -> &RetryPolicy {
        &self.retry
    }

    fn rejected(&self, challenge: Option<&Challenge>) -> ImagesError {
        let message = match &self.creds {
            Some(c) => format!(
                "the registry rejected the credentials of user {:?} from {}; log in again \
                 (docker login {})",
                c.user, c.origin, self.domain
            ),
            None => format!(
                "the registry requires authentication{} and there are no credentials for \
                 {} in {}; log in with `docker login {}` or set DOCKER_CONFIG",
                match challenge {
                    Some(Challenge::Bearer { .. }) => " (token)",
                    Some(Challenge::Basic) => " (basic)",
                    _ => "",
                },
                self.domain,
                self.config_path,
                self.domain
            ),
        };
        ImagesError::Auth {
            host: self.domain.clone(),
            message,
        }
    }

    /// Prepares credentials for the next try of a request that got 401.
    fn answer(&self, challenge: Option<Challenge>, scope: &str) -> Result<()> {
        match challenge {
            Some(Challenge::Basic) => {
                if self.creds.is_none() {
                    return Err(self.rejected(Some(&Challenge::Basic)));
                }
                if let Ok(mut st) = self.auth.lock() {
                    st.basic = true;
                }
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: asked,
            }) => {
                let token = self.token(
                    &realm,
                    service.as_deref(),
                    asked.as_deref().unwrap_or(scope),
                )?;
                if let Ok(mut st) = self.auth.lock() {
                    st.tokens.insert(scope.to_string(), token);
                }
                Ok(())
            }
            Some(Challenge::Other(h)) => Err(ImagesError::Auth {
                host: self.domain.clone(),
                message: format!("unsupported authentication challenge {h:?}"),
            }),
            None => Err(ImagesError::Auth {
                host: self.domain.clone(),
                message: "401 Unauthorized without a WWW-Authenticate challenge".into(),
            }),
        }
    }

    /// A Bearer token from the challenge's realm, with Basic credentials when there are some.
    fn token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<String> {
        let plain = realm.starts_with("http://");
        if !plain && !realm.starts_with("https://") {
            return Err(ImagesError::Auth {
                host: self.domain.clone(),
                message: format!("token realm {realm:?} is not an http(s) URL"),
            });
        }
        let realm_host = realm
            .split_once("://")
            .map(|(_, r)| r.split(['/', '?']).next().unwrap_or(r))
            .unwrap_or_default();
        if plain && self.creds.is_some() && !self.insecure && !is_loopback(realm_host) {
            return Err(ImagesError::Auth {
                host: self.domain.clone(),
                message: format!(
                    "the token realm {realm} is plain HTTP; refusing to send credentials there \
                     (mark the registry insecure to allow it)"
                ),
            });
        }
        let mut url = realm.to_string();
        let mut sep = if url.contains('?') { '&' } else { '?' };
        if let Some(s) = service {
            url.push_str(&format!("{sep}service={}", encode_query(s)));
            sep = '&';
        }
        url.push_str(&format!("{sep}scope={}", encode_query(scope)));
        let mut req = self.agent.get(&url);
        if let Some(c) = &self.creds {
            req = req.set("Authorization", &c.basic_header());
        }
        let resp = match req.call() {
            Ok(r) => r,
            Err(ureq::Error::Status(401 | 403, _)) => return Err(self.rejected(None)),
            Err(ureq::Error::Status(status, resp)) => {
                return Err(ImagesError::Http {
                    url: realm.to_string(),
                    status,
                    message: error_detail(resp),
                })
            }
            Err(ureq::Error::Transport(t)) => return Err(transport_error(realm, &t, false)),
        };
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let body = read_body(resp, realm, 1 << 20)?;
        let t: Token = serde_json::from_slice(&body).map_err(|e| ImagesError::Auth {
            host: self.domain.clone(),
            message: format!("the token service {realm} answered with no token: {e}"),
        })?;
        t.token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ImagesError::Auth {
                host: self.domain.clone(),
                message: format!("the token service {realm} answered with no token"),
            })
    }

    /// A manifest or index by tag or digest: its bytes and the media type it was served as.
    pub fn manifest(&self, repo: &str, reference: &str) -> Result<(Vec<u8>, Option<String>)> {
        let scope = pull_scope(repo);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/manifests/{reference}", self.base()?);
            let resp = self.get_once(&url, Some(MANIFEST_ACCEPT), &scope)?;
            let ctype = resp.header("content-type").map(str::to_string);
            let served = resp.header("docker-content-digest").map(str::to_string);
            let body = read_body(resp, &url, MAX_MANIFEST_LEN)?;
            let digest = oci::sha256_digest(&body);
            if reference.starts_with("sha256:") && digest != reference {
                return Err(ImagesError::Digest {
                    what: url.clone(),
                    expected: reference.to_string(),
                    actual: digest,
                });
            }
            // The header is only a check: what the name resolves to is what was received.
            if let Some(s) = served.filter(|s| s.starts_with("sha256:")) {
                if s != digest {
                    return Err(ImagesError::Digest {
                        what: url.clone(),
                        expected: s,
                        actual: digest,
                    });
                }
            }
            Ok((body, ctype))
        })
    }

    /// Downloads blob `d` of `repo` into the cache, reporting bytes to `progress`.
    pub fn blob_to_cache(
        &self,
        repo: &str,
        d: &Descriptor,
        cache: &Cache,
        progress: &indicatif::ProgressBar,
    ) -> Result<()> {
        let scope = pull_scope(repo);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/blobs/{}", self.base()?, d.digest);
            let resp = self.get_once(&url, None, &scope)?;
            let mut counted = Counted {
                inner: resp.into_reader(),
                bar: progress,
                n: 0,
            };
            let r = cache.put_reader(&url, &d.digest, Some(d.size), &mut counted);
            if r.is_err() {
                // A retry counts the blob again from its start.
                progress.set_position(progress.position().saturating_sub(counted.n));
            }
            r
        })
    }

    /// A small blob (a config) into the cache and memory.
    pub fn small_blob(&self, repo: &str, d: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if d.size > limit {
            return Err(ImagesError::invalid(
                &d.digest,
                format!("{} bytes, more than the limit of {limit}", d.size),
            ));
        }
        let scope = pull_scope(repo);
        self.retry.run(|| {
            let url = format!("{}/v2/{repo}/blobs/{}", self.base()?, d.digest);
            let resp = self.get_once(&url, None, &scope)?;
            read_body(resp, &url, limit)
        })
    }

    /// Resolves `image` to the manifests, config and layer list for `platform`, storing the
    /// manifests and config in the cache. Layers are left to [`download`].
    pub fn resolve(&self, image: &ImageRef, platform: &Platform, cache: &Cache) -> Result<Tree> {
        let name = image.normalized();
        let repo = image.path.as_str();
        let reference = image
            .digest
            .clone()
            .or_else(|| image.effective_tag().map(str::to_string))
            .unwrap_or_else(|| "latest".into());
        let (body, ctype) = self
            .manifest(repo, &reference)
            .map_err(|e| not_found(e, &name, &self.domain))?;
        let parsed = oci::parse_manifest(&name, &body, ctype.as_deref())?;
        let media_type = match &parsed {
            Parsed::Index { media_type, .. } | Parsed::Manifest { media_type, .. } => {
                media_type.clone()
            }
        };
        let top = Descriptor::new(&media_type, oci::sha256_digest(&body), body.len() as u64);
        cache.put_bytes(&name, &top.digest, &body)?;
        let mut fetch = |d: &Descriptor, limit: u64| -> Result<Vec<u8>> {
            if cache.has(d) {
                let data = cache.read_blob(&d.digest, &d.digest, limit)?;
                if oci::sha256_digest(&data) == d.digest {
                    return Ok(data);
                }
            }
            let data = if oci::is_index_type(&d.media_type) || oci::is_manifest_type(&d.media_type)
            {
                self.manifest(repo, &d.digest)?.0
            } else {
                self.small_blob(repo, d, limit)?
            };
            cache.put_bytes(&format!("{name} {}", d.digest), &d.digest, &data)?;
            Ok(data)
        };
        resolve_tree(&name, &top, &body, platform, &mut fetch)
    }
}

fn not_found(e: ImagesError, image: &str, domain: &str) -> ImagesError {
    match e {
        ImagesError::Http {
            status: 404,
            message,
            ..
        } => ImagesError::NotFound {
            image: image.to_string(),
            message: format!("not found in registry {domain}{message}"),
        },
        e => e,
    }
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

/// Reads what is left of an answer, so its connection can serve the next request.
fn drain(resp: ureq::Response) {
    let _ = std::io::copy(&mut resp.into_reader().take(1 << 20), &mut std::io::sink());
}

struct Counted<'a, R> {
    inner: R,
    bar: &'a indicatif::ProgressBar,
    n: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn read_body(resp: ureq::Response, url: &str, limit: u64) -> Result<Vec<u8>> {
    let mut data = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut data)
        .map_err(|e| ImagesError::Read {
            what: url.to_string(),
            message: e.to_string(),
        })?;
    if data.len() as u64 > limit {
        return Err(ImagesError::invalid(
            url,
            format!("the answer is larger than the limit of {limit} bytes"),
        ));
    }
    Ok(data)
}

/// The registry's own words for an error (`{"errors":[{"code":..,"message":..}]}`), if any.
fn error_detail(resp: ureq::Response) -> String {
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        #[serde(default)]
        errors: Vec<E>,
    }
    let mut body = Vec::new();
    let _ = resp.into_reader().take(64 << 10).read_to_end(&mut body);
    match serde_json::from_slice::<Es>(&body) {
        Ok(es) if !es.errors.is_empty() => {
            let parts: Vec<String> = es
                .errors
                .iter()
                .map(|e| {
                    if e.message.is_empty() {
                        e.code.clone()
                    } else {
                        format!("{}: {}", e.code, e.message)
                    }
                })
                .collect();
            format!(" ({})", parts.join("; "))
        }
        _ => String::new(),
    }
}

fn transport_error(url: &str, t: &ureq::Transport, more_schemes: bool) -> ImagesError {
    let mut message = t.to_string();
    if more_schemes {
        message.push_str(" (trying plain HTTP next)");
    }
    ImagesError::Connect {
        url: url.to_string(),
        message,
    }
}

fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A blob to download: which registry and repository has it.
pub struct Job {
    pub registry: Arc<Registry>,
    pub repo: String,
    pub image: String,
    pub blob: Descriptor,
}

/// Downloads `jobs` into the cache, `parallel` at a time, with a progress bar on a terminal.
/// The first failure stops the others from starting new downloads and is returned.
pub fn download(jobs: Vec<Job>, cache: &Cache, parallel: usize, show: bool) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    let total: u64 = jobs.iter().map(|j| j.blob.size).sum();
    let bar = if show && std::io::stderr().is_terminal() {
        let b = indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        );
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_message(format!("pulling {} layers", jobs.len()));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let queue = Mutex::new(jobs.into_iter().collect::<std::collections::VecDeque<_>>());
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<ImagesError>> = Mutex::new(None);
    let workers = parallel.clamp(1, 16);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let job = match queue.lock() {
                    Ok(mut q) => q.pop_front(),
                    Err(_) => None,
                };
                let Some(job) = job else { return };
                if let Err(e) = job
                    .registry
                    .blob_to_cache(&job.repo, &job.blob, cache, &bar)
                {
                    failed.store(true, Ordering::SeqCst);
                    if let Ok(mut fe) = first_error.lock() {
                        fe.get_or_insert(e.for_image(&job.image));
                    }
                    return;
                }
            });
        }
    });
    bar.finish_and_clear();
    match first_error.into_inner() {
        Ok(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

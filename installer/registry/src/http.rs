//! The read-only OCI distribution API: routing, lookups and responses.
//!
//! Everything taken from the request is checked against the grammar in [`names`] before it is
//! used; anything that is not GET or HEAD is refused with 405, since the bundle cannot change.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};

use super::auth::Auth;
use super::body::{BlobStream, Body};
use super::error::{ApiError, Code};
use super::index::{Lookup, Registry, Repository};
use super::names::{self, Digest};
use super::server;

pub const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");
pub const CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");

/// What one request was, for whoever embeds the server (the log says the same).
#[derive(Debug, Clone)]
pub struct RequestRecord {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
}

pub type RequestHook = Arc<dyn Fn(&RequestRecord) + Send + Sync>;

pub(crate) struct State {
    pub registry: Arc<Registry>,
    pub auth: Option<Arc<Auth>>,
    pub hook: Option<RequestHook>,
}

pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let head = req.method() == Method::HEAD;
    let mut resp = match check_framing(&req) {
        Ok(()) => match respond(&state, &req, peer).await {
            Ok(r) => r,
            Err(e) => error_response(&state, &e, head),
        },
        Err(e) => {
            let mut resp = error_response(&state, &e, head);
            // Whatever follows on this connection cannot be told apart from this request's
            // body: end it (RFC 9112 §6.1).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    let status = resp.status().as_u16();
    let len = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::debug!(
        "{peer} {} {} {status} {len} {}ms",
        req.method(),
        req.uri(),
        started.elapsed().as_millis()
    );
    if let Some(hook) = &state.hook {
        hook(&RequestRecord {
            peer,
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().map(str::to_string),
            status,
        });
    }
    Ok(resp)
}

/// Refuses what RFC 9112 says a server must refuse, and what lets a proxy in front of us and
/// this server disagree on where a request ends (request smuggling): an HTTP/1.1 request
/// without exactly one `Host` (§3.2), and a request with both `Content-Length` and
/// `Transfer-Encoding` (§6.1). hyper drops the `Content-Length` of such a request before we see
/// it, so every request with a `Transfer-Encoding` is refused: a read-only registry takes no
/// request bodies, and no client of it sends a chunked one.
fn check_framing(req: &Request<Incoming>) -> Result<(), ApiError> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 || (hosts == 0 && req.version() >= Version::HTTP_11) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::Unsupported,
            format!("an HTTP/1.1 request needs exactly one Host header; this one has {hosts}"),
        ));
    }
    if req.headers().contains_key(header::TRANSFER_ENCODING) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::Unsupported,
            "this registry takes no request bodies: Transfer-Encoding is refused (with a \
             Content-Length too, the request would have no single length)",
        ));
    }
    Ok(())
}

async fn respond(
    state: &State,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, ApiError> {
    if let Some(auth) = &state.auth {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes);
        if !auth.check(given, server::peer_key(peer.ip())).await {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                Code::Unauthorized,
                "authentication required",
            ));
        }
    }
    let path = req.uri().path();
    let rest = match path.strip_prefix("/v2") {
        Some("") => "",
        Some(r) if r.starts_with('/') => &r[1..],
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                Code::Unsupported,
                "not a registry API path (they start with /v2/)",
            ))
        }
    };
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        ref m => {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unsupported,
                format!("this registry serves a bundle and is read-only: {m} is not supported"),
            ))
        }
    };
    let query = parse_query(req.uri().query());
    let reg = &state.registry;
    if rest.is_empty() {
        return Ok(json(StatusCode::OK, b"{}".to_vec(), head));
    }
    if rest == "_catalog" {
        let names: Vec<&str> = reg.repository_names().collect();
        let (page, next) = paginate(&names, &query)?;
        let body = serde_json::json!({ "repositories": page }).to_string();
        let mut resp = json(StatusCode::OK, body.into_bytes(), head);
        if let Some((n, last)) = next {
            add_link(&mut resp, format!("/v2/_catalog?n={n}&last={last}"));
        }
        return Ok(resp);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        let ns = check_ns(&query)?;
        let (_, repo) = resolve(reg, name, ns, Wants::Repository)?;
        let tags: Vec<&str> = repo.tags.keys().map(String::as_str).collect();
        let (page, next) = paginate(&tags, &query)?;
        let body = serde_json::json!({ "name": name, "tags": page }).to_string();
        let mut resp = json(StatusCode::OK, body.into_bytes(), head);
        if let Some((n, last)) = next {
            let ns = ns.map(|ns| format!("&ns={ns}")).unwrap_or_default();
            add_link(
                &mut resp,
                format!("/v2/{name}/tags/list?n={n}&last={last}{ns}"),
            );
        }
        return Ok(resp);
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return manifest(reg, name, reference, check_ns(&query)?, head);
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        if digest == "uploads" || digest.starts_with("uploads/") {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unsupported,
                "this registry serves a bundle and is read-only: uploads are not supported",
            ));
        }
        let range = req.headers().get(header::RANGE);
        return blob(reg, name, digest, check_ns(&query)?, range, head);
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        Code::Unsupported,
        "unknown registry API path",
    ))
}

fn manifest(
    reg: &Registry,
    name: &str,
    reference: &str,
    ns: Option<&str>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    check_name(name)?;
    let by_digest = if reference.contains(':') {
        Some(parse_digest(reference)?)
    } else if names::is_tag(reference) {
        None
    } else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!("{reference:?} is neither a valid tag nor a sha256 digest"),
        ));
    };
    let wants = match &by_digest {
        Some(d) => Wants::Manifest(d),
        None => Wants::Tag(reference),
    };
    let (full, repo) = resolve(reg, name, ns, wants)?;
    let unknown = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            Code::ManifestUnknown,
            format!("manifest {reference} is not in this bundle for {full}"),
        )
    };
    let digest = match by_digest {
        Some(d) if repo.manifests.contains(&d) => d,
        Some(_) => return Err(unknown()),
        None => *repo.tags.get(reference).ok_or_else(unknown)?,
    };
    let m = reg.manifest(&digest).ok_or_else(unknown)?;
    let mut resp = Response::new(if head {
        Body::Empty
    } else {
        Body::full(m.bytes.clone())
    });
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(&m.media_type) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(m.bytes.len()));
    digest_headers(h, &digest);
    Ok(resp)
}

fn blob(
    reg: &Registry,
    name: &str,
    digest: &str,
    ns: Option<&str>,
    range: Option<&HeaderValue>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    check_name(name)?;
    let d = parse_digest(digest)?;
    let (full, repo) = resolve(reg, name, ns, Wants::Blob(&d))?;
    let loc = repo
        .blobs
        .contains(&d)
        .then(|| reg.blob(&d))
        .flatten()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                Code::BlobUnknown,
                format!("blob {digest} is not in this bundle for {full}"),
            )
        })?;
    // Range applies to GET only (RFC 9110 §14.2).
    let wanted = match range {
        Some(r) if !head => parse_range(r.as_bytes(), loc.len),
        _ => RangeRequest::Whole,
    };
    let (status, start, len) = match wanted {
        RangeRequest::Whole => (StatusCode::OK, 0, loc.len),
        RangeRequest::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeRequest::Unsatisfiable => {
            let e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Code::Unsupported,
                format!("range not satisfiable for a blob of {} bytes", loc.len),
            );
            let mut resp = Response::new(Body::full(e.body()));
            *resp.status_mut() = e.status;
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(e.body().len()));
            h.insert(
                header::CONTENT_RANGE,
                header_value(format!("bytes */{}", loc.len)),
            );
            return Ok(resp);
        }
    };
    let body = if head || len == 0 {
        Body::Empty
    } else {
        Body::Blob(BlobStream::new(
            reg.file().clone(),
            loc.offset + start,
            len,
            names::digest_string(&d),
        ))
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if status == StatusCode::PARTIAL_CONTENT {
        h.insert(
            header::CONTENT_RANGE,
            header_value(format!("bytes {start}-{}/{}", start + len - 1, loc.len)),
        );
    }
    digest_headers(h, &d);
    Ok(resp)
}

fn digest_headers(h: &mut hyper::HeaderMap, d: &Digest) {
    let s = names::digest_string(d);
    h.insert(header::ETAG, header_value(format!("\"{s}\"")));
    h.insert(CONTENT_DIGEST, header_value(s));
}

/// Values built here from checked digests and numbers are always valid header text.
fn header_value(s: String) -> HeaderValue {
    HeaderValue::try_from(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if names::is_repository_name(name) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::NameInvalid,
            "invalid repository name",
        ))
    }
}

fn check_ns(query: &HashMap<String, String>) -> Result<Option<&str>, ApiError> {
    match query.get("ns") {
        None => Ok(None),
        Some(ns) if names::is_host(ns) => Ok(Some(ns.as_str())),
        Some(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::NameInvalid,
            "the ns parameter is not a registry host name",
        )),
    }
}

fn parse_digest(s: &str) -> Result<Digest, ApiError> {
    names::parse_digest(s).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::DigestInvalid,
            "invalid digest: expected sha256: and 64 lowercase hex digits",
        )
    })
}

/// What a request wants from the repository it names; it settles a name without its host that
/// several repositories share (podman and Docker ask a mirror without `?ns=`).
enum Wants<'a> {
    /// The repository itself (tags list): a shared short name stays ambiguous.
    Repository,
    Tag(&'a str),
    Manifest(&'a Digest),
    Blob(&'a Digest),
}

impl Wants<'_> {
    fn held_by(&self, repo: &Repository) -> bool {
        match self {
            Wants::Repository => false,
            Wants::Tag(t) => repo.tags.contains_key(*t),
            Wants::Manifest(d) => repo.manifests.contains(*d),
            Wants::Blob(d) => repo.blobs.contains(*d),
        }
    }

    fn describe(&self) -> String {
        match self {
            Wants::Repository => "the repository".into(),
            Wants::Tag(t) => (*t).to_string(),
            Wants::Manifest(d) | Wants::Blob(d) => names::digest_string(d),
        }
    }

    /// The digest the answer would carry from `repo`: repositories that give the same bytes
    /// are as good as one.
    fn answer_in(&self, repo: &Repository) -> Option<Digest> {
        match self {
            Wants::Repository => None,
            Wants::Tag(t) => repo.tags.get(*t).copied(),
            Wants::Manifest(d) | Wants::Blob(d) => Some(**d),
        }
    }
}

/// Of the repositories a short name matches, the one to answer from: those that hold what is
/// wanted must all give the same bytes, else the name stays ambiguous.
fn settle<'r>(
    candidates: impl Iterator<Item = (&'r str, &'r Repository)>,
    wants: &Wants<'_>,
) -> Option<(&'r str, &'r Repository)> {
    let holding: Vec<(&'r str, &'r Repository)> =
        candidates.filter(|(_, r)| wants.held_by(r)).collect();
    let first = holding.first()?;
    let answer = wants.answer_in(first.1);
    holding
        .iter()
        .all(|(_, r)| wants.answer_in(r) == answer)
        .then_some(*first)
}

fn resolve<'r>(
    reg: &'r Registry,
    name: &str,
    ns: Option<&str>,
    wants: Wants<'_>,
) -> Result<(&'r str, &'r Repository), ApiError> {
    check_name(name)?;
    match reg.lookup(name, ns) {
        Lookup::Found(full, repo) => Ok((full, repo)),
        Lookup::Unknown => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            Code::NameUnknown,
            match ns {
                Some(ns) => format!("repository {ns}/{name} is not in this bundle"),
                None => format!("repository {name} is not in this bundle"),
            },
        )),
        Lookup::Ambiguous(all) => {
            let candidates: Vec<(&str, &Repository)> = all
                .iter()
                .filter_map(|full| match reg.lookup(full, None) {
                    Lookup::Found(f, r) => Some((f, r)),
                    _ => None,
                })
                .collect();
            let held_by_none = || !candidates.iter().any(|(_, r)| wants.held_by(r));
            match settle(candidates.iter().copied(), &wants) {
                Some(found) => Ok(found),
                None if !matches!(wants, Wants::Repository) && held_by_none() => {
                    let (code, what) = match wants {
                        Wants::Blob(_) => (Code::BlobUnknown, "blob"),
                        _ => (Code::ManifestUnknown, "manifest"),
                    };
                    Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        code,
                        format!(
                            "{what} {} is not in this bundle for any of {}",
                            wants.describe(),
                            all.join(", ")
                        ),
                    ))
                }
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    Code::NameUnknown,
                    format!(
                        "repository name {name} is ambiguous: it matches {}; ask for the full \
                         name (with its registry host) or pass ?ns=HOST",
                        all.join(", ")
                    ),
                )),
            }
        }
    }
}

fn json(status: StatusCode, body: Vec<u8>, head: bool) -> Response<Body> {
    let len = body.len();
    let mut resp = Response::new(if head { Body::Empty } else { Body::full(body) });
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

fn error_response(state: &State, e: &ApiError, head: bool) -> Response<Body> {
    let mut resp = json(e.status, e.body(), head);
    let h = resp.headers_mut();
    match e.status {
        StatusCode::UNAUTHORIZED => {
            let realm = state.auth.as_ref().map_or("bale registry", |a| a.realm());
            h.insert(
                header::WWW_AUTHENTICATE,
                header_value(format!("Basic realm=\"{realm}\"")),
            );
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        _ => {}
    }
    resp
}

fn add_link(resp: &mut Response<Body>, target: String) {
    resp.headers_mut().insert(
        header::LINK,
        header_value(format!("<{target}>; rel=\"next\"")),
    );
}

/// A page of a listing, and the `(n, last)` that asks for the next one when there is one.
type Page<'a> = (Vec<&'a str>, Option<(usize, &'a str)>);

/// One page of a sorted list after `last`, at most `n` long.
fn paginate<'a>(all: &[&'a str], query: &HashMap<String, String>) -> Result<Page<'a>, ApiError> {
    let after: Vec<&str> = match query.get("last") {
        Some(last) => all.iter().copied().filter(|s| *s > last.as_str()).collect(),
        None => all.to_vec(),
    };
    let Some(n) = query.get("n") else {
        return Ok((after, None));
    };
    let n: usize = n.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            Code::PaginationNumberInvalid,
            "n must be a non-negative integer",
        )
    })?;
    if after.len() <= n {
        return Ok((after, None));
    }
    let page = after[..n].to_vec();
    let next = page.last().map(|l| (n, *l));
    Ok((page, next))
}

pub(crate) enum RangeRequest {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range. Other units and multi-range requests are ignored (the whole blob is
/// sent, as RFC 9110 allows); a malformed or out-of-bounds byte range is unsatisfiable.
pub(crate) fn parse_range(h: &[u8], len: u64) -> RangeRequest {
    let Ok(h) = std::str::from_utf8(h) else {
        return RangeRequest::Unsatisfiable;
    };
    let h = h.trim();
    let Some(spec) = h
        .get(..6)
        .filter(|u| u.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
    else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Unsatisfiable;
    };
    if a.trim().is_empty() {
        return match num(b) {
            Some(n) if n > 0 && len > 0 => RangeRequest::Part(len - n.min(len), len - 1),
            _ => RangeRequest::Unsatisfiable,
        };
    }
    let Some(start) = num(a) else {
        return RangeRequest::Unsatisfiable;
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    let end = if b.trim().is_empty() {
        len - 1
    } else {
        match num(b) {
            Some(e) if e >= start => e.min(len - 1),
            _ => return RangeRequest::Unsatisfiable,
        }
    };
    RangeRequest::Part(start, end)
}

/// `a=b&c=d`, percent-decoded; a key given twice keeps its first value.
fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(percent_decode(k))
            .or_insert_with(|| percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(h: &str, len: u64) -> Option<(u64, u64)> {
        match parse_range(h.as_bytes(), len) {
            RangeRequest::Whole => Some((0, u64::MAX)),
            RangeRequest::Part(a, b) => Some((a, b)),
            RangeRequest::Unsatisfiable => None,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(r("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(r("bytes=90-", 100), Some((90, 99)));
        assert_eq!(r("bytes=90-1000", 100), Some((90, 99)));
        assert_eq!(r("bytes=-10", 100), Some((90, 99)));
        assert_eq!(r("bytes=-1000", 100), Some((0, 99)));
        assert_eq!(r("BYTES=1-1", 100), Some((1, 1)));
        assert_eq!(r("items=0-1", 100), Some((0, u64::MAX)));
        assert_eq!(r("bytes=0-1,5-6", 100), Some((0, u64::MAX)));
        for bad in [
            "bytes=100-",
            "bytes=5-4",
            "bytes=-0",
            "bytes=abc",
            "bytes=+1-2",
            "bytes=-",
            "bytes=1",
        ] {
            assert_eq!(r(bad, 100), None, "{bad}");
        }
        assert_eq!(r("bytes=0-", 0), None);
        assert_eq!(r("bytes=-5", 0), None);
    }

    #[test]
    fn pagination() {
        let all = ["a", "b", "c", "d"];
        let q = |s: &str| parse_query(Some(s));
        assert_eq!(paginate(&all, &q("")).unwrap(), (all.to_vec(), None));
        assert_eq!(
            paginate(&all, &q("n=2")).unwrap(),
            (vec!["a", "b"], Some((2, "b")))
        );
        assert_eq!(
            paginate(&all, &q("n=2&last=b")).unwrap(),
            (vec!["c", "d"], None)
        );
        assert_eq!(paginate(&all, &q("last=c")).unwrap(), (vec!["d"], None));
        assert!(paginate(&all, &q("n=x")).is_err());
        assert!(paginate(&all, &q("n=-1")).is_err());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("ns=docker.io&last=a%2Fb&x&ns=other"));
        assert_eq!(q["ns"], "docker.io");
        assert_eq!(q["last"], "a/b");
        assert_eq!(q["x"], "");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    fn repo(tags: &[(&str, u8)], blobs: &[u8]) -> Repository {
        Repository {
            tags: tags
                .iter()
                .map(|(t, d)| (t.to_string(), [*d; 32]))
                .collect(),
            manifests: tags.iter().map(|(_, d)| [*d; 32]).collect(),
            blobs: blobs.iter().map(|d| [*d; 32]).collect(),
        }
    }

    #[test]
    fn a_shared_short_name_settles_on_the_repositories_holding_the_same_bytes() {
        let docker = repo(&[("1.36", 1), ("latest", 1), ("edge", 2)], &[1, 2, 9]);
        let quay = repo(&[("1.36", 1), ("edge", 3)], &[1, 3, 9]);
        let both = || [("docker.io/x", &docker), ("quay.io/x", &quay)].into_iter();
        let name = |w: Wants<'_>| settle(both(), &w).map(|(n, _)| n);
        // one holder, or several giving the same bytes: answered
        assert_eq!(name(Wants::Tag("latest")), Some("docker.io/x"));
        assert_eq!(name(Wants::Tag("1.36")), Some("docker.io/x"));
        assert_eq!(name(Wants::Manifest(&[3; 32])), Some("quay.io/x"));
        assert_eq!(name(Wants::Blob(&[9; 32])), Some("docker.io/x"));
        // the same tag naming other bytes, a listing, or nobody holding it: refused
        assert_eq!(name(Wants::Tag("edge")), None);
        assert_eq!(name(Wants::Repository), None);
        assert_eq!(name(Wants::Tag("nope")), None);
        assert_eq!(name(Wants::Blob(&[7; 32])), None);
    }
}

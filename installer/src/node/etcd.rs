//! The etcd members of a kubeadm control plane, as seen from one of its masters: list them and
//! remove those of hosts that were deleted without a reset of their own (a dead master never
//! runs `kubeadm reset phase remove-etcd-member`, and its member would keep counting against
//! quorum for ever).
//!
//! The client speaks etcd's gRPC API (`etcdserverpb.Cluster`) to the local member at
//! `https://127.0.0.1:2379` with the certificate kubeadm made for etcd's health check, the
//! same way the kubelet's probe reaches it. That needs nothing from the etcd image: the images
//! of bale's Kubernetes base carry the `etcd` binary alone (no `etcdctl`, no shell), so
//! `crictl exec … etcdctl` would only work with upstream images. As in [`super::cri`], the
//! messages are declared by hand with the fields bale reads (field numbers from etcd's
//! `api/etcdserverpb/rpc.proto`); tonic bounds every decoded answer at 4 MiB.
//!
//! Matching is by the host of a member's peer URLs, never by name: a member that was added but
//! never started has no name yet, and kubeadm names members after hostnames, which the
//! installer does not know. The member that answers (the one on this host) is never removed.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::cri::{CallError, ConnectFailure};
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls::{self, pki_types};
use tonic::transport::{Endpoint, Uri};

/// Where kubeadm's stacked etcd listens for clients on every master.
const CLIENT_ADDR: (&str, u16) = ("127.0.0.1", 2379);
const ENDPOINT: &str = "https://127.0.0.1:2379";
pub const CA_CERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
pub const CLIENT_CERT: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.crt";
pub const CLIENT_KEY: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.key";
/// The member list and a removal are answered at once by a healthy cluster; a removal that
/// waits longer has no quorum.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const MEMBER_LIST: &str = "/etcdserverpb.Cluster/MemberList";
const MEMBER_REMOVE: &str = "/etcdserverpb.Cluster/MemberRemove";

/// `ResponseHeader`: only who answered.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}

/// `Member`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Member {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Empty until the member has started once.
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, repeated, tag = "3")]
    pub peer_urls: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub client_urls: Vec<String>,
    #[prost(bool, tag = "5")]
    pub is_learner: bool,
}

/// `MemberListRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListRequest {
    /// Asked through the leader, so a member that was just removed elsewhere is not listed.
    #[prost(bool, tag = "1")]
    pub linearizable: bool,
}

/// `MemberListResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberListResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub members: Vec<Member>,
}

/// `MemberRemoveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

/// `MemberRemoveResponse`: the members left are not read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemberRemoveResponse {}

/// Why the members could not be listed or removed; each names the call and the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd client certificate {}", path.display())]
    Pem {
        path: PathBuf,
        source: pki_types::pem::Error,
    },
    #[error("etcd client TLS setup")]
    Tls(#[from] rustls::Error),
    #[error("etcd {call} at {ENDPOINT}: cannot connect: {reason}; is the etcd static pod running? (crictl ps --name etcd)")]
    Connect { call: &'static str, reason: String },
    #[error(
        "etcd {call} at {ENDPOINT}: no answer within {secs}s: the cluster may have lost quorum"
    )]
    Timeout { call: &'static str, secs: u64 },
    #[error("etcd {call} at {ENDPOINT} failed: {message} ({code:?})")]
    Call {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("cannot start the etcd client's async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The members, and the ID of the member that answered (this host's).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberList {
    pub local_id: u64,
    pub members: Vec<Member>,
}

/// The host of a peer URL (`https://10.0.0.3:2380`, `https://[fd00::3]:2380`), brackets off.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(authority.split(':').next().unwrap_or(authority)).filter(|h| !h.is_empty())
}

/// True when `host` is `address`: as IP addresses when both are (`fd00::3` is `fd00:0::3`),
/// as text otherwise.
fn same_host(host: &str, address: &str) -> bool {
    let address = address.trim_start_matches('[').trim_end_matches(']');
    match (host.parse::<IpAddr>(), address.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => host.eq_ignore_ascii_case(address),
    }
}

/// The members to remove for `addresses`: those with a peer URL on one of them, never the
/// member that answered the list (the one of the host this runs on).
pub fn members_of<'a>(list: &'a MemberList, addresses: &[String]) -> Vec<&'a Member> {
    list.members
        .iter()
        .filter(|m| m.id != list.local_id)
        .filter(|m| {
            m.peer_urls
                .iter()
                .filter_map(|u| url_host(u))
                .any(|h| addresses.iter().any(|a| same_host(h, a)))
        })
        .collect()
}

/// Where the member of one host stands in the cluster, as a master's join goes on: added as a
/// learner, promoted to a voter once in step with the leader, named once it has started and
/// published itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Absent,
    Learner,
    /// A voter that has not started yet (added as a voter outright, without learner mode).
    UnstartedVoter,
    Voter,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Absent => "absent",
            Standing::Learner => "learner",
            Standing::UnstartedVoter => "unstarted-voter",
            Standing::Voter => "voter",
        }
    }

    pub fn parse(s: &str) -> Option<Standing> {
        [
            Standing::Absent,
            Standing::Learner,
            Standing::UnstartedVoter,
            Standing::Voter,
        ]
        .into_iter()
        .find(|st| st.as_str() == s.trim())
    }
}

/// The standing of the member with a peer URL on `address`.
pub fn standing(list: &MemberList, address: &str) -> Standing {
    let Some(m) = list.members.iter().find(|m| {
        m.peer_urls
            .iter()
            .filter_map(|u| url_host(u))
            .any(|h| same_host(h, address))
    }) else {
        return Standing::Absent;
    };
    match (m.is_learner, m.name.is_empty()) {
        (true, _) => Standing::Learner,
        (false, true) => Standing::UnstartedVoter,
        (false, false) => Standing::Voter,
    }
}

/// How a member is shown: its name, or what it is while it has none.
pub fn describe(m: &Member) -> String {
    let name = if m.name.is_empty() {
        "(unstarted)"
    } else {
        &m.name
    };
    let learner = if m.is_learner { ", learner" } else { "" };
    format!("{name} {:x} ({}{learner})", m.id, m.peer_urls.join(","))
}

/// True when this host runs kubeadm's stacked etcd (its client certificate is here).
pub fn local_etcd() -> bool {
    Path::new(CLIENT_CERT).exists() && Path::new(CLIENT_KEY).exists()
}

/// `Cluster/MemberList`, linearizable.
pub fn member_list() -> Result<MemberList, EtcdError> {
    let r: MemberListResponse = unary(
        MEMBER_LIST,
        "MemberList",
        MemberListRequest { linearizable: true },
    )?;
    Ok(MemberList {
        local_id: r.header.map_or(0, |h| h.member_id),
        members: r.members,
    })
}

/// `Cluster/MemberRemove`; `Ok(false)` when the member was already gone.
pub fn member_remove(id: u64) -> Result<bool, EtcdError> {
    match unary::<_, MemberRemoveResponse>(
        MEMBER_REMOVE,
        "MemberRemove",
        MemberRemoveRequest { id },
    ) {
        Ok(_) => Ok(true),
        Err(EtcdError::Call {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

fn tls_config() -> Result<rustls::ClientConfig, EtcdError> {
    use pki_types::pem::PemObject;
    let pem = |path: &str| {
        let path = PathBuf::from(path);
        move |source| EtcdError::Pem { path, source }
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in pki_types::CertificateDer::pem_file_iter(CA_CERT).map_err(pem(CA_CERT))? {
        roots.add(cert.map_err(pem(CA_CERT))?)?;
    }
    let chain = pki_types::CertificateDer::pem_file_iter(CLIENT_CERT)
        .map_err(pem(CLIENT_CERT))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem(CLIENT_CERT))?;
    let key = pki_types::PrivateKeyDer::from_pem_file(CLIENT_KEY).map_err(pem(CLIENT_KEY))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    // gRPC is HTTP/2, which etcd's TLS listener picks by ALPN.
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// One unary call to the local member, over TLS with the health-check client certificate.
fn unary<Req, Resp>(path: &'static str, call: &'static str, req: Req) -> Result<Resp, EtcdError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config()?));
    let connect = || async move {
        Endpoint::from_static("http://127.0.0.1:2379")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(CLIENT_ADDR).await?;
                    let name =
                        pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
    };
    let timeout = EtcdError::Timeout {
        call,
        secs: CALL_TIMEOUT.as_secs(),
    };
    super::cri::unary_call(connect, path, CALL_TIMEOUT, req).map_err(|e| match e {
        CallError::Connect(ConnectFailure::Connect(e) | ConnectFailure::NotReady(e)) => {
            EtcdError::Connect {
                call,
                reason: super::cri::error_chain(&e),
            }
        }
        CallError::Runtime(e) => EtcdError::Runtime(e),
        CallError::Timeout => timeout,
        CallError::Status(s) => match s.code() {
            tonic::Code::DeadlineExceeded => timeout,
            code => EtcdError::Call {
                call,
                code,
                message: s.message().to_string(),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str, peers: &[&str], learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: peers.iter().map(|p| p.to_string()).collect(),
            client_urls: if name.is_empty() {
                vec![]
            } else {
                vec![format!(
                    "https://{}",
                    peers[0].trim_start_matches("https://")
                )]
            },
            is_learner: learner,
        }
    }

    fn list() -> MemberList {
        MemberList {
            local_id: 1,
            members: vec![
                member(1, "n1", &["https://10.0.0.1:2380"], false),
                member(2, "n2", &["https://10.0.0.2:2380"], false),
                member(
                    3,
                    "n3",
                    &["https://10.0.0.30:2380", "https://10.0.0.3:2380"],
                    false,
                ),
                member(4, "n4", &["https://[fd00::4]:2380"], true),
                member(5, "", &["https://10.0.0.5:2380"], false),
            ],
        }
    }

    #[test]
    fn a_member_stands_by_its_peer_host() {
        let l = list();
        assert_eq!(standing(&l, "10.0.0.2"), Standing::Voter);
        assert_eq!(standing(&l, "10.0.0.3"), Standing::Voter);
        assert_eq!(standing(&l, "fd00:0::4"), Standing::Learner);
        assert_eq!(standing(&l, "10.0.0.5"), Standing::UnstartedVoter);
        assert_eq!(standing(&l, "10.0.0.9"), Standing::Absent);
        for st in [
            Standing::Absent,
            Standing::Learner,
            Standing::UnstartedVoter,
            Standing::Voter,
        ] {
            assert_eq!(Standing::parse(&format!("{}\n", st.as_str())), Some(st));
        }
        assert_eq!(Standing::parse("voters"), None);
    }

    fn ids(addresses: &[&str]) -> Vec<u64> {
        let a: Vec<String> = addresses.iter().map(|s| s.to_string()).collect();
        members_of(&list(), &a).iter().map(|m| m.id).collect()
    }

    #[test]
    fn members_match_by_the_host_of_any_peer_url() {
        assert_eq!(ids(&["10.0.0.2"]), [2]);
        assert_eq!(ids(&["10.0.0.3"]), [3], "the second of several peer URLs");
        assert_eq!(ids(&["fd00:0:0::4"]), [4], "IPv6 in brackets, a learner");
        assert_eq!(ids(&["[fd00::4]"]), [4]);
        assert_eq!(ids(&["10.0.0.5"]), [5], "a member that never started");
        assert_eq!(ids(&["10.0.0.2", "10.0.0.5"]), [2, 5]);
    }

    #[test]
    fn nothing_is_removed_for_an_address_not_given() {
        assert!(ids(&[]).is_empty());
        assert!(ids(&["10.0.0.9"]).is_empty());
        // Neither a prefix nor a port-less look-alike matches.
        assert!(ids(&["10.0.0.30.1", "10.0.0"]).is_empty());
        assert!(ids(&["2380"]).is_empty());
    }

    #[test]
    fn the_member_that_answers_is_never_removed() {
        assert!(ids(&["10.0.0.1"]).is_empty());
    }

    #[test]
    fn peer_url_hosts() {
        assert_eq!(url_host("https://10.0.0.3:2380"), Some("10.0.0.3"));
        assert_eq!(url_host("https://[fd00::3]:2380"), Some("fd00::3"));
        assert_eq!(url_host("http://n3.example:2380/"), Some("n3.example"));
        assert_eq!(url_host("https://10.0.0.3"), Some("10.0.0.3"));
        assert_eq!(url_host("https://"), None);
        assert_eq!(url_host("https://[fd00::3"), None);
    }

    #[test]
    fn members_are_described_even_without_a_name() {
        assert_eq!(
            describe(&list().members[4]),
            "(unstarted) 5 (https://10.0.0.5:2380)"
        );
        assert_eq!(
            describe(&list().members[3]),
            "n4 4 (https://[fd00::4]:2380, learner)"
        );
    }

    #[test]
    fn an_answer_decodes_from_etcds_wire_format() {
        use prost::Message;
        // header {member_id: 7}, one member {ID: 3, name: "n3", peerURLs: [...], isLearner}.
        let url = b"https://10.0.0.3:2380";
        let mut m = vec![0x08, 0x03, 0x12, 0x02, b'n', b'3', 0x1a, url.len() as u8];
        m.extend_from_slice(url);
        m.extend_from_slice(&[0x28, 0x01]);
        let mut wire = vec![0x0a, 0x02, 0x10, 0x07, 0x12, m.len() as u8];
        wire.extend_from_slice(&m);
        let r = MemberListResponse::decode(wire.as_slice()).unwrap();
        assert_eq!(r.header, Some(ResponseHeader { member_id: 7 }));
        assert_eq!(
            r.members,
            [member(3, "n3", &["https://10.0.0.3:2380"], true)].map(|mut m| {
                m.client_urls.clear();
                m
            })
        );
    }
}

//! A minimal client of the Kubernetes CRI API (`runtime.v1`, the one kubelet speaks) over
//! containerd's unix socket: enough to ask the runtime's version, pull an image the way kubelet
//! does and tell whether an image is there.
//!
//! `ctr` reads the registry hosts files only when given `--hosts-dir`; kubelet's pulls go
//! through the CRI plugin, which reads them through `config_path`. Only a CRI call shows that
//! path works, and Debian ships no crictl, hence this client.
//!
//! The messages are declared here by hand with only the fields bale reads or sets, so no protoc
//! and no build script are needed; their field numbers are those of k8s.io/cri-api's
//! `pkg/apis/runtime/v1/api.proto` (protobuf decoders skip the fields left out). The rest of
//! the installer is synchronous: every call runs on a current-thread runtime of its own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tonic::transport::{Endpoint, Uri};

/// The CRI API version this client speaks (the protobuf package).
pub const API: &str = "runtime.v1";
/// What kubelet sends as its API version; containerd does not check it.
const KUBELET_API_VERSION: &str = "0.1.0";
/// A local socket connects at once or not at all; longer means a wedged containerd.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Version and image status are answered from memory.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// A pull fetches and unpacks every layer: generous, yet bounded.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(120);

const VERSION: &str = "/runtime.v1.RuntimeService/Version";
const PULL_IMAGE: &str = "/runtime.v1.ImageService/PullImage";
const IMAGE_STATUS: &str = "/runtime.v1.ImageService/ImageStatus";

/// `VersionRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionRequest {
    #[prost(string, tag = "1")]
    pub version: String,
}

/// `VersionResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    /// The kubelet API version the runtime answers to.
    #[prost(string, tag = "1")]
    pub version: String,
    #[prost(string, tag = "2")]
    pub runtime_name: String,
    #[prost(string, tag = "3")]
    pub runtime_version: String,
    #[prost(string, tag = "4")]
    pub runtime_api_version: String,
}

/// `ImageSpec`; annotations (2), user_specified_image (18) and runtime_handler (19) are left
/// out: kubelet leaves them empty for a plain pull too.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageSpec {
    #[prost(string, tag = "1")]
    pub image: String,
}

/// `PullImageRequest`; auth (2) is not needed for the node's own registry, and sandbox_config
/// (3) only matters for runtime handlers bale does not configure.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
}

/// `PullImageResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PullImageResponse {
    /// For containerd: the image id, the digest of the image's config.
    #[prost(string, tag = "1")]
    pub image_ref: String,
}

/// `ImageStatusRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusRequest {
    #[prost(message, optional, tag = "1")]
    pub image: Option<ImageSpec>,
    #[prost(bool, tag = "2")]
    pub verbose: bool,
}

/// `ImageStatusResponse`; `info` (2) is only filled for verbose requests.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageStatusResponse {
    /// Unset when the runtime does not have the image.
    #[prost(message, optional, tag = "1")]
    pub image: Option<Image>,
}

/// `Image`, its first four fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Image {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, repeated, tag = "2")]
    pub repo_tags: Vec<String>,
    /// `name@sha256:...` of the manifest (or index) the image was pulled by.
    #[prost(string, repeated, tag = "3")]
    pub repo_digests: Vec<String>,
    #[prost(uint64, tag = "4")]
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error(
        "{socket}: cannot connect to containerd's CRI socket: {reason}; is containerd running? \
         (systemctl status containerd; journalctl -u containerd)",
        socket = socket.display()
    )]
    Connect {
        socket: PathBuf,
        reason: ConnectFailure,
    },

    #[error(
        "{socket}: containerd answers but does not serve the CRI API {API} ({call}: {message}): \
         its CRI plugin is disabled or failed to load; remove \"cri\" from disabled_plugins in \
         its config.toml, look for the plugin's error in journalctl -u containerd, and restart \
         containerd",
        socket = socket.display()
    )]
    Unimplemented {
        socket: PathBuf,
        call: &'static str,
        message: String,
    },

    #[error(
        "{socket}: the CRI plugin could not pull {image}: {message} ({code:?}); check that this \
         node's bale registry runs (bale agent step registry check) and that containerd's \
         config_path holds a hosts.toml for the image's registry (bale agent step runtime check)",
        socket = socket.display()
    )]
    Pull {
        socket: PathBuf,
        image: String,
        code: tonic::Code,
        message: String,
    },

    #[error(
        "{socket}: CRI {call}{of} got no answer within {secs}s; containerd may be overloaded or \
         stuck (journalctl -u containerd)",
        socket = socket.display(),
        of = image.as_deref().map(|i| format!(" of {i}")).unwrap_or_default()
    )]
    Timeout {
        socket: PathBuf,
        call: &'static str,
        image: Option<String>,
        secs: u64,
    },

    #[error(
        "{socket}: CRI {call}{of} failed: {message} ({code:?})",
        socket = socket.display(),
        of = image.as_deref().map(|i| format!(" of {i}")).unwrap_or_default()
    )]
    Call {
        socket: PathBuf,
        call: &'static str,
        image: Option<String>,
        code: tonic::Code,
        message: String,
    },

    #[error("cannot start the CRI client's async runtime: {0}")]
    Runtime(std::io::Error),
}

impl CriError {
    /// The gRPC status code the runtime answered with, when it answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CriError::Unimplemented { .. } => Some(tonic::Code::Unimplemented),
            CriError::Pull { code, .. } | CriError::Call { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The runtime's answer to `Version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
    pub runtime_api_version: String,
}

/// A CRI endpoint; each call opens its own connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    socket: PathBuf,
    connect_timeout: Duration,
    call_timeout: Duration,
    pull_timeout: Duration,
}

impl CriClient {
    pub fn new(socket: impl Into<PathBuf>) -> CriClient {
        CriClient {
            socket: socket.into(),
            connect_timeout: CONNECT_TIMEOUT,
            call_timeout: CALL_TIMEOUT,
            pull_timeout: PULL_TIMEOUT,
        }
    }

    pub fn with_pull_timeout(mut self, t: Duration) -> CriClient {
        self.pull_timeout = t;
        self
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `RuntimeService/Version`.
    pub fn version(&self) -> Result<RuntimeVersion, CriError> {
        let req = VersionRequest {
            version: KUBELET_API_VERSION.into(),
        };
        let r: VersionResponse = self
            .unary(VERSION, self.call_timeout, req)
            .map_err(|e| self.status_error(e, "Version", None, self.call_timeout))?;
        Ok(RuntimeVersion {
            runtime_name: r.runtime_name,
            runtime_version: r.runtime_version,
            runtime_api_version: r.runtime_api_version,
        })
    }

    /// `ImageService/PullImage`, as kubelet calls it: the image lands in containerd's `k8s.io`
    /// namespace. Returns the runtime's image ref (for containerd the config digest).
    pub fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let req = PullImageRequest {
            image: Some(ImageSpec {
                image: image.into(),
            }),
        };
        let r: PullImageResponse = self
            .unary(PULL_IMAGE, self.pull_timeout, req)
            .map_err(|e| match e {
                CallError::Status(s)
                    if s.code() != tonic::Code::Unimplemented
                        && s.code() != tonic::Code::DeadlineExceeded =>
                {
                    CriError::Pull {
                        socket: self.socket.clone(),
                        image: image.into(),
                        code: s.code(),
                        message: s.message().to_string(),
                    }
                }
                e => self.status_error(e, "PullImage", Some(image), self.pull_timeout),
            })?;
        Ok(r.image_ref)
    }

    /// `ImageService/ImageStatus`: the image if the runtime has it, `None` if not.
    pub fn image_status(&self, image: &str) -> Result<Option<Image>, CriError> {
        let req = ImageStatusRequest {
            image: Some(ImageSpec {
                image: image.into(),
            }),
            verbose: false,
        };
        let r: ImageStatusResponse = self
            .unary(IMAGE_STATUS, self.call_timeout, req)
            .map_err(|e| self.status_error(e, "ImageStatus", Some(image), self.call_timeout))?;
        Ok(r.image)
    }

    fn status_error(
        &self,
        e: CallError,
        call: &'static str,
        image: Option<&str>,
        timeout: Duration,
    ) -> CriError {
        let socket = self.socket.clone();
        match e {
            CallError::Connect(reason) => CriError::Connect { socket, reason },
            CallError::Runtime(e) => CriError::Runtime(e),
            CallError::Timeout => CriError::Timeout {
                socket,
                call,
                image: image.map(str::to_string),
                secs: timeout.as_secs(),
            },
            CallError::Status(s) => match s.code() {
                tonic::Code::Unimplemented => CriError::Unimplemented {
                    socket,
                    call,
                    message: s.message().to_string(),
                },
                // The deadline sent along as grpc-timeout: containerd gave up first.
                tonic::Code::DeadlineExceeded => CriError::Timeout {
                    socket,
                    call,
                    image: image.map(str::to_string),
                    secs: timeout.as_secs(),
                },
                code => CriError::Call {
                    socket,
                    call,
                    image: image.map(str::to_string),
                    code,
                    message: s.message().to_string(),
                },
            },
        }
    }

    /// One unary call on a connection and a runtime of its own.
    fn unary<Req, Resp>(
        &self,
        path: &'static str,
        timeout: Duration,
        req: Req,
    ) -> Result<Resp, CallError>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        unary_call(|| self.connect(), path, timeout, req)
    }

    async fn connect(&self) -> Result<tonic::transport::Channel, tonic::transport::Error> {
        let socket = self.socket.clone();
        // The URI is a placeholder: the connector below ignores it, and gRPC over a unix
        // socket needs some authority for the HTTP/2 request.
        Endpoint::from_static("http://localhost")
            .connect_timeout(self.connect_timeout)
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(&socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
    }
}

/// One unary gRPC call on the channel `connect` opens, on a current-thread runtime of its own
/// (the installer is synchronous); shared by the CRI and etcd clients. `timeout` is sent as
/// grpc-timeout, so the server, too, stops working on a call given up; the local bound is a
/// little longer, so the server's own deadline answer (which says what it was doing) wins
/// when it comes.
pub(crate) fn unary_call<Req, Resp, C, F>(
    connect: C,
    path: &'static str,
    timeout: Duration,
    req: Req,
) -> Result<Resp, CallError>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
    C: FnOnce() -> F,
    F: std::future::Future<Output = Result<tonic::transport::Channel, tonic::transport::Error>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(CallError::Runtime)?;
    rt.block_on(async {
        let channel = connect()
            .await
            .map_err(|e| CallError::Connect(ConnectFailure::Connect(e)))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        let mut request = tonic::Request::new(req);
        request.set_timeout(timeout);
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| CallError::Connect(ConnectFailure::NotReady(e)))?;
            grpc.unary(
                request,
                http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<Req, Resp>::default(),
            )
            .await
            .map_err(CallError::Status)
        };
        match tokio::time::timeout(timeout + Duration::from_secs(2), call).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(CallError::Timeout),
        }
    })
}

pub(crate) enum CallError {
    Connect(ConnectFailure),
    Runtime(std::io::Error),
    Timeout,
    Status(tonic::Status),
}

/// Why containerd's CRI socket took no call. Shown inside [`CriError::Connect`]'s sentence
/// (the advice follows it), described for what it usually means rather than as tonic's chain.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The socket did not connect.
    Connect(tonic::transport::Error),
    /// The connection was made but would not take a call.
    NotReady(tonic::transport::Error),
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectFailure::Connect(e) => f.write_str(&connect_reason(e)),
            ConnectFailure::NotReady(e) => f.write_str(&error_chain(e)),
        }
    }
}

/// An error and its causes on one line (tonic's own message is only "transport error").
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Why the socket did not connect, with what it usually means.
fn connect_reason(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            let hint = match io.kind() {
                std::io::ErrorKind::NotFound => "no such socket",
                std::io::ErrorKind::ConnectionRefused => "nothing listens on it",
                std::io::ErrorKind::PermissionDenied => "permission denied (run as root)",
                std::io::ErrorKind::TimedOut => "timed out",
                _ => "",
            };
            return if hint.is_empty() {
                io.to_string()
            } else {
                format!("{hint} ({io})")
            };
        }
        cur = c.source();
    }
    error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn pull_request_encodes_as_api_proto_says() {
        let name = "docker.io/library/busybox:1.36";
        assert_eq!(name.len(), 30);
        let req = PullImageRequest {
            image: Some(ImageSpec { image: name.into() }),
        };
        // PullImageRequest.image = 1 (length-delimited: key 0x0a) holding ImageSpec.image = 1
        // (key 0x0a again), a 30-byte string.
        let mut want = vec![0x0a, 32, 0x0a, 30];
        want.extend_from_slice(name.as_bytes());
        assert_eq!(req.encode_to_vec(), want);

        let status = ImageStatusRequest {
            image: Some(ImageSpec { image: "a".into() }),
            verbose: true,
        };
        // verbose = 2, a varint: key 0x10.
        assert_eq!(status.encode_to_vec(), [0x0a, 3, 0x0a, 1, b'a', 0x10, 1]);
        let v = VersionRequest {
            version: "0.1.0".into(),
        };
        assert_eq!(v.encode_to_vec(), b"\x0a\x050.1.0");
    }

    #[test]
    fn responses_decode_and_skip_fields_not_declared() {
        let mut buf = Vec::new();
        for (tag, s) in [(1u8, "0.1.0"), (2, "containerd"), (3, "1.6.20"), (4, "v1")] {
            buf.push(tag << 3 | 2);
            buf.push(s.len() as u8);
            buf.extend_from_slice(s.as_bytes());
        }
        // An unknown varint field 9, as a newer runtime might send.
        buf.extend_from_slice(&[9 << 3, 42]);
        let v = VersionResponse::decode(buf.as_slice()).unwrap();
        assert_eq!(v.runtime_name, "containerd");
        assert_eq!(v.runtime_version, "1.6.20");
        assert_eq!(v.runtime_api_version, "v1");

        // ImageStatusResponse with no image, only an info map entry (field 2): absent.
        let info = [0x12, 6, 0x0a, 1, b'k', 0x12, 1, b'v'];
        let r = ImageStatusResponse::decode(info.as_slice()).unwrap();
        assert!(r.image.is_none());

        let img = Image {
            id: "sha256:ab".into(),
            repo_tags: vec!["docker.io/library/busybox:1.36".into()],
            repo_digests: vec!["docker.io/library/busybox@sha256:cd".into()],
            size: 1234,
        };
        let mut buf = ImageStatusResponse {
            image: Some(img.clone()),
        }
        .encode_to_vec();
        buf.extend_from_slice(&info);
        let r = ImageStatusResponse::decode(buf.as_slice()).unwrap();
        assert_eq!(r.image, Some(img));
        // size = 4 is a varint: 1234 = 0xd2 0x09.
        let enc = Image {
            size: 1234,
            ..Image::default()
        }
        .encode_to_vec();
        assert_eq!(enc, [0x20, 0xd2, 0x09]);

        // Garbage is an error, not a panic.
        assert!(PullImageResponse::decode([0x0a, 50, b'x'].as_slice()).is_err());
    }

    #[test]
    fn a_missing_socket_is_named_in_a_quick_error() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("none.sock");
        let start = std::time::Instant::now();
        let e = CriClient::new(&sock).version().unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        let text = e.to_string();
        assert!(matches!(e, CriError::Connect { .. }), "{text}");
        assert!(text.contains(&sock.display().to_string()), "{text}");
        assert!(text.contains("no such socket"), "{text}");
        assert!(text.contains("is containerd running?"), "{text}");
        assert_eq!(e.code(), None);

        // A socket file nobody listens on (a containerd that died).
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        drop(listener);
        let e = CriClient::new(&sock).pull_image("x").unwrap_err();
        assert!(e.to_string().contains("nothing listens on it"), "{e}");
    }

    #[test]
    fn errors_say_what_to_do() {
        let socket = PathBuf::from("/run/containerd/containerd.sock");
        let e = CriError::Pull {
            socket: socket.clone(),
            image: "docker.io/library/busybox:1.36".into(),
            code: tonic::Code::NotFound,
            message: "failed to resolve reference".into(),
        };
        let t = e.to_string();
        assert!(t.starts_with("/run/containerd/containerd.sock: the CRI plugin could not pull docker.io/library/busybox:1.36: failed to resolve reference"), "{t}");
        assert!(t.contains("hosts.toml"));
        let e = CriError::Unimplemented {
            socket: socket.clone(),
            call: "Version",
            message: "unknown service runtime.v1.RuntimeService".into(),
        };
        assert!(e.to_string().contains("disabled_plugins"), "{e}");
        let e = CriError::Timeout {
            socket,
            call: "PullImage",
            image: Some("a/b:c".into()),
            secs: 120,
        };
        assert!(
            e.to_string()
                .contains("CRI PullImage of a/b:c got no answer within 120s"),
            "{e}"
        );
    }
}

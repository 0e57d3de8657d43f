//! A deliberately small netlink message layer shared by the IPVS (generic
//! netlink) and VIP (rtnetlink) code.
//!
//! Why hand-written: bale ships as one static musl binary and lvscare only
//! needs a dozen message shapes. A builder with nesting, an attribute
//! iterator and a blocking request/ack loop cover them in a few hundred lines
//! that the unit tests pin down byte by byte, with no C library and no async
//! netlink runtime. Kernel round trips are sub-millisecond, so blocking calls
//! from the single-threaded guardian are fine.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

pub const NLMSG_HDRLEN: usize = 16;
pub const NLA_HDRLEN: usize = 4;

pub const NLM_F_REQUEST: u16 = 0x0001;
pub const NLM_F_MULTI: u16 = 0x0002;
pub const NLM_F_ACK: u16 = 0x0004;
pub const NLM_F_DUMP: u16 = 0x0300;
pub const NLM_F_REPLACE: u16 = 0x0100;
pub const NLM_F_EXCL: u16 = 0x0200;
pub const NLM_F_CREATE: u16 = 0x0400;

pub const NLMSG_NOOP: u16 = 1;
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;

/// Attribute type bits that are flags, not part of the type number. Masked on
/// decode because newer kernels set NLA_F_NESTED on nests they emit.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A call on the socket itself failed (`op` is the call: socket, bind, send, ...).
    #[error("netlink socket: {op}")]
    Socket {
        op: &'static str,
        #[source]
        source: Errno,
    },
    #[error("no answer from the kernel within {0:?}")]
    NoAnswer(std::time::Duration),
    /// The kernel refused the request.
    #[error("kernel answered {errno}")]
    Kernel { errno: Errno },
    #[error("malformed netlink data: {0}")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The kernel's refusal, to tell "already there" or "not there" from real failures.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            NetlinkError::Kernel { errno } => Some(*errno),
            _ => None,
        }
    }
}

fn socket_call(op: &'static str) -> impl FnOnce(Errno) -> NetlinkError {
    move |source| NetlinkError::Socket { op, source }
}

pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Builds one netlink message: header, a fixed family header, then
/// attributes (possibly nested). Lengths are patched in on `nest_end` and
/// `finish`, so callers never count bytes by hand.
#[derive(Debug, Clone)]
pub struct MsgBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MsgBuilder {
    pub fn new(msg_type: u16, flags: u16) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, patched in finish
        buf.extend_from_slice(&msg_type.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // seq, patched in finish
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: 0 = kernel
        MsgBuilder {
            buf,
            nests: Vec::new(),
        }
    }

    /// Raw family header (genlmsghdr, rtmsg, ...), padded to 4 bytes.
    pub fn header(mut self, bytes: &[u8]) -> Self {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    pub fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = (NLA_HDRLEN + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    pub fn attr_u16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }
    /// A u16 the kernel expects in network byte order (ports).
    pub fn attr_be16(&mut self, ty: u16, v: u16) -> &mut Self {
        self.attr(ty, &v.to_be_bytes())
    }
    pub fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }
    /// NUL-terminated string, as NLA_NUL_STRING / NLA_STRING policies accept.
    pub fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(ty, &v)
    }

    /// Opens a nested attribute. No NLA_F_NESTED flag: IPVS parses nests with
    /// the liberal legacy parser and ipvsadm never set it, so this is the form
    /// every kernel since 2.6.28 accepts.
    pub fn nest_start(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self
    }

    pub fn nest_end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub fn finish(mut self, seq: u32) -> Vec<u8> {
        while !self.nests.is_empty() {
            self.nest_end();
        }
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// One message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NlMsg<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram into messages, refusing lengths that point outside it.
pub fn parse_messages(mut buf: &[u8]) -> Result<Vec<NlMsg<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_ne(&buf[0..4])? as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(NetlinkError::Malformed("message length out of bounds"));
        }
        out.push(NlMsg {
            msg_type: u16_ne(&buf[4..6])?,
            flags: u16_ne(&buf[6..8])?,
            seq: u32_ne(&buf[8..12])?,
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// Iterates `(type & NLA_TYPE_MASK, payload)` over an attribute area.
pub fn attrs(buf: &[u8]) -> AttrIter<'_> {
    AttrIter { buf }
}

pub struct AttrIter<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = Result<(u16, &'a [u8]), NetlinkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([self.buf[0], self.buf[1]]) as usize;
        let ty = u16::from_ne_bytes([self.buf[2], self.buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.buf.len() {
            self.buf = &[];
            return Some(Err(NetlinkError::Malformed(
                "attribute length out of bounds",
            )));
        }
        let payload = &self.buf[NLA_HDRLEN..len];
        self.buf = &self.buf[align4(len).min(self.buf.len())..];
        Some(Ok((ty, payload)))
    }
}

pub fn u16_ne(b: &[u8]) -> Result<u16, NetlinkError> {
    b.get(..2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_ne_bytes)
        .ok_or(NetlinkError::Malformed("short u16"))
}
pub fn u16_be(b: &[u8]) -> Result<u16, NetlinkError> {
    b.get(..2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_be_bytes)
        .ok_or(NetlinkError::Malformed("short u16"))
}
pub fn u32_ne(b: &[u8]) -> Result<u32, NetlinkError> {
    b.get(..4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_ne_bytes)
        .ok_or(NetlinkError::Malformed("short u32"))
}
pub fn c_str(b: &[u8]) -> Result<String, NetlinkError> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    std::str::from_utf8(&b[..end])
        .map(str::to_owned)
        .map_err(|_| NetlinkError::Malformed("string is not UTF-8"))
}

/// An owned reply message (header fields that matter plus payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub msg_type: u16,
    pub payload: Vec<u8>,
}

/// Interprets the payload of an NLMSG_ERROR: `Ok(())` for an ack (error 0).
pub fn check_error(payload: &[u8]) -> Result<(), NetlinkError> {
    let code = u32_ne(payload)? as i32;
    if code == 0 {
        Ok(())
    } else {
        Err(NetlinkError::Kernel {
            errno: Errno::from_raw(code.saturating_neg()),
        })
    }
}

/// How long a request waits for the kernel's answer.
const REPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// A blocking netlink socket talking to the kernel.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    pub fn open(protocol: SockProtocol) -> Result<Self, NetlinkError> {
        let fd = socket::socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            protocol,
        )
        .map_err(socket_call("socket"))?;
        // Port id 0: the kernel picks one for this socket.
        socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(socket_call("bind"))?;
        // A guardian must never hang on a lost reply: bound every receive.
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as _, 0);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)
            .map_err(socket_call("setsockopt SO_RCVTIMEO"))?;
        Ok(Socket { fd, seq: 1 })
    }

    /// Sends one request and gathers the data messages of its answer. Plain
    /// requests must carry NLM_F_ACK (the final ack ends the exchange); dumps
    /// end with NLMSG_DONE.
    pub fn request(&mut self, msg: MsgBuilder) -> Result<Vec<Reply>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        let is_dump = u16_ne(&bytes[6..8])? & NLM_F_DUMP == NLM_F_DUMP;
        // A netlink datagram goes whole or not at all: no partial send to resume.
        socket::send(self.fd.as_raw_fd(), &bytes, MsgFlags::empty())
            .map_err(socket_call("send"))?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(NetlinkError::NoAnswer(REPLY_TIMEOUT)),
                Err(e) => return Err(socket_call("receive")(e)),
            };
            for m in parse_messages(&buf[..n])? {
                if m.seq != seq {
                    continue; // stale answer to an earlier, timed-out request
                }
                match m.msg_type {
                    NLMSG_ERROR => {
                        check_error(m.payload)?;
                        return Ok(out);
                    }
                    NLMSG_DONE => return Ok(out),
                    NLMSG_NOOP => {}
                    _ => {
                        out.push(Reply {
                            msg_type: m.msg_type,
                            payload: m.payload.to_vec(),
                        });
                        if !is_dump && m.flags & NLM_F_MULTI == 0 && !wants_ack(&bytes) {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }
}

fn wants_ack(req: &[u8]) -> bool {
    u16_ne(&req[6..8])
        .map(|f| f & NLM_F_ACK != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_pads_attributes_and_patches_lengths() {
        let mut b = MsgBuilder::new(0x10, NLM_F_REQUEST | NLM_F_ACK).header(&[3, 1, 0, 0]);
        b.attr_str(2, "IPVS");
        let bytes = b.finish(7);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &32u32.to_ne_bytes()[..],           // nlmsg_len: 16 + 4 + (4 + 5, padded to 12)
            &0x10u16.to_ne_bytes(),             // nlmsg_type: GENL_ID_CTRL
            &0x0005u16.to_ne_bytes(),           // REQUEST | ACK
            &7u32.to_ne_bytes(),                // seq
            &0u32.to_ne_bytes(),                // pid
            &[3, 1, 0, 0],                      // genlmsghdr: cmd GETFAMILY, version 1
            &9u16.to_ne_bytes(),                // nla_len: 4 + "IPVS\0"
            &2u16.to_ne_bytes(),                // CTRL_ATTR_FAMILY_NAME
            b"IPVS\0", &[0, 0, 0],              // string + padding to 4
        ].concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn nests_get_their_length() {
        let mut b = MsgBuilder::new(1, 0);
        b.nest_start(1).attr_u16(1, 2).nest_end();
        let bytes = b.finish(1);
        // nest header (4) + inner attr (4 + 2 + 2 pad) = 12
        assert_eq!(&bytes[16..18], &12u16.to_ne_bytes());
        let inner: Vec<_> = attrs(&bytes[16..]).collect::<Result<_, _>>().unwrap();
        assert_eq!(inner.len(), 1);
        assert_eq!(inner[0].0, 1);
    }

    #[test]
    fn attr_iter_rejects_overlong_lengths() {
        let bad = [200u8, 0, 1, 0, 0, 0, 0, 0];
        let got: Vec<_> = attrs(&bad).collect();
        assert!(matches!(got[0], Err(NetlinkError::Malformed(_))));
    }

    #[test]
    fn attr_iter_masks_nested_flag() {
        let mut raw = Vec::new();
        raw.extend_from_slice(&4u16.to_ne_bytes());
        raw.extend_from_slice(&(0x8000u16 | 2).to_ne_bytes());
        let got: Vec<_> = attrs(&raw).collect::<Result<_, _>>().unwrap();
        assert_eq!(got[0].0, 2);
    }

    #[test]
    fn error_payload_decodes_errno() {
        assert!(check_error(&0i32.to_ne_bytes()).is_ok());
        let e = check_error(&(-2i32).to_ne_bytes()).unwrap_err();
        assert_eq!(e.errno(), Some(Errno::ENOENT));
    }

    #[test]
    fn parse_messages_rejects_truncated() {
        let mut m = MsgBuilder::new(5, 0).finish(1);
        m[0] = 200;
        assert!(parse_messages(&m).is_err());
    }
}

//! IPVS generic-netlink messages: encode requests, decode dump answers.
//!
//! Every number comes from the kernel's `include/uapi/linux/ip_vs.h`. This
//! machine's kernel has no IPVS, so these layouts are verified only by the
//! hand-derived byte tests below; a later QEMU test drives them against a
//! real kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{AddressFamily, SockProtocol};

use crate::netlink::{
    attrs, c_str, u16_be, u16_ne, u32_ne, MsgBuilder, NetlinkError, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};

pub const IPVS_GENL_NAME: &str = "IPVS";
pub const IPVS_GENL_VERSION: u8 = 1;

// Commands (enum after IPVS_CMD_UNSPEC = 0).
pub const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub const IPVS_CMD_SET_SERVICE: u8 = 2;
pub const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub const IPVS_CMD_GET_SERVICE: u8 = 4;
pub const IPVS_CMD_NEW_DEST: u8 = 5;
pub const IPVS_CMD_SET_DEST: u8 = 6;
pub const IPVS_CMD_DEL_DEST: u8 = 7;
pub const IPVS_CMD_GET_DEST: u8 = 8;

// First-level attributes.
pub const IPVS_CMD_ATTR_SERVICE: u16 = 1;
pub const IPVS_CMD_ATTR_DEST: u16 = 2;

// Inside IPVS_CMD_ATTR_SERVICE.
pub const IPVS_SVC_ATTR_AF: u16 = 1;
pub const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
pub const IPVS_SVC_ATTR_ADDR: u16 = 3;
pub const IPVS_SVC_ATTR_PORT: u16 = 4;
pub const IPVS_SVC_ATTR_FWMARK: u16 = 5;
pub const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
pub const IPVS_SVC_ATTR_FLAGS: u16 = 7;
pub const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
pub const IPVS_SVC_ATTR_NETMASK: u16 = 9;

// Inside IPVS_CMD_ATTR_DEST.
pub const IPVS_DEST_ATTR_ADDR: u16 = 1;
pub const IPVS_DEST_ATTR_PORT: u16 = 2;
pub const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
pub const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
pub const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
pub const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
pub const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;

/// IP_VS_CONN_F_MASQ: NAT. The masters live on other hosts and the clients
/// are local processes, so neither DR nor tunnelling would work.
pub const IP_VS_CONN_F_MASQ: u32 = 0x0000;

const AF_INET: u16 = AddressFamily::Inet as u16;
const AF_INET6: u16 = AddressFamily::Inet6 as u16;
const IPPROTO_TCP: u16 = SockProtocol::Tcp as u16;

/// A virtual service as IPVS describes it (TCP only: apiservers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsService {
    pub addr: SocketAddr,
    pub scheduler: String,
    pub flags: u32,
    pub timeout: u32,
}

/// A real server (destination) of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsDest {
    pub addr: SocketAddr,
    pub weight: u32,
    pub fwd_method: u32,
}

fn af(ip: &IpAddr) -> u16 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// `union nf_inet_addr`: 16 bytes, an IPv4 address in the first four.
fn inet_addr_bytes(ip: &IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

fn decode_inet_addr(family: u16, b: &[u8]) -> Result<IpAddr, NetlinkError> {
    match family {
        AF_INET => {
            let o: [u8; 4] = b
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(NetlinkError::Malformed("short IPv4 address"))?;
            Ok(IpAddr::V4(Ipv4Addr::from(o)))
        }
        AF_INET6 => {
            let o: [u8; 16] = b
                .get(..16)
                .and_then(|s| s.try_into().ok())
                .ok_or(NetlinkError::Malformed("short IPv6 address"))?;
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(NetlinkError::Malformed("unknown address family")),
    }
}

fn genl(family_id: u16, cmd: u8, flags: u16) -> MsgBuilder {
    MsgBuilder::new(family_id, flags).header(&[cmd, IPVS_GENL_VERSION, 0, 0])
}

/// The attributes that identify a service (enough for DEL and as the parent
/// of destination commands).
fn put_service_id(b: &mut MsgBuilder, vs: SocketAddr) {
    b.attr_u16(IPVS_SVC_ATTR_AF, af(&vs.ip()))
        .attr_u16(IPVS_SVC_ATTR_PROTOCOL, IPPROTO_TCP)
        .attr(IPVS_SVC_ATTR_ADDR, &inet_addr_bytes(&vs.ip()))
        .attr_be16(IPVS_SVC_ATTR_PORT, vs.port());
}

/// The kernel rejects NEW/SET_SERVICE unless sched_name, flags, timeout and
/// netmask are all present (ip_vs_genl_parse_service, full_entry).
fn put_service_full(b: &mut MsgBuilder, svc: &IpvsService) {
    put_service_id(b, svc.addr);
    let mut flags = [0u8; 8]; // struct ip_vs_flags { __u32 flags; __u32 mask; }
    flags[..4].copy_from_slice(&svc.flags.to_ne_bytes());
    flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
    let netmask = match svc.addr {
        SocketAddr::V4(_) => u32::MAX, // 255.255.255.255, same in any byte order
        SocketAddr::V6(_) => 128,      // IPv6 takes a prefix length
    };
    b.attr_str(IPVS_SVC_ATTR_SCHED_NAME, &svc.scheduler)
        .attr(IPVS_SVC_ATTR_FLAGS, &flags)
        .attr_u32(IPVS_SVC_ATTR_TIMEOUT, svc.timeout)
        .attr_u32(IPVS_SVC_ATTR_NETMASK, netmask);
}

fn put_dest(b: &mut MsgBuilder, d: &IpvsDest, full: bool) {
    b.attr(IPVS_DEST_ATTR_ADDR, &inet_addr_bytes(&d.addr.ip()))
        .attr_be16(IPVS_DEST_ATTR_PORT, d.addr.port());
    if full {
        b.attr_u32(IPVS_DEST_ATTR_FWD_METHOD, d.fwd_method)
            .attr_u32(IPVS_DEST_ATTR_WEIGHT, d.weight)
            .attr_u32(IPVS_DEST_ATTR_U_THRESH, 0)
            .attr_u32(IPVS_DEST_ATTR_L_THRESH, 0);
    }
    b.attr_u16(IPVS_DEST_ATTR_ADDR_FAMILY, af(&d.addr.ip()));
}

const REQ: u16 = NLM_F_REQUEST | NLM_F_ACK;

pub fn new_service(family_id: u16, svc: &IpvsService) -> MsgBuilder {
    service_cmd(family_id, IPVS_CMD_NEW_SERVICE, svc)
}

pub fn set_service(family_id: u16, svc: &IpvsService) -> MsgBuilder {
    service_cmd(family_id, IPVS_CMD_SET_SERVICE, svc)
}

fn service_cmd(family_id: u16, cmd: u8, svc: &IpvsService) -> MsgBuilder {
    let mut b = genl(family_id, cmd, REQ);
    b.nest_start(IPVS_CMD_ATTR_SERVICE);
    put_service_full(&mut b, svc);
    b.nest_end();
    b
}

pub fn del_service(family_id: u16, vs: SocketAddr) -> MsgBuilder {
    let mut b = genl(family_id, IPVS_CMD_DEL_SERVICE, REQ);
    b.nest_start(IPVS_CMD_ATTR_SERVICE);
    put_service_id(&mut b, vs);
    b.nest_end();
    b
}

pub fn dump_services(family_id: u16) -> MsgBuilder {
    genl(family_id, IPVS_CMD_GET_SERVICE, NLM_F_REQUEST | NLM_F_DUMP)
}

pub fn dest_cmd(family_id: u16, cmd: u8, vs: SocketAddr, d: &IpvsDest) -> MsgBuilder {
    let mut b = genl(family_id, cmd, REQ);
    b.nest_start(IPVS_CMD_ATTR_SERVICE);
    put_service_id(&mut b, vs);
    b.nest_end();
    b.nest_start(IPVS_CMD_ATTR_DEST);
    put_dest(&mut b, d, cmd != IPVS_CMD_DEL_DEST);
    b.nest_end();
    b
}

pub fn dump_dests(family_id: u16, vs: SocketAddr) -> MsgBuilder {
    let mut b = genl(family_id, IPVS_CMD_GET_DEST, NLM_F_REQUEST | NLM_F_DUMP);
    b.nest_start(IPVS_CMD_ATTR_SERVICE);
    put_service_id(&mut b, vs);
    b.nest_end();
    b
}

/// Finds the nested attribute `ty` in a generic netlink payload (after the
/// 4-byte genlmsghdr).
fn top_level(payload: &[u8], ty: u16) -> Result<Option<&[u8]>, NetlinkError> {
    let body = payload
        .get(4..)
        .ok_or(NetlinkError::Malformed("short genl header"))?;
    for a in attrs(body) {
        let (t, p) = a?;
        if t == ty {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Decodes one GET_SERVICE dump message. `Ok(None)` for fwmark services and
/// non-TCP ones: they are not ours and have no address to compare.
pub fn decode_service(payload: &[u8]) -> Result<Option<IpvsService>, NetlinkError> {
    let Some(nest) = top_level(payload, IPVS_CMD_ATTR_SERVICE)? else {
        return Err(NetlinkError::Malformed("service reply without service"));
    };
    let (mut family, mut proto, mut addr, mut port) = (None, None, None, None);
    let (mut sched, mut flags, mut timeout) = (String::new(), 0u32, 0u32);
    for a in attrs(nest) {
        let (t, p) = a?;
        match t {
            IPVS_SVC_ATTR_AF => family = Some(u16_ne(p)?),
            IPVS_SVC_ATTR_PROTOCOL => proto = Some(u16_ne(p)?),
            IPVS_SVC_ATTR_ADDR => addr = Some(p),
            IPVS_SVC_ATTR_PORT => port = Some(u16_be(p)?),
            IPVS_SVC_ATTR_FWMARK if u32_ne(p)? != 0 => return Ok(None),
            IPVS_SVC_ATTR_SCHED_NAME => sched = c_str(p)?,
            IPVS_SVC_ATTR_FLAGS => flags = u32_ne(p)?,
            IPVS_SVC_ATTR_TIMEOUT => timeout = u32_ne(p)?,
            _ => {}
        }
    }
    let (Some(family), Some(addr), Some(port)) = (family, addr, port) else {
        return Ok(None);
    };
    if proto != Some(IPPROTO_TCP) {
        return Ok(None);
    }
    Ok(Some(IpvsService {
        addr: SocketAddr::new(decode_inet_addr(family, addr)?, port),
        scheduler: sched,
        flags,
        timeout,
    }))
}

/// Decodes one GET_DEST dump message. `family` is the service's, used when
/// an old kernel omits IPVS_DEST_ATTR_ADDR_FAMILY.
pub fn decode_dest(payload: &[u8], family: u16) -> Result<IpvsDest, NetlinkError> {
    let Some(nest) = top_level(payload, IPVS_CMD_ATTR_DEST)? else {
        return Err(NetlinkError::Malformed("dest reply without dest"));
    };
    let (mut addr, mut port, mut weight, mut fwd, mut fam) = (None, None, 0, 0, family);
    for a in attrs(nest) {
        let (t, p) = a?;
        match t {
            IPVS_DEST_ATTR_ADDR => addr = Some(p),
            IPVS_DEST_ATTR_PORT => port = Some(u16_be(p)?),
            IPVS_DEST_ATTR_FWD_METHOD => fwd = u32_ne(p)?,
            IPVS_DEST_ATTR_WEIGHT => weight = u32_ne(p)?,
            IPVS_DEST_ATTR_ADDR_FAMILY => fam = u16_ne(p)?,
            _ => {}
        }
    }
    let (Some(addr), Some(port)) = (addr, port) else {
        return Err(NetlinkError::Malformed("dest without address or port"));
    };
    Ok(IpvsDest {
        addr: SocketAddr::new(decode_inet_addr(fam, addr)?, port),
        weight,
        fwd_method: fwd,
    })
}

pub fn family_of(addr: &SocketAddr) -> u16 {
    af(&addr.ip())
}

// These tests pin the wire format against byte layouts written by hand from
// ip_vs.h and netlink.h. They do NOT talk to a kernel: this machine has no
// IPVS. The QEMU VM test exercises the same messages for real.
#[cfg(test)]
mod tests {
    use super::*;

    const FAM: u16 = 0x1d; // whatever id CTRL_CMD_GETFAMILY returned

    fn ne16(v: u16) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
    fn ne32(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
    /// nlattr header: nla_len, nla_type (host order)
    fn nla(len: u16, ty: u16) -> Vec<u8> {
        [ne16(len), ne16(ty)].concat()
    }

    fn vs() -> SocketAddr {
        "10.103.97.2:6443".parse().unwrap()
    }

    /// The nested service-id attributes for 10.103.97.2:6443/TCP: 44 bytes
    /// (AF 8 + PROTOCOL 8 + ADDR 4+16 + PORT 8, each padded to 4).
    fn service_id_bytes() -> Vec<u8> {
        [
            nla(6, 1),
            ne16(2),
            vec![0, 0], // SVC_ATTR_AF = AF_INET, padded
            nla(6, 2),
            ne16(6),
            vec![0, 0], // SVC_ATTR_PROTOCOL = IPPROTO_TCP
            nla(20, 3),
            vec![10, 103, 97, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // SVC_ATTR_ADDR: nf_inet_addr
            nla(6, 4),
            vec![0x19, 0x2b, 0, 0], // SVC_ATTR_PORT 6443 big-endian (0x192b), padded
        ]
        .concat()
    }

    #[test]
    fn ipvs_new_service_bytes_match_ip_vs_h_layout_no_kernel() {
        let svc = IpvsService {
            addr: vs(),
            scheduler: "rr".into(),
            flags: 0,
            timeout: 0,
        };
        let got = new_service(FAM, &svc).finish(9);
        let body = [
            service_id_bytes(),
            nla(7, 6),
            b"rr\0".to_vec(),
            vec![0], // SVC_ATTR_SCHED_NAME "rr\0" + pad
            nla(12, 7),
            ne32(0),
            ne32(u32::MAX), // SVC_ATTR_FLAGS: ip_vs_flags { flags 0, mask ~0 }
            nla(8, 8),
            ne32(0), // SVC_ATTR_TIMEOUT
            nla(8, 9),
            ne32(u32::MAX), // SVC_ATTR_NETMASK /32
        ]
        .concat();
        let expected = [
            ne32(16 + 4 + 4 + body.len() as u32), // nlmsg_len
            ne16(FAM),                            // nlmsg_type = IPVS family id
            ne16(0x0005),                         // NLM_F_REQUEST | NLM_F_ACK
            ne32(9),                              // seq
            ne32(0),                              // pid
            vec![1, 1, 0, 0],                     // genlmsghdr: IPVS_CMD_NEW_SERVICE, version 1
            nla(4 + body.len() as u16, 1),        // IPVS_CMD_ATTR_SERVICE nest
            body,
        ]
        .concat();
        assert_eq!(got, expected);
    }

    #[test]
    fn ipvs_del_service_carries_only_the_id_no_kernel() {
        let got = del_service(FAM, vs()).finish(1);
        assert_eq!(got[16], IPVS_CMD_DEL_SERVICE);
        assert_eq!(&got[20..24], &nla(48, 1)[..]); // nest header + 44 bytes of id
        assert_eq!(&got[24..], &service_id_bytes()[..]);
    }

    #[test]
    fn ipvs_new_dest_bytes_match_ip_vs_h_layout_no_kernel() {
        let d = IpvsDest {
            addr: "192.168.1.11:6443".parse().unwrap(),
            weight: 1,
            fwd_method: IP_VS_CONN_F_MASQ,
        };
        let got = dest_cmd(FAM, IPVS_CMD_NEW_DEST, vs(), &d).finish(3);
        let dest = [
            nla(20, 1),
            vec![192, 168, 1, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // DEST_ATTR_ADDR
            nla(6, 2),
            vec![0x19, 0x2b, 0, 0], // DEST_ATTR_PORT 6443 BE
            nla(8, 3),
            ne32(0), // DEST_ATTR_FWD_METHOD = MASQ
            nla(8, 4),
            ne32(1), // DEST_ATTR_WEIGHT
            nla(8, 5),
            ne32(0), // DEST_ATTR_U_THRESH
            nla(8, 6),
            ne32(0), // DEST_ATTR_L_THRESH
            nla(6, 11),
            ne16(2),
            vec![0, 0], // DEST_ATTR_ADDR_FAMILY = AF_INET
        ]
        .concat();
        let expected = [
            ne32((16 + 4 + 48 + 4 + dest.len()) as u32),
            ne16(FAM),
            ne16(0x0005),
            ne32(3),
            ne32(0),
            vec![5, 1, 0, 0], // IPVS_CMD_NEW_DEST
            nla(48, 1),       // IPVS_CMD_ATTR_SERVICE
            service_id_bytes(),
            nla(4 + dest.len() as u16, 2), // IPVS_CMD_ATTR_DEST
            dest,
        ]
        .concat();
        assert_eq!(got, expected);
    }

    #[test]
    fn ipvs_del_dest_omits_weight_and_thresholds_no_kernel() {
        let d = IpvsDest {
            addr: "192.168.1.11:6443".parse().unwrap(),
            weight: 0,
            fwd_method: 0,
        };
        let got = dest_cmd(FAM, IPVS_CMD_DEL_DEST, vs(), &d).finish(3);
        // 16 nlmsghdr + 4 genl + 48 service nest + dest nest (4 + addr 20 + port 8 + family 8)
        assert_eq!(got.len(), 16 + 4 + 48 + 40);
        assert_eq!(&got[68..72], &nla(40, 2)[..]);
    }

    #[test]
    fn ipvs_dump_requests_set_dump_flag_no_kernel() {
        let got = dump_services(FAM).finish(1);
        assert_eq!(&got[6..8], &ne16(0x0301)[..]); // REQUEST | DUMP (ROOT|MATCH)
        assert_eq!(got[16], IPVS_CMD_GET_SERVICE);
        let got = dump_dests(FAM, vs()).finish(1);
        assert_eq!(got[16], IPVS_CMD_GET_DEST);
        assert_eq!(&got[24..], &service_id_bytes()[..]);
    }

    /// A GET_SERVICE answer as the kernel builds it (ip_vs_genl_fill_service):
    /// the nest carries NLA_F_NESTED on newer kernels, plus stats we skip.
    #[test]
    fn ipvs_decode_service_reply_from_hand_built_bytes_no_kernel() {
        let inner = [
            service_id_bytes(),
            nla(8, 6),
            b"wrr\0".to_vec(), // SCHED_NAME
            nla(12, 7),
            ne32(0x2),
            ne32(u32::MAX), // FLAGS: HASHED
            nla(8, 8),
            ne32(0), // TIMEOUT
            nla(8, 9),
            ne32(u32::MAX), // NETMASK
            nla(12, 10 | 0x8000),
            nla(8, 1),
            ne32(5), // STATS nest {CONNS 5}, ignored
        ]
        .concat();
        let payload = [
            vec![1, 1, 0, 0], // genl: NEW_SERVICE (dump answers reuse it), v1
            nla(4 + inner.len() as u16, 1 | 0x8000),
            inner,
        ]
        .concat();
        let svc = decode_service(&payload).unwrap().unwrap();
        assert_eq!(svc.addr, vs());
        assert_eq!(svc.scheduler, "wrr");
        assert_eq!(svc.flags, 2);
    }

    #[test]
    fn ipvs_decode_skips_fwmark_services_no_kernel() {
        let inner = [nla(6, 1), ne16(2), vec![0, 0], nla(8, 5), ne32(7)].concat();
        let payload = [vec![1, 1, 0, 0], nla(4 + inner.len() as u16, 1), inner].concat();
        assert_eq!(decode_service(&payload).unwrap(), None);
    }

    #[test]
    fn ipvs_decode_dest_reply_from_hand_built_bytes_no_kernel() {
        let inner = [
            nla(20, 1),
            vec![192, 168, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], // ADDR
            nla(6, 2),
            vec![0x19, 0x2b, 0, 0], // PORT 6443
            nla(8, 3),
            ne32(0), // FWD_METHOD MASQ
            nla(8, 4),
            ne32(3), // WEIGHT 3
            nla(8, 7),
            ne32(12), // ACTIVE_CONNS, ignored
        ]
        .concat();
        let payload = [vec![5, 1, 0, 0], nla(4 + inner.len() as u16, 2), inner].concat();
        let d = decode_dest(&payload, 2).unwrap();
        assert_eq!(d.addr, "192.168.1.12:6443".parse::<SocketAddr>().unwrap());
        assert_eq!(d.weight, 3);
    }

    #[test]
    fn ipvs_decode_rejects_truncated_address_no_kernel() {
        let inner = [
            nla(8, 1),
            vec![192, 168, 1, 12],
            nla(6, 2),
            vec![0, 1, 0, 0],
        ]
        .concat();
        let payload = [vec![5, 1, 0, 0], nla(4 + inner.len() as u16, 2), inner].concat();
        assert!(decode_dest(&payload, 10).is_err()); // AF_INET6 needs 16 bytes
    }
}

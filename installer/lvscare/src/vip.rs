//! Making the VIP reachable from this node, over rtnetlink.
//!
//! - route mode: `VIP/32 via <node ip>`. Local processes then route packets
//!   for the VIP out of a real interface, where IPVS (LOCAL_OUT) or the
//!   nftables output chain rewrites them to a master. Nothing else on the
//!   network ever learns the VIP.
//! - link mode: a dummy interface `bale-lvs0` holding VIP/32, as kube-proxy
//!   does with kube-ipvs0. The masquerade rule then gives answers a route
//!   back. Caveat: with the default `arp_ignore=0` the node answers ARP for
//!   any local address on any interface, so every worker would claim the VIP
//!   on the LAN unless `net.ipv4.conf.all.arp_ignore=1`; that is why route
//!   mode is the default.
//!
//! Routes are tagged with their own protocol number (`ip route show proto
//! 180`), so cleaning removes bale's route and never one an admin added.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};

use nix::errno::Errno;
use nix::net::if_::{if_nametoindex, InterfaceFlags};
use nix::sys::socket::{AddressFamily, SockProtocol};

use crate::netlink::{
    MsgBuilder, NetlinkError, Socket, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};

pub const RTPROT_BALE: u8 = 180;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;

const RT_TABLE_MAIN: u8 = 254;
const RT_SCOPE_UNIVERSE: u8 = 0;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;

const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RT_SCOPE_HOST: u8 = 254;

const AF_INET: u8 = AddressFamily::Inet as u8;
const IFF_UP: u32 = InterfaceFlags::IFF_UP.bits() as u32;

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    #[error("rtnetlink")]
    Netlink(#[from] NetlinkError),
    #[error("the VIP must be IPv4 here, got {0}")]
    NotIpv4(IpAddr),
    #[error("finding this node's address towards {target}")]
    NodeIp {
        target: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("interface {name} has no index after creation")]
    NoIndex {
        name: String,
        #[source]
        source: Errno,
    },
    #[error("no real server to route the VIP towards: pass --node-ip")]
    NoRealServers,
}

const RTN_UNREACHABLE: u8 = 7;

fn rtmsg(dst_len: u8, protocol: u8) -> [u8; 12] {
    rtmsg_of_type(dst_len, protocol, RTN_UNICAST)
}

fn rtmsg_of_type(dst_len: u8, protocol: u8, route_type: u8) -> [u8; 12] {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
    // type, then u32 flags.
    [
        AF_INET,
        dst_len,
        0,
        0,
        RT_TABLE_MAIN,
        protocol,
        RT_SCOPE_UNIVERSE,
        route_type,
        0,
        0,
        0,
        0,
    ]
}

/// RTM_NEWROUTE VIP/32 via `gw`, created or replaced.
pub fn route_msg(vip: Ipv4Addr, gw: Ipv4Addr) -> MsgBuilder {
    prefix_route_msg(vip, 32, gw)
}

/// RTM_NEWROUTE `dst/len` via `gw`, created or replaced, tagged as bale's.
pub fn prefix_route_msg(dst: Ipv4Addr, len: u8, gw: Ipv4Addr) -> MsgBuilder {
    let mut b = MsgBuilder::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&rtmsg(len, RTPROT_BALE));
    b.attr(RTA_DST, &dst.octets())
        .attr(RTA_GATEWAY, &gw.octets());
    b
}

/// RTM_DELROUTE VIP/32, only if bale's protocol tag is on it.
pub fn del_route_msg(vip: Ipv4Addr) -> MsgBuilder {
    del_prefix_route_msg(vip, 32)
}

/// RTM_DELROUTE `dst/len`, only if bale's protocol tag is on it.
pub fn del_prefix_route_msg(dst: Ipv4Addr, len: u8) -> MsgBuilder {
    let mut b =
        MsgBuilder::new(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK).header(&rtmsg(len, RTPROT_BALE));
    b.attr(RTA_DST, &dst.octets());
    b
}

fn ifinfomsg(index: i32, flags: u32, change: u32) -> [u8; 16] {
    let mut m = [0u8; 16]; // family, pad, type u16, index i32, flags u32, change u32
    m[4..8].copy_from_slice(&index.to_ne_bytes());
    m[8..12].copy_from_slice(&flags.to_ne_bytes());
    m[12..16].copy_from_slice(&change.to_ne_bytes());
    m
}

pub fn new_dummy_msg(name: &str) -> MsgBuilder {
    let mut b = MsgBuilder::new(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    )
    .header(&ifinfomsg(0, IFF_UP, IFF_UP));
    b.attr_str(IFLA_IFNAME, name)
        .nest_start(IFLA_LINKINFO)
        .attr_str(IFLA_INFO_KIND, "dummy")
        .nest_end();
    b
}

fn link_up_msg(index: i32) -> MsgBuilder {
    MsgBuilder::new(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)
        .header(&ifinfomsg(index, IFF_UP, IFF_UP))
}

pub fn del_link_msg(name: &str) -> MsgBuilder {
    let mut b = MsgBuilder::new(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK).header(&ifinfomsg(0, 0, 0));
    b.attr_str(IFLA_IFNAME, name);
    b
}

pub fn addr_msg(index: u32, vip: Ipv4Addr) -> MsgBuilder {
    // struct ifaddrmsg: family, prefixlen, flags, scope, u32 index. Host
    // scope: the VIP is for this node only, never a source for others.
    let mut h = [AF_INET, 32, 0, RT_SCOPE_HOST, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let mut b = MsgBuilder::new(
        RTM_NEWADDR,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&h);
    b.attr(IFA_LOCAL, &vip.octets())
        .attr(IFA_ADDRESS, &vip.octets());
    b
}

fn v4(ip: IpAddr) -> Result<Ipv4Addr, VipError> {
    match ip {
        IpAddr::V4(v) => Ok(v),
        other => Err(VipError::NotIpv4(other)),
    }
}

/// The source address the kernel would use towards `target`. A connected
/// UDP socket sends nothing; it only asks the routing table.
pub fn node_ip_towards(target: SocketAddr) -> Result<Ipv4Addr, VipError> {
    let err = |source| VipError::NodeIp { target, source };
    let s = UdpSocket::bind("0.0.0.0:0").map_err(err)?;
    s.connect(target).map_err(err)?;
    v4(s.local_addr().map_err(err)?.ip())
}

fn rtnl() -> Result<Socket, VipError> {
    Ok(Socket::open(SockProtocol::NetlinkRoute)?)
}

pub fn ensure_route(vip: IpAddr, gw: Ipv4Addr) -> Result<(), VipError> {
    rtnl()?.request(route_msg(v4(vip)?, gw))?;
    Ok(())
}

pub fn remove_route(vip: IpAddr) -> Result<bool, VipError> {
    match rtnl()?.request(del_route_msg(v4(vip)?)) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An `unreachable` route for `dst/len`, tagged as bale's: what no more specific route
/// covers is refused on this host instead of going out through the default gateway.
pub fn ensure_unreachable_route(dst: Ipv4Addr, len: u8) -> Result<(), VipError> {
    let mut b = MsgBuilder::new(
        RTM_NEWROUTE,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .header(&rtmsg_of_type(len, RTPROT_BALE, RTN_UNREACHABLE));
    b.attr(RTA_DST, &dst.octets());
    rtnl()?.request(b)?;
    Ok(())
}

/// Removes bale's `unreachable` route for `dst/len`; `Ok(false)` when there was none.
pub fn remove_unreachable_route(dst: Ipv4Addr, len: u8) -> Result<bool, VipError> {
    let mut b = MsgBuilder::new(RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK).header(&rtmsg_of_type(
        len,
        RTPROT_BALE,
        RTN_UNREACHABLE,
    ));
    b.attr(RTA_DST, &dst.octets());
    match rtnl()?.request(b) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A route to `dst/len` via `gw` (a pod subnet through the node that holds it).
pub fn ensure_prefix_route(dst: Ipv4Addr, len: u8, gw: Ipv4Addr) -> Result<(), VipError> {
    rtnl()?.request(prefix_route_msg(dst, len, gw))?;
    Ok(())
}

/// Removes bale's route to `dst/len`; `Ok(false)` when there was none.
pub fn remove_prefix_route(dst: Ipv4Addr, len: u8) -> Result<bool, VipError> {
    match rtnl()?.request(del_prefix_route_msg(dst, len)) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(Errno::ESRCH) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn ensure_link(name: &str, vip: IpAddr) -> Result<(), VipError> {
    let vip = v4(vip)?;
    let mut s = rtnl()?;
    match s.request(new_dummy_msg(name)) {
        Ok(_) => {}
        Err(e) if e.errno() == Some(Errno::EEXIST) => {}
        Err(e) => return Err(e.into()),
    }
    let index = if_nametoindex(name).map_err(|source| VipError::NoIndex {
        name: name.to_string(),
        source,
    })?;
    // It may exist from an earlier run but have been set down.
    s.request(link_up_msg(index as i32))?;
    s.request(addr_msg(index, vip))?;
    Ok(())
}

pub fn remove_link(name: &str) -> Result<bool, VipError> {
    match rtnl()?.request(del_link_msg(name)) {
        Ok(_) => Ok(true),
        Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_message_layout() {
        let m = route_msg(Ipv4Addr::new(10, 103, 97, 2), Ipv4Addr::new(10, 88, 0, 1)).finish(1);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &44u32.to_ne_bytes()[..],       // nlmsg_len: 16 + 12 + 8 + 8
            &24u16.to_ne_bytes(),           // RTM_NEWROUTE
            &0x0505u16.to_ne_bytes(),       // REQUEST|ACK|CREATE|REPLACE
            &1u32.to_ne_bytes(), &0u32.to_ne_bytes(),
            &[2, 32, 0, 0, 254, 180, 0, 1], // AF_INET, /32, main table, proto 180, universe, unicast
            &[0, 0, 0, 0],                  // rtm_flags
            &8u16.to_ne_bytes(), &1u16.to_ne_bytes(), &[10, 103, 97, 2], // RTA_DST
            &8u16.to_ne_bytes(), &5u16.to_ne_bytes(), &[10, 88, 0, 1],   // RTA_GATEWAY
        ].concat();
        assert_eq!(m, expected);
    }

    #[test]
    fn dummy_link_message_nests_kind() {
        let m = new_dummy_msg("bale-lvs0").finish(1);
        // 16 hdr + 16 ifinfomsg + IFNAME (4 + 10, padded 16) + LINKINFO (4 + KIND 4+6 padded 12) = 64
        assert_eq!(m.len(), 64);
        assert_eq!(&m[48..50], &16u16.to_ne_bytes()); // IFLA_LINKINFO nest len
        assert_eq!(&m[52..54], &10u16.to_ne_bytes()); // IFLA_INFO_KIND len, unpadded
        assert_eq!(&m[56..62], b"dummy\0");
        assert_eq!(&m[24..28], &1u32.to_ne_bytes()); // ifi_flags: IFF_UP
        assert_eq!(&m[28..32], &1u32.to_ne_bytes()); // ifi_change: IFF_UP
    }

    #[test]
    fn node_ip_for_loopback_target_is_loopback() {
        let ip = node_ip_towards("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback());
    }
}

//! Clients that hold connections without using them, or stop reading what they asked for,
//! must not lock out a client that behaves: the registry's answers to findings F5 (520 idle
//! connections locked every client out for about 30 s; 512 stalled downloads, for as long as
//! they stayed open).
//!
//! Hostile clients connect from other loopback addresses (127.0.0.0/8 all reaches this host),
//! so the server sees them as peers other than the well-behaved client on 127.0.0.1.

mod registry_common;

/// Named so that `cargo test registry` selects these tests.
mod registry_limits {
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpStream};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use crate::registry_common::*;
    use bale_registry::ServeOptions;

    /// How long the well-behaved client may wait, while the hostile ones hold on.
    const BOUND: Duration = Duration::from_secs(3);

    /// A connection from `from` to `to`, with a small receive buffer so that a download that
    /// is not read stalls the server soon.
    fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.set_recv_buffer_size(4096).unwrap();
            s.bind(SocketAddr::from((from, 0))).unwrap();
            let tcp = s.connect(to).await.unwrap();
            let std = tcp.into_std().unwrap();
            std.set_nonblocking(false).unwrap();
            std
        })
    }

    /// `GET path` from 127.0.0.1 on a thread: its status and how long it took, or `None` past
    /// the bound (the thread is left to finish on its own).
    fn timed_get(addr: SocketAddr, path: &'static str) -> Option<(u16, Vec<u8>, Duration)> {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = get(addr, path);
            let _ = tx.send((r.status, r.body, started.elapsed()));
        });
        rx.recv_timeout(BOUND).ok()
    }

    fn options() -> ServeOptions {
        ServeOptions {
            max_connections: 64,
            ..ServeOptions::default()
        }
    }

    #[test]
    fn idle_connections_from_one_peer_or_many_do_not_lock_out_a_client() {
        let f = fixture();
        let srv = start(f, options());
        // One peer opening more connections than the server has slots, sending nothing.
        let one_peer: Vec<TcpStream> = (0..100)
            .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 2), srv.addr))
            .collect();
        let (status, _, took) = timed_get(srv.addr, "/v2/").expect("locked out by one peer");
        assert_eq!(status, 200);
        eprintln!("served in {took:?} next to 100 idle connections of one peer");
        // Many peers, one idle connection each: more than the slots, none above its share.
        let many_peers: Vec<TcpStream> = (0..80)
            .map(|i| connect_from(Ipv4Addr::new(127, 0, 1, 10 + i), srv.addr))
            .collect();
        let (status, _, took) = timed_get(srv.addr, "/v2/").expect("locked out by many peers");
        assert_eq!(status, 200);
        eprintln!("served in {took:?} next to 80 idle connections of 80 peers");
        drop((one_peer, many_peers));
    }

    /// A client asking for a big blob four times over on one connection and never reading.
    fn stalled_download(from: Ipv4Addr, srv: &Server, blob: &str) -> TcpStream {
        let mut s = connect_from(from, srv.addr);
        let req = format!("GET /v2/registry.k8s.io/big/blobs/{blob} HTTP/1.1\r\nHost: x\r\n\r\n");
        // Whether the server still takes requests on it does not matter here.
        let _ = s.write_all(req.repeat(4).as_bytes());
        s
    }

    #[test]
    fn stalled_downloads_do_not_lock_out_a_client() {
        let f = fixture();
        let srv = start(f, options());
        let stalled: Vec<TcpStream> = (0..100)
            .map(|_| stalled_download(Ipv4Addr::new(127, 0, 0, 3), &srv, &f.big_layer))
            .collect();
        let path: &'static str = format!("/v2/registry.k8s.io/big/blobs/{}", f.big_layer).leak();
        let (status, _, took) = timed_get(srv.addr, "/v2/").expect("locked out");
        assert_eq!(status, 200);
        eprintln!("GET /v2/ answered in {took:?} next to 100 stalled downloads");
        let (status, body, took) = timed_get(srv.addr, path).expect("locked out");
        assert_eq!(status, 200);
        assert!(body == f.blob(&f.big_layer), "wrong bytes");
        eprintln!("a 5 MiB blob served in {took:?} next to 100 stalled downloads");
        drop(stalled);
    }

    /// Eight peers each holding their limit of stalled downloads take every slot; a newcomer
    /// holding nothing takes the slot of one of them.
    #[test]
    fn peers_holding_every_slot_give_one_up_to_a_newcomer() {
        let f = fixture();
        let srv = start(f, options());
        let stalled: Vec<TcpStream> = (0..8)
            .flat_map(|peer| (0..8).map(move |_| Ipv4Addr::new(127, 0, 2, 10 + peer)))
            .map(|from| stalled_download(from, &srv, &f.big_layer))
            .collect();
        // Every download under way: its response has begun to arrive.
        for s in &stalled {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert!(s.peek(&mut [0u8; 1]).unwrap() > 0);
        }
        let (status, _, took) = timed_get(srv.addr, "/v2/").expect("locked out");
        assert_eq!(status, 200);
        eprintln!("GET /v2/ answered in {took:?} with every slot held by stalled downloads");
        drop(stalled);
    }

    /// As many peers as slots, one stalled download each: none holds more than its share, and
    /// a newcomer takes the slot of the download stalled longest, well before the write
    /// timeout would free one.
    #[test]
    fn stalled_downloads_of_many_peers_give_way_to_a_newcomer() {
        let f = fixture();
        let write_timeout = Duration::from_secs(6);
        let srv = start(
            f,
            ServeOptions {
                write_timeout,
                ..options()
            },
        );
        let stalled: Vec<TcpStream> = (0..64)
            .map(|i| stalled_download(Ipv4Addr::new(127, 0, 5, 10 + i), &srv, &f.big_layer))
            .collect();
        let started = Instant::now();
        for s in &stalled {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert!(s.peek(&mut [0u8; 1]).unwrap() > 0);
        }
        let (status, _, took) = timed_get(srv.addr, "/v2/").expect("locked out");
        assert_eq!(status, 200);
        eprintln!("GET /v2/ answered in {took:?} with every slot held by a stalled peer");
        assert!(
            started.elapsed() < write_timeout / 2,
            "served only after {:?}: the write timeout freed the slot",
            started.elapsed()
        );
        drop(stalled);
    }

    #[test]
    fn a_client_that_stops_reading_loses_its_connection() {
        let f = fixture();
        let srv = start(
            f,
            ServeOptions {
                write_timeout: Duration::from_secs(1),
                ..options()
            },
        );
        let mut s = stalled_download(Ipv4Addr::new(127, 0, 0, 4), &srv, &f.big_layer);
        // The server gives up after a second without progress: its end of the connection
        // closes (with data still queued, so this end sees it only once it reads).
        let me = s.local_addr().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !server_side_closed(srv.addr, me) {
            assert!(
                Instant::now() < deadline,
                "the server kept a connection whose client stopped reading for 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = 0usize;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("reading what the server sent: {e} after {got} bytes"),
            }
        }
        let whole = 4 * f.blob(&f.big_layer).len();
        assert!(
            got < whole,
            "all {got} bytes came: the stalled connection was kept"
        );
    }

    /// Whether the server's end of the connection from `client` is closing or gone, from the
    /// kernel's table of IPv4 TCP sockets.
    fn server_side_closed(server: SocketAddr, client: SocketAddr) -> bool {
        let hex = |a: SocketAddr| match a {
            SocketAddr::V4(v4) => format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(v4.ip().octets()),
                v4.port()
            ),
            SocketAddr::V6(_) => unreachable!("the test runs on IPv4 loopback"),
        };
        let (local, remote) = (hex(server), hex(client));
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let state = table.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()))
                .then(|| f.get(3).copied().unwrap_or_default().to_string())
        });
        // FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSING; or no socket at all
        state.is_none_or(|st| ["04", "05", "06", "07", "0B"].contains(&st.as_str()))
    }
}

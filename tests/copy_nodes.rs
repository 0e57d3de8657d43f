//! The self-copy of `bale install` on three test nodes: node-to-node fan-out (the installer
//! sends about one bundle, not three), a node cut off mid-copy or powered off mid-copy fails
//! alone and resumes on the next run with fewer bytes than a bundle, and a chunk damaged in the
//! partial file is sent again.
//!
//! Needs root and the testbed (`scripts/testbed.sh`). Without them each test skips, or fails
//! under BALE_REQUIRE_ALL=1 or BALE_REQUIRE_TESTBED=1 (see `common::skip`).

mod common;

use bale_payload::chunks::ChunkList;
use common::events::*;
use common::testbed::*;
use common::*;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const DATA: &str = "/var/lib/bale";

struct Big {
    path: PathBuf,
    size: u64,
}

/// A bundle with 150 MiB of incompressible content (plus the program): long enough to cut.
fn big() -> &'static Big {
    static B: OnceLock<Big> = OnceLock::new();
    B.get_or_init(|| {
        let dir = scratch("copy_nodes");
        let tree = dir.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("hello.txt"), "hello\n").unwrap();
        std::fs::write(tree.join("noise.bin"), noise(150 << 20, 0x9e3779b97f4a7c15)).unwrap();
        let path = dir.join("big.bale");
        build(&tree, &path);
        let size = std::fs::metadata(&path).unwrap().len();
        Big { path, size }
    })
}

fn install_args(key: &str) -> Vec<String> {
    [
        "install",
        "--json",
        "--masters",
        N1,
        "--nodes",
        &format!("{N2},{N3}"),
        "--key",
        key,
        "--known-hosts",
        &known_hosts_path(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// (from the installer, from peers, already present) of a node's finished copy, from its
/// final progress line.
fn copy_bytes(ev: &[serde_json::Value], node: &str) -> Option<(u64, u64, u64)> {
    let msg = ev
        .iter()
        .filter(|e| e["event"] == "info" && e["node"] == node)
        .filter_map(|e| e["message"].as_str())
        .find(|m| m.starts_with("copy: done"))?;
    let num = |label: &str| -> Option<u64> {
        let rest = &msg[msg.find(label)? + label.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    Some((
        num("from the installer")?,
        num("from peers")?,
        num("already present")?,
    ))
}

fn run_install(b: &Path, args: &[String]) -> (Output, Vec<serde_json::Value>) {
    run_logged(b, args, "install")
}

/// The node's copy state file, parsed (null when there is none).
fn copy_state(node: &str) -> serde_json::Value {
    let o = on(
        node,
        &format!("cat {DATA}/.bundle.bale.copy.json 2>/dev/null"),
    );
    serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
}

/// Bytes a node received over the network so far in this run (not its own program copy).
fn received_from_network(st: &serde_json::Value) -> u64 {
    st["from"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "local")
                .filter_map(|(_, v)| v.as_u64())
                .sum()
        })
        .unwrap_or(0)
}

/// Starts an install and applies `fault` (a testbed command) to `victim` once its copy is under
/// way: some chunks arrived, the copy is not complete. Returns the run's events.
fn install_with_fault(
    b: &Path,
    args: &[String],
    fault: &str,
    victim: &str,
) -> Vec<serde_json::Value> {
    let t = Instant::now();
    let mut child = Command::new(b)
        .env("BALE_STATE", admin_state())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    let mut cut = false;
    poll_until(
        Duration::from_millis(100),
        &format!("{victim}'s copy to get under way"),
        Duration::from_secs(300),
        || {
            let st = copy_state(victim);
            if st["phase"] == "complete" {
                return true;
            }
            if received_from_network(&st) >= 8 << 20 {
                tb_ok(&[fault, victim]);
                eprintln!(
                    "{fault} {victim} after {:.1}s, {} bytes received",
                    t.elapsed().as_secs_f64(),
                    received_from_network(&st)
                );
                cut = true;
                return true;
            }
            child.try_wait().unwrap().is_some()
        },
    );
    let status = child.wait().unwrap();
    let text = reader.join().unwrap();
    eprintln!(
        "faulted run: {status:?} in {:.1}s\n{text}",
        t.elapsed().as_secs_f64()
    );
    assert!(cut, "{victim}'s copy was never caught mid-way");
    assert!(!status.success());
    events(&text)
}

/// The first chunk (after the tail and the program) that the node holds in its partial copy.
fn a_held_chunk(node: &str, list: &ChunkList) -> (usize, u64) {
    let st = copy_state(node);
    let have = hex::decode(st["have"].as_str().unwrap_or("")).unwrap_or_default();
    (2..list.len())
        .find(|i| have.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0))
        .map(|i| (i, list.chunks[i].offset))
        .unwrap_or_else(|| panic!("{node} holds no chunk: {st}"))
}

#[test]
fn the_installer_sends_one_copy_and_nodes_fetch_from_each_other() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = big();
    let args = install_args(&key());
    let (o, ev) = run_install(&b.path, &args);
    ok(&o);
    let (mut installer, mut peers) = (0, 0);
    for n in [N1, N2, N3] {
        assert!(has(&ev, "done", "upload", n), "upload on {n}");
        let (i, p, k) = copy_bytes(&ev, n).unwrap_or_else(|| panic!("no copy report for {n}"));
        assert_eq!(k, 0, "{n}: nothing was there before");
        installer += i;
        peers += p;
    }
    // `--json` told how far each copy came: the whole bundle as the total, never going back.
    let mut samples = 0;
    for n in [N1, N2, N3] {
        let done: Vec<u64> = ev
            .iter()
            .filter(|e| e["event"] == "progress" && e["phase"] == "upload" && e["node"] == n)
            .map(|e| {
                assert_eq!(e["total"], b.size, "{e}");
                e["done"].as_u64().unwrap_or(u64::MAX)
            })
            .collect();
        assert!(
            done.windows(2).all(|w| w[0] <= w[1]) && done.iter().all(|&d| d <= b.size),
            "{n}: progress {done:?}"
        );
        samples += done.len();
    }
    assert!(samples > 0, "no progress event");
    for n in ["n1", "n2", "n3"] {
        on_ok(n, &format!("{DATA}/bundle.bale verify >/dev/null"));
        // Nothing of the copy machinery is left running or lying around.
        on_ok(
            n,
            &format!("! pgrep -f '[a]gent copy' && ! test -e {DATA}/.bale-copy-agent"),
        );
    }
    // The installer's chunks went straight to the first node's agent, not through SSH.
    assert!(
        !notes(&ev).iter().any(|m| m.contains("sending over SSH")),
        "the direct stream was not used"
    );
    eprintln!(
        "bundle {} bytes; from the installer {installer}, between nodes {peers}",
        b.size
    );
    // About one bundle leaves the installer, not three; the rest goes node to node.
    assert!(
        installer <= b.size + b.size / 10,
        "{installer} > one bundle"
    );
    assert!(
        peers >= b.size / 3,
        "nodes fetched only {peers} bytes from each other"
    );
    bed.finish();
}

#[test]
fn a_partitioned_node_fails_alone_and_resumes_and_damaged_chunks_are_sent_again() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = big();
    let args = install_args(&key());
    // Unshaped, n2 can receive the whole bundle in the time it takes to see its copy start
    // over SSH: at 100 Mbit/s the cut lands well inside it.
    tb_ok(&["link-rate", "n2", "100mbit"]);
    let ev = install_with_fault(&b.path, &args, "link-down", "n2");
    assert_eq!(failed_nodes(&ev), [N2]);
    for n in [N1, N3] {
        assert!(has(&ev, "done", "upload", n), "upload on {n}");
    }
    // n2's agent outlives the cut run, and once the link is back it could finish its copy
    // from a peer or from what a peer's kernel still holds queued for it (a peer's agent may
    // be gone while its socket's unsent chunks are not). So the link stays down until every
    // agent has stopped (n2's gives up on its silent source by itself), each seen from the
    // host: SSH to n2 cannot answer while its link is down.
    for (n, bound) in [("n1", 90), ("n3", 90), ("n2", 120)] {
        poll_ok(
            Duration::from_millis(250),
            &format!("the copy agent on {n} to stop while n2's link is down"),
            Duration::from_secs(bound),
            || match processes_on(n, ".bale-copy-agent")[..] {
                [] => Ok(()),
                ref left => Err(left.join("\n")),
            },
        );
    }
    tb_ok(&["link-up", "n2"]);
    tb_ok(&["link-rate", "n2", "off"]);

    // What follows checks a resumed copy: n2's must still be partial.
    let st = copy_state("n2");
    let listing = on_ok("n2", &format!("ls -la {DATA}"));
    assert!(
        st["phase"] != "complete"
            && !on("n2", &format!("test -e {DATA}/bundle.bale"))
                .status
                .success(),
        "n2's copy was not left partial by the cut: {st}\n{listing}"
    );

    // Damage a chunk n2 holds: the next run must find it and fetch it again.
    let list = ChunkList::of_bundle(&bale_payload::Bundle::open(&b.path).unwrap()).unwrap();
    let (index, offset) = a_held_chunk("n2", &list);
    on_ok(
        "n2",
        &format!(
            "printf 'DAMAGED!' | dd of={DATA}/.bundle.bale.partial bs=1 seek={} conv=notrunc \
             status=none",
            offset + 100
        ),
    );
    eprintln!("damaged chunk {index} at {offset} on n2");

    let (o, ev) = run_install(&b.path, &args);
    ok(&o);
    assert!(has(&ev, "skip", "upload", N1) && has(&ev, "skip", "upload", N3));
    let (installer, peers, kept) = copy_bytes(&ev, N2).unwrap_or_else(|| {
        let n2: Vec<String> = ev
            .iter()
            .filter(|e| e["node"] == N2)
            .map(|e| e.to_string())
            .collect();
        panic!(
            "no copy report for n2 in the second run:\n{}",
            n2.join("\n")
        )
    });
    eprintln!("second run on n2: from the installer {installer}, from peers {peers}, kept {kept}");
    // The program is rebuilt from the agent on the node; the payload chunks must resume.
    let stub = list.trailer.stub_len;
    assert!(kept > stub, "no payload chunk of the first copy was kept");
    assert!(
        installer + peers < b.size - stub,
        "the second run sent the whole payload again"
    );
    on_ok("n2", &format!("{DATA}/bundle.bale verify >/dev/null"));
    let st = copy_state("n2");
    assert!(
        st["rejected"] == 0 && st["kept"].as_u64() == Some(kept),
        "{st}"
    );
    bed.finish();
}

#[test]
fn a_node_powered_off_mid_copy_fails_alone_and_resumes() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = big();
    let args = install_args(&key());
    // As above: shaped, n3 cannot finish before the fault lands.
    tb_ok(&["link-rate", "n3", "100mbit"]);
    let ev = install_with_fault(&b.path, &args, "kill", "n3");
    assert_eq!(failed_nodes(&ev), [N3]);
    for n in [N1, N2] {
        assert!(has(&ev, "done", "upload", n), "upload on {n}");
    }
    tb_ok(&["start", "n3"]);
    tb_ok(&["link-rate", "n3", "off"]);
    let (o, ev) = run_install(&b.path, &args);
    ok(&o);
    let (installer, peers, kept) = copy_bytes(&ev, N3).expect("n3's copy report");
    eprintln!("second run on n3: from the installer {installer}, from peers {peers}, kept {kept}");
    let stub = bale_payload::Bundle::open(&b.path)
        .unwrap()
        .trailer
        .stub_len;
    assert!(kept > stub && installer + peers < b.size - stub);
    on_ok("n3", &format!("{DATA}/bundle.bale verify >/dev/null"));
    bed.finish();
}

/// The progress notes of an install.
fn notes(ev: &[serde_json::Value]) -> Vec<String> {
    ev.iter()
        .filter(|e| e["event"] == "info")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// A node whose firewall lets the installer reach SSH and nothing else still gets the bundle:
/// the chunks go over the SSH session instead of the direct connection.
#[test]
fn a_closed_port_sends_the_chunks_over_ssh() {
    let Some(bed) = Testbed::up(1, &[]) else {
        return;
    };
    on_ok(
        "n1",
        "nft add table inet only_ssh && \
         nft add chain inet only_ssh input '{ type filter hook input priority 0; }' && \
         nft add rule inet only_ssh input ip saddr 10.77.0.1 tcp dport != 22 reject with tcp reset",
    );
    let b = big();
    let args: Vec<String> = [
        "install",
        "--json",
        "--until",
        "upload",
        "--masters",
        N1,
        "--key",
        &key(),
        "--known-hosts",
        &known_hosts_path(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (o, ev) = run_install(&b.path, &args);
    ok(&o);
    assert!(
        notes(&ev).iter().any(|m| m.contains("sending over SSH")),
        "no fallback noted: {:?}",
        notes(&ev)
    );
    let (installer, peers, kept) = copy_bytes(&ev, N1).expect("a copy report");
    assert_eq!((peers, kept), (0, 0));
    assert!(
        installer >= b.size && installer <= b.size + b.size / 10,
        "{installer} bytes from the installer for a {}-byte bundle",
        b.size
    );
    on_ok("n1", &format!("{DATA}/bundle.bale verify >/dev/null"));
    bed.finish();
}

/// `--parallel 1`: one node copies at a time (the upload phases never overlap), and every node
/// still ends with the whole bundle, checked.
#[test]
fn parallel_one_copies_to_one_node_at_a_time() {
    let Some(bed) = Testbed::up(3, &[]) else {
        return;
    };
    let b = big();
    let mut args = install_args(&key());
    args.extend(["--parallel", "1", "--until", "upload"].map(String::from));
    let (o, ev) = run_install(&b.path, &args);
    ok(&o);
    let mut open = 0;
    let mut most = 0;
    for e in ev.iter().filter(|e| e["phase"] == "upload") {
        match e["event"].as_str() {
            Some("start") => open += 1,
            Some("done") | Some("skip") | Some("fail") => open -= 1,
            _ => {}
        }
        most = most.max(open);
    }
    assert_eq!(most, 1, "uploads overlapped: {ev:?}");
    for n in [N1, N2, N3] {
        assert!(has(&ev, "done", "upload", n), "upload on {n}");
    }
    for n in ["n1", "n2", "n3"] {
        on_ok(n, &format!("{DATA}/bundle.bale verify >/dev/null"));
    }
    bed.finish();
}

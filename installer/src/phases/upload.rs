//! Copy the bundle to `<data-dir>/bundle.bale` on every node: checked chunk by chunk as it
//! arrives, resumed after a cut, fanned out node to node (see [`crate::copy`]). Skipped on a
//! node that already has a bundle with the same header digest.

use super::bundle_path;
use crate::copy::fanout::Fanout;
use crate::copy::store::Store;
use crate::engine::{Attempt, Node, Phase, PhaseError, PhaseResult};
use crate::ssh::{sq, Conn, Input};
use bale_payload::chunks::TAIL;
use bale_payload::error::human_bytes;

/// The upload phase; its fan-out table is shared by every node's thread of one install run.
pub struct Upload {
    fanout: Fanout,
}

impl Upload {
    /// A phase with a fresh fan-out table, for one install run.
    pub fn new() -> Upload {
        Upload {
            fanout: Fanout::new(),
        }
    }
}

impl Default for Upload {
    fn default() -> Self {
        Upload::new()
    }
}

/// Shell that prints the header digest of the bundle at `path` (bytes 48..80 of the trailer).
pub fn digest_script(path: &str) -> String {
    let p = sq(path);
    format!("[ -f {p} ] && tail -c 128 {p} | od -An -tx1 -j48 -N32 | tr -d ' \\n'; true")
}

fn remote_digest(conn: &Conn, path: &str) -> Option<String> {
    conn.root_ok("read the bundle digest", &digest_script(path), Input::None)
        .ok()
        .map(|s| s.trim().to_string())
}

impl Upload {
    /// No SSH: the same checked, resumable copy, in this process.
    fn copy_here(&self, node: &Node) -> PhaseResult {
        let ctx = &node.ctx;
        let dest = bundle_path(&ctx.data_dir);
        if std::fs::canonicalize(&ctx.bundle.path).ok() == std::fs::canonicalize(&dest).ok() {
            return Ok(());
        }
        let local = self.fanout.local(&ctx.bundle.path)?;
        let dir = std::path::Path::new(&ctx.data_dir);
        let fail = |e: &dyn std::fmt::Display| PhaseError::Msg(e.to_string());
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| PhaseError::Msg(format!("{}: {e}", dir.display())))?;
        }
        let _lock = crate::copy::agent::take_lock(dir).map_err(|e| fail(&e))?;
        let t = std::time::Instant::now();
        let store = Store::open(dir, &local.digest, "local").map_err(|e| fail(&e))?;
        let mut buf = Vec::new();
        if store.list().is_none() {
            local.read_chunk(TAIL, &mut buf).map_err(|e| fail(&e))?;
            store
                .accept(TAIL, &buf, "installer")
                .map_err(|e| fail(&e))?;
        }
        for i in store.missing() {
            local.read_chunk(i, &mut buf).map_err(|e| fail(&e))?;
            store.accept(i, &buf, "installer").map_err(|e| fail(&e))?;
            let st = store.state();
            node.progress("upload", st.have_bytes, st.file_len, "the bundle here");
        }
        store.finish().map_err(|e| fail(&e))?;
        let st = store.state();
        node.note(&format!(
            "copy: done, {} written and checked, {} already in place, in {:.1}s",
            human_bytes(st.received),
            human_bytes(st.kept),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

impl Phase for Upload {
    fn title(&self) -> &str {
        "upload"
    }
    fn should_run(&self, node: &Node) -> bool {
        let Ok(conn) = node.conn() else { return true };
        let have = remote_digest(&conn, &bundle_path(&node.ctx.data_dir));
        have.as_deref() != Some(node.ctx.bundle.digest.as_str())
    }
    fn dry_run(&self, node: &Node) -> String {
        format!(
            "copy {} ({}) to {}, from the installer or another node, resuming a cut copy",
            node.ctx.bundle.path.display(),
            human_bytes(node.ctx.bundle.size),
            bundle_path(&node.ctx.data_dir)
        )
    }
    fn run(&self, node: &Node, _attempt: &Attempt) -> PhaseResult {
        let conn = node.conn()?;
        if conn.is_local() || node.host.is_none() {
            return self.copy_here(node);
        }
        let t = self.fanout.copy_to(node, &conn)?;
        let size = node.ctx.bundle.size;
        node.note(&format!(
            "copy: done, {} checked as it arrived in {:.1}s ({}/s); bytes from the installer {}, \
             from peers {}, already present {}",
            human_bytes(size),
            t.seconds,
            human_bytes((size.saturating_sub(t.kept) as f64 / t.seconds.max(0.001)) as u64),
            t.from_installer,
            t.from_peers,
            t.kept
        ));
        Ok(())
    }
}

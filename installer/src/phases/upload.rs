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

/// Shell that prints the size of the file at `path` and its last trailer-length bytes in hex,
/// or nothing when there is no such file. The bytes are only carried here; they are read by
/// the payload crate ([`trailer_digest`]).
fn trailer_script(path: &str) -> String {
    let p = sq(path);
    let n = bale_payload::format::TRAILER_LEN;
    format!("[ -f {p} ] || exit 0; stat -c %s {p}; tail -c {n} {p} | od -An -v -tx1 | tr -d ' \\n'")
}

/// The header digest named by the trailer that `trailer_script` printed; `None` when there is
/// no file or no intact trailer.
fn trailer_digest(out: &str) -> Option<String> {
    let mut lines = out.lines();
    let file_len: u64 = lines.next()?.trim().parse().ok()?;
    let bytes = hex::decode(lines.next()?.trim()).ok()?;
    let tail: [u8; bale_payload::format::TRAILER_LEN] = bytes.try_into().ok()?;
    let t = bale_payload::format::Trailer::decode(&tail, file_len).ok()?;
    Some(bale_payload::format::hex(&t.header_sha256))
}

/// The header digest of the bundle at `path` on the node, from its trailer; `None` when the
/// node has no intact bundle there.
pub fn remote_digest(conn: &Conn, path: &str) -> Result<Option<String>, crate::ssh::SshError> {
    let out = conn.root_ok(
        "read the bundle's trailer",
        &trailer_script(path),
        Input::None,
    )?;
    Ok(trailer_digest(&out))
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
        if !dir.is_dir() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| PhaseError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        let _lock = crate::copy::agent::take_lock(dir)?;
        let t = std::time::Instant::now();
        let store = Store::open(dir, &local.digest, "local")?;
        let read = |source| PhaseError::Io {
            path: ctx.bundle.path.clone(),
            source,
        };
        let mut buf = Vec::new();
        if store.list().is_none() {
            local.read_chunk(TAIL, &mut buf).map_err(read)?;
            store.accept(TAIL, &buf, "installer")?;
        }
        for i in store.missing() {
            local.read_chunk(i, &mut buf).map_err(read)?;
            store.accept(i, &buf, "installer")?;
            let st = store.state();
            node.progress("upload", st.have_bytes, st.file_len, "the bundle here");
        }
        store.finish()?;
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
        let have = remote_digest(&conn, &bundle_path(&node.ctx.data_dir))
            .ok()
            .flatten();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_remote_digest_is_read_by_the_payload_crate_from_the_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = crate::copy::store::tests::sample_bundle(dir.path());
        let want = hex::encode(
            bale_payload::Bundle::open(&bundle)
                .unwrap()
                .trailer
                .header_sha256,
        );

        let conn = Conn::local().unwrap();
        let path = bundle.to_string_lossy();
        assert_eq!(remote_digest(&conn, &path).unwrap(), Some(want));
        // No file, a truncated file, a damaged trailer: no digest.
        let missing = dir.path().join("none.bale");
        assert_eq!(
            remote_digest(&conn, &missing.to_string_lossy()).unwrap(),
            None
        );
        let bytes = std::fs::read(&bundle).unwrap();
        std::fs::write(&bundle, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(remote_digest(&conn, &path).unwrap(), None);
        let mut damaged = bytes.clone();
        let at = damaged.len() - 90;
        damaged[at] ^= 1;
        std::fs::write(&bundle, &damaged).unwrap();
        assert_eq!(remote_digest(&conn, &path).unwrap(), None);
    }
}

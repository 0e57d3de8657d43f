//! Copy the bundle to `<data-dir>/bundle.bale`: streamed into a temporary file, checked on the
//! receiving side by running the copy's own `verify` and comparing its header digest, then
//! renamed into place. Skipped when the node already has a bundle with the same header digest.

use super::bundle_path;
use crate::engine::{Node, Phase, PhaseError, PhaseResult};
use crate::ssh::{sq, Conn, Input};

pub struct Upload;

/// Shell that prints the header digest of the bundle at `path` (bytes 48..80 of the trailer).
pub fn digest_script(path: &str) -> String {
    let p = sq(path);
    format!("[ -f {p} ] && tail -c 128 {p} | od -An -tx1 -j48 -N32 | tr -d ' \\n'; true")
}

fn partial(data_dir: &str) -> String {
    format!("{data_dir}/.bundle.bale.partial")
}

fn remote_digest(conn: &Conn, path: &str) -> Option<String> {
    conn.root_ok("read the bundle digest", &digest_script(path), Input::None)
        .ok()
        .map(|s| s.trim().to_string())
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
            "copy {} ({}) to {}",
            node.ctx.bundle.path.display(),
            bale_payload::error::human_bytes(node.ctx.bundle.size),
            bundle_path(&node.ctx.data_dir)
        )
    }
    fn run(&self, node: &Node) -> PhaseResult {
        let conn = node.conn()?;
        let ctx = &node.ctx;
        let d = sq(&ctx.data_dir);
        let tmp = sq(&partial(&ctx.data_dir));
        let dest = sq(&bundle_path(&ctx.data_dir));
        let from_local = conn.is_local();
        if from_local
            && std::fs::canonicalize(&ctx.bundle.path).ok()
                == std::fs::canonicalize(bundle_path(&ctx.data_dir)).ok()
        {
            return Ok(());
        }
        let t = std::time::Instant::now();
        conn.root_ok(
            "receive the bundle",
            &format!(
                "set -e; [ -d {d} ] || install -d -m 0700 {d}; rm -f {tmp}; umask 022; \
                 cat > {tmp}; chmod 0755 {tmp}"
            ),
            Input::File(&ctx.bundle.path),
        )?;
        let secs = t.elapsed().as_secs_f64().max(0.001);
        conn.root_ok(
            "verify the copied bundle",
            &format!("{tmp} verify >/dev/null"),
            Input::None,
        )?;
        let got = remote_digest(&conn, &partial(&ctx.data_dir)).unwrap_or_default();
        if got != ctx.bundle.digest {
            return Err(PhaseError::Msg(format!(
                "the copied bundle has header digest {got:?}, expected {}",
                ctx.bundle.digest
            )));
        }
        conn.root_ok(
            "install the bundle",
            &format!("mv -f {tmp} {dest}"),
            Input::None,
        )?;
        node.note(&format!(
            "bundle copied and verified ({:.0} MiB/s)",
            ctx.bundle.size as f64 / secs / (1 << 20) as f64
        ));
        Ok(())
    }
    fn undo(&self, node: &Node) -> PhaseResult {
        let conn = node.conn()?;
        conn.root_ok(
            "remove the partial bundle",
            &format!("rm -f {}", sq(&partial(&node.ctx.data_dir))),
            Input::None,
        )?;
        Ok(())
    }
}

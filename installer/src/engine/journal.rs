//! The per-node journal: which phases completed for which bundle, kept on the node itself at
//! `<data-dir>/journal.json` and replaced atomically (write a temporary file, rename). A journal
//! written for another bundle (different header digest) is ignored: a new bundle starts over.

use crate::layout::JOURNAL_TMP;
use crate::remote::{Cmd, Remote, Script};
use crate::ssh::SshError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::layout::JOURNAL as FILE;

#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq)]
pub struct Journal {
    /// Header digest of the bundle the phases were done for.
    #[serde(default)]
    pub bundle: String,
    #[serde(default)]
    pub phases: BTreeMap<String, Done>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Done {
    /// Unix seconds.
    pub at: u64,
    /// The phase's inputs when it was done (see `Phase::inputs`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub inputs: String,
}

impl Journal {
    /// Parses a journal's text; `None` (start over) when it is empty, unreadable or for another
    /// bundle.
    pub fn parse(text: &str, digest: &str) -> Option<Journal> {
        let j: Journal = serde_json::from_str(text).ok()?;
        (j.bundle == digest).then_some(j)
    }

    pub fn is_done(&self, phase: &str) -> bool {
        self.is_done_with(phase, "")
    }

    /// Done, and with these inputs.
    pub fn is_done_with(&self, phase: &str, inputs: &str) -> bool {
        self.phases.get(phase).is_some_and(|d| d.inputs == inputs)
    }

    /// Reads the node's journal for this bundle (an empty one when there is none).
    pub fn load(remote: &dyn Remote, data_dir: &str, digest: &str) -> Result<Journal, SshError> {
        let path = format!("{data_dir}/{FILE}");
        let text = remote.run_ok(&Cmd::cat_or_empty("read the journal", &path))?;
        Ok(Journal::parse(&text, digest).unwrap_or_else(|| Journal {
            bundle: digest.into(),
            phases: BTreeMap::new(),
        }))
    }

    /// Marks `phase` done and writes the journal back to the node.
    pub fn record(
        &mut self,
        remote: &dyn Remote,
        data_dir: &str,
        phase: &str,
    ) -> Result<(), SshError> {
        self.record_with(remote, data_dir, phase, "")
    }

    /// Marks `phase` done with these inputs and writes the journal back to the node.
    pub fn record_with(
        &mut self,
        remote: &dyn Remote,
        data_dir: &str,
        phase: &str,
        inputs: &str,
    ) -> Result<(), SshError> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let inputs = inputs.to_string();
        self.phases.insert(phase.into(), Done { at, inputs });
        let body = serde_json::to_vec_pretty(self).unwrap_or_default();
        let script = Script::new(
            "set -e; [ -d {d} ] || install -d -m 0700 {d}; t={d}/{tmp}; \
             cat > \"$t\"; sync \"$t\" 2>/dev/null || true; mv -f \"$t\" {d}/{file}",
        )
        .value("d", data_dir)
        .value("tmp", JOURNAL_TMP)
        .value("file", FILE);
        remote.run_ok(&Cmd::script("write the journal", &script).stdin(&body))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::fake::{Fed, Scripted};
    use crate::ssh::Conn;

    #[test]
    fn the_journal_is_read_and_written_through_the_remote() {
        let old = r#"{"bundle":"abc","phases":{"upload":{"at":1}}}"#;
        let r = Scripted::new("n1")
            .on("cat '/var/lib/my data/journal.json'", old)
            .on("mv -f", "");
        let mut j = Journal::load(&r, "/var/lib/my data", "abc").unwrap();
        assert!(j.is_done("upload"));
        // Another bundle's journal counts for nothing.
        assert!(!Journal::load(&r, "/var/lib/my data", "def")
            .unwrap()
            .is_done("upload"));
        j.record_with(&r, "/var/lib/my data", "runtime", "10.0.0.1:5050")
            .unwrap();
        let calls = r.calls();
        assert_eq!(calls[0].what, "read the journal");
        assert_eq!(
            calls[0].line,
            "cat '/var/lib/my data/journal.json' 2>/dev/null || true"
        );
        let write = &calls[2];
        assert_eq!(write.what, "write the journal");
        assert_eq!(
            write.line,
            format!(
                "set -e; [ -d '/var/lib/my data' ] || install -d -m 0700 '/var/lib/my data'; \
                 t='/var/lib/my data'/'{JOURNAL_TMP}'; cat > \"$t\"; sync \"$t\" 2>/dev/null \
                 || true; mv -f \"$t\" '/var/lib/my data'/'{FILE}'"
            )
        );
        let Fed::Bytes(body) = &write.stdin else {
            panic!("no journal on stdin: {:?}", write.stdin)
        };
        let written: Journal = serde_json::from_slice(body).unwrap();
        assert_eq!(written, j);
        assert!(written.is_done("upload"));
        assert!(written.is_done_with("runtime", "10.0.0.1:5050"));
    }

    #[test]
    fn a_failed_write_names_the_host_and_the_journal() {
        let r = Scripted::new("10.0.0.2").fails("mv -f", 1, "install: cannot create: read-only");
        let e = Journal::default()
            .record(&r, "/var/lib/bale", "upload")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "10.0.0.2: write the journal failed (exit 1): install: cannot create: read-only"
        );
    }

    #[test]
    fn journal_round_trip_and_reset() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        let d = d.to_str().unwrap();
        let c = Conn::local().unwrap();
        let mut j = Journal::load(&c, d, "abc").unwrap();
        assert!(!j.is_done("upload"));
        j.record(&c, d, "upload").unwrap();
        let again = Journal::load(&c, d, "abc").unwrap();
        assert!(again.is_done("upload"));
        j.record_with(&c, d, "runtime", "10.103.97.3:5050").unwrap();
        let again = Journal::load(&c, d, "abc").unwrap();
        assert!(again.is_done_with("runtime", "10.103.97.3:5050"));
        assert!(!again.is_done("runtime"), "other inputs: run again");
        assert!(!again.is_done_with("runtime", "10.103.97.4:5050"));
        assert_eq!(again, j);
        // Another bundle starts over; garbage too.
        assert!(!Journal::load(&c, d, "def").unwrap().is_done("upload"));
        std::fs::write(format!("{d}/{FILE}"), "{not json").unwrap();
        assert!(!Journal::load(&c, d, "abc").unwrap().is_done("upload"));
        assert!(Journal::parse("", "abc").is_none());
    }
}

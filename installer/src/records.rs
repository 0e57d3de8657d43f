//! The admin side's record of each cluster's members, so that `delete` knows who stays even
//! when no deleted host can tell (a dead master: its `node.json` is out of reach).
//!
//! The records live in `$BALE_STATE/clusters/` (tests), else `$XDG_STATE_HOME/bale/clusters/`,
//! else `~/.local/state/bale/clusters/`. There is one file per member address,
//! `<address>.json`, holding the whole member list (`{"masters": [...], "nodes": [...]}`): a
//! `delete --masters X` finds its record by X alone, with no cluster name or first master to
//! know (the first master changes when it is the one deleted). Every member's file says the
//! same, so the few bytes written twice buy a look-up with nothing to search or index.
//!
//! A successful install writes the files of all its hosts; a delete's follow-up rewrites those
//! of the hosts that stay and removes those of the deleted hosts. Each file is written whole
//! (temp file, fsync, rename, fsync of the directory), so a reader never sees half of one and
//! of two concurrent writers the last rename wins with a complete list.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The environment variable that replaces `$XDG_STATE_HOME/bale` (tests).
pub const STATE_ENV: &str = "BALE_STATE";
/// A record is a few hundred bytes; anything this large is not one.
const MAX_RECORD: u64 = 1 << 20;

/// The members of one cluster, in install order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMembers {
    pub masters: Vec<String>,
    pub nodes: Vec<String>,
}

impl ClusterMembers {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.masters.iter().chain(&self.nodes)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "no place for bale's state: set XDG_STATE_HOME or HOME (or {STATE_ENV} to a directory)"
    )]
    NoStateDir,
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: damaged record of the cluster's members ({reason}); remove it, and run install again \
         with every host of the cluster to write it anew",
        path.display()
    )]
    Damaged { path: PathBuf, reason: String },
}

/// Why the record could not say who stays in a cluster.
#[derive(Debug, thiserror::Error)]
pub enum NoRecord {
    #[error("looked for {looked_for}")]
    Missing { looked_for: String },
    #[error(transparent)]
    Unreadable(#[from] RecordError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RecordError + '_ {
    move |source| RecordError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of the records.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records of this user (see the module doc for where).
    pub fn locate() -> Result<Records, RecordError> {
        Records::locate_in(|k| std::env::var_os(k))
    }

    fn locate_in(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<Records, RecordError> {
        let env = |k: &str| var(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let state = env(STATE_ENV)
            .or_else(|| {
                env("XDG_STATE_HOME")
                    .filter(|p| p.is_absolute())
                    .map(|p| p.join("bale"))
            })
            .or_else(|| env("HOME").map(|h| h.join(".local/state/bale")))
            .ok_or(RecordError::NoStateDir)?;
        Ok(Records::at(state.join("clusters")))
    }

    pub fn at(dir: impl Into<PathBuf>) -> Records {
        Records { dir: dir.into() }
    }

    /// The file of `address`; `None` for anything that is not an IP address (hosts are given
    /// by address, and nothing else may become a path).
    pub fn path_for(&self, address: &str) -> Option<PathBuf> {
        let ip: IpAddr = address.parse().ok()?;
        Some(self.dir.join(format!("{ip}.json")))
    }

    /// Writes `members` as the record of each of them.
    pub fn write(&self, members: &ClusterMembers) -> Result<(), RecordError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let json = serde_json::to_vec_pretty(members).map_err(|e| RecordError::Io {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        for path in members.all().filter_map(|a| self.path_for(a)) {
            write_atomically(&self.dir, &path, &json)?;
        }
        let dir = std::fs::File::open(&self.dir).map_err(io(&self.dir))?;
        dir.sync_all().map_err(io(&self.dir))
    }

    /// Removes the records of `addresses` (hosts that left); those already gone are fine.
    pub fn remove(&self, addresses: &[String]) -> Result<(), RecordError> {
        for path in addresses.iter().filter_map(|a| self.path_for(a)) {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The record of the first of `addresses` that has one, and its file.
    pub fn find(
        &self,
        addresses: &[String],
    ) -> Result<Option<(PathBuf, ClusterMembers)>, RecordError> {
        for (address, path) in addresses
            .iter()
            .filter_map(|a| Some((a, self.path_for(a)?)))
        {
            if let Some(m) = read(&path, address)? {
                return Ok(Some((path, m)));
            }
        }
        Ok(None)
    }

    /// The files [`Records::find`] looks at for `addresses`, for messages.
    pub fn looked_for(&self, addresses: &[String]) -> String {
        let paths: Vec<String> = addresses
            .iter()
            .filter_map(|a| self.path_for(a))
            .map(|p| p.display().to_string())
            .collect();
        paths.join(", ")
    }
}

/// The record at `path`, which must list `address`; `None` when there is no file.
fn read(path: &Path, address: &str) -> Result<Option<ClusterMembers>, RecordError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let damaged = |reason: String| RecordError::Damaged {
        path: path.to_path_buf(),
        reason,
    };
    let mut text = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_RECORD + 1), &mut text)
        .map_err(io(path))?;
    if text.len() as u64 > MAX_RECORD {
        return Err(damaged(format!("larger than {MAX_RECORD} bytes")));
    }
    let m: ClusterMembers =
        serde_json::from_slice(&text).map_err(|e| damaged(format!("not a member list: {e}")))?;
    let ip: Option<IpAddr> = address.parse().ok();
    if !m.all().any(|a| a.parse::<IpAddr>().ok() == ip) {
        return Err(damaged(format!("it does not list {address}")));
    }
    if m.masters.is_empty() {
        return Err(damaged("it lists no master".into()));
    }
    Ok(Some(m))
}

/// Keeps `members` as the record of the cluster (`None`: no host stays) and drops the records
/// of `gone`. A failure only warns: the cluster itself is done, and the record is a help for a
/// later delete, which says which file it looked for when it finds none.
pub fn keep(members: Option<&ClusterMembers>, gone: &[String]) {
    let kept = Records::locate().and_then(|r| {
        if let Some(m) = members {
            r.write(m)?;
        }
        r.remove(gone)?;
        Ok(r)
    });
    if let Err(e) = kept {
        eprintln!(
            "warning: could not keep the record of the cluster's members: {e}; a delete of a host \
             that cannot be reached will not know which hosts stay"
        );
    }
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), RecordError> {
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    tmp.persist(path).map_err(|e| io(path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    fn cluster() -> ClusterMembers {
        ClusterMembers {
            masters: s(&["10.0.0.1", "10.0.0.2", "fd00::3"]),
            nodes: s(&["10.0.0.4"]),
        }
    }

    #[test]
    fn every_member_finds_the_whole_list() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::at(d.path().join("clusters"));
        assert!(r.find(&s(&["10.0.0.2"])).unwrap().is_none());
        r.write(&cluster()).unwrap();
        for a in ["10.0.0.1", "10.0.0.2", "fd00:0::3", "10.0.0.4"] {
            let (path, m) = r.find(&s(&[a])).unwrap().unwrap();
            assert_eq!(m, cluster());
            assert_eq!(Some(path), r.path_for(a));
        }
        // The first deleted address with a record answers.
        let (path, _) = r.find(&s(&["10.0.0.9", "10.0.0.4"])).unwrap().unwrap();
        assert!(path.ends_with("10.0.0.4.json"));
        r.remove(&s(&["10.0.0.2", "10.0.0.2"])).unwrap();
        assert!(r.find(&s(&["10.0.0.2"])).unwrap().is_none());
        assert!(r.find(&s(&["10.0.0.1"])).unwrap().is_some());
    }

    #[test]
    fn only_addresses_become_file_names() {
        let r = Records::at("/x");
        assert_eq!(r.path_for("../../etc/passwd"), None);
        assert_eq!(r.path_for("n1"), None);
        assert_eq!(
            r.path_for("fd00:0::3"),
            Some(PathBuf::from("/x/fd00::3.json"))
        );
    }

    #[test]
    fn a_damaged_record_is_refused_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::at(d.path());
        let path = r.path_for("10.0.0.1").unwrap();
        for (text, why) in [
            (b"{\"masters\": [\"10.0.0.1\"".to_vec(), "not a member list"),
            (
                br#"{"masters": ["10.0.0.2"], "nodes": []}"#.to_vec(),
                "does not list 10.0.0.1",
            ),
            (
                br#"{"masters": [], "nodes": ["10.0.0.1"]}"#.to_vec(),
                "lists no master",
            ),
            (vec![b' '; MAX_RECORD as usize + 1], "larger than"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = r.find(&s(&["10.0.0.1"])).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
            assert!(e.contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn concurrent_writers_leave_one_whole_record() {
        let d = tempfile::tempdir().unwrap();
        let r = Records::at(d.path());
        let lists: Vec<ClusterMembers> = (0..8)
            .map(|i| ClusterMembers {
                masters: s(&["10.0.0.1"]),
                nodes: (0..50 + i).map(|n| format!("10.1.{i}.{n}")).collect(),
            })
            .collect();
        std::thread::scope(|sc| {
            for m in &lists {
                let r = r.clone();
                sc.spawn(move || {
                    for _ in 0..20 {
                        r.write(m).unwrap();
                    }
                });
            }
        });
        let (_, got) = r.find(&s(&["10.0.0.1"])).unwrap().unwrap();
        assert!(lists.contains(&got));
        // No temp file is left behind.
        let names: Vec<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| n.ends_with(".json")), "{names:?}");
    }

    #[test]
    fn where_the_records_live() {
        let at = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Records::locate_in(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.into()))
                .map(|r| r.dir)
        };
        let all = [
            ("BALE_STATE", "/t"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(at(&all).unwrap(), PathBuf::from("/t/clusters"));
        assert_eq!(at(&all[1..]).unwrap(), PathBuf::from("/x/bale/clusters"));
        assert_eq!(
            at(&[("XDG_STATE_HOME", "rel"), ("HOME", "/h")]).unwrap(),
            PathBuf::from("/h/.local/state/bale/clusters")
        );
        assert!(matches!(at(&[]), Err(RecordError::NoStateDir)));
    }
}

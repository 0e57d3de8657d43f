//! The one way the node steps reach the host: its files through a [`HostRoot`], a directory
//! that stands for `/` ([`HostRoot::system`] on a node, a scratch tree in tests), and what is
//! not a file (systemctl, ctr, kill, umount, the lvscare data plane) through [`HostCommands`].
//!
//! Steps name host files by their absolute paths (`/etc/containerd/config.toml`) and let the
//! root place them, so messages and records keep the host's own paths while a test runs the
//! same code without root in a temporary directory. Every write goes through
//! [`HostRoot::write_file`]: a temp name in the same directory, fsync, rename, fsync of the
//! directory, so a crash never leaves half a file where the host reads it.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::step::{StepError, StepResult};

/// A file operation on the host that failed, naming the file as found under the root.
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub struct HostError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl HostError {
    fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> HostError {
        let path = path.into();
        move |source| HostError { path, source }
    }
}

pub type HostResult<T> = Result<T, HostError>;

/// A directory standing for the host's `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    /// `None` for the real `/`, so that host paths are used exactly as given.
    dir: Option<PathBuf>,
}

impl HostRoot {
    /// The machine this runs on.
    pub fn system() -> HostRoot {
        HostRoot { dir: None }
    }

    /// A tree under `dir` that stands for `/` (tests, a chroot).
    pub fn at(dir: impl Into<PathBuf>) -> HostRoot {
        HostRoot {
            dir: Some(dir.into()),
        }
    }

    /// Where the host path `host_path` is found: itself on the system, under the directory
    /// otherwise.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let p = host_path.as_ref();
        match &self.dir {
            None => p.to_path_buf(),
            Some(dir) => dir.join(p.strip_prefix("/").unwrap_or(p)),
        }
    }

    pub fn exists(&self, p: impl AsRef<Path>) -> bool {
        self.path(p).exists()
    }

    pub fn is_file(&self, p: impl AsRef<Path>) -> bool {
        self.path(p).is_file()
    }

    pub fn is_dir(&self, p: impl AsRef<Path>) -> bool {
        self.path(p).is_dir()
    }

    pub fn read(&self, p: impl AsRef<Path>) -> HostResult<Vec<u8>> {
        let path = self.path(p);
        std::fs::read(&path).map_err(HostError::at(path))
    }

    pub fn read_to_string(&self, p: impl AsRef<Path>) -> HostResult<String> {
        let path = self.path(p);
        std::fs::read_to_string(&path).map_err(HostError::at(path))
    }

    /// The file's text; `None` when there is no such file.
    pub fn read_optional(&self, p: impl AsRef<Path>) -> HostResult<Option<String>> {
        match self.read_to_string(p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The file's text, or nothing when it cannot be read (for files whose absence means
    /// "none", such as `/proc/swaps` on a kernel without swap).
    pub fn read_or_default(&self, p: impl AsRef<Path>) -> String {
        self.read_to_string(p).unwrap_or_default()
    }

    pub fn read_dir(&self, p: impl AsRef<Path>) -> HostResult<std::fs::ReadDir> {
        let path = self.path(p);
        std::fs::read_dir(&path).map_err(HostError::at(path))
    }

    /// The permission bits of a file, `None` when it is not there.
    pub fn mode(&self, p: impl AsRef<Path>) -> Option<u32> {
        std::fs::metadata(self.path(p))
            .ok()
            .map(|m| m.permissions().mode() & 0o7777)
    }

    pub fn set_mode(&self, p: impl AsRef<Path>, mode: u32) -> HostResult<()> {
        let path = self.path(p);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(HostError::at(path))
    }

    /// `mkdir -p`.
    pub fn create_dir_all(&self, p: impl AsRef<Path>) -> HostResult<()> {
        let path = self.path(p);
        std::fs::create_dir_all(&path).map_err(HostError::at(path))
    }

    /// Writes `data` to `p` unless it already holds exactly that with this mode (atomically,
    /// see the module's documentation). Creates missing parents. Returns whether anything
    /// changed.
    pub fn write_file(&self, p: impl AsRef<Path>, data: &[u8], mode: u32) -> HostResult<bool> {
        let path = self.path(p);
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if meta.is_file()
                && meta.permissions().mode() & 0o7777 == mode
                && meta.len() == data.len() as u64
                && std::fs::read(&path).map_err(HostError::at(&path))? == data
            {
                return Ok(false);
            }
        }
        write_atomically(&path, mode, |f| f.write_all(data))?;
        Ok(true)
    }

    /// Writes a file through `fill` under a temp name, then renames it into place.
    pub fn write_with(
        &self,
        p: impl AsRef<Path>,
        mode: u32,
        fill: impl FnOnce(&mut File) -> std::io::Result<()>,
    ) -> HostResult<()> {
        write_atomically(&self.path(p), mode, fill)
    }

    /// Makes `to` a hard link to the file `from` (both host paths): linked under a temp name
    /// beside `to`, then renamed over it, so `to` is never missing or half there. Fails across
    /// file systems, where the caller writes a copy instead.
    pub fn link_over(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> HostResult<()> {
        let (from, to) = (self.path(from), self.path(to));
        let (dir, tmp) = temp_beside(&to)?;
        let _ = std::fs::remove_file(&tmp);
        let res = std::fs::hard_link(&from, &tmp)
            .and_then(|()| std::fs::rename(&tmp, &to))
            .and_then(|()| File::open(dir)?.sync_all());
        if let Err(e) = res {
            let _ = std::fs::remove_file(&tmp);
            return Err(HostError {
                path: to,
                source: e,
            });
        }
        Ok(())
    }

    /// Writes a kernel pseudo-file (a sysctl under `/proc/sys`) in place: those take no temp
    /// names or renames, and a write there is whole or refused.
    pub fn write_in_place(&self, p: impl AsRef<Path>, data: &[u8]) -> HostResult<()> {
        let path = self.path(p);
        std::fs::write(&path, data).map_err(HostError::at(path))
    }

    /// Renames a file within the host.
    pub fn rename(&self, from: impl AsRef<Path>, to: impl AsRef<Path>) -> HostResult<()> {
        let from = self.path(from);
        std::fs::rename(&from, self.path(to)).map_err(HostError::at(from))
    }

    /// Removes a file; `Ok(false)` when it was not there.
    pub fn remove_file(&self, p: impl AsRef<Path>) -> HostResult<bool> {
        let path = self.path(p);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(HostError { path, source: e }),
        }
    }

    /// Removes a directory and everything in it.
    pub fn remove_dir_all(&self, p: impl AsRef<Path>) -> HostResult<()> {
        let path = self.path(p);
        std::fs::remove_dir_all(&path).map_err(HostError::at(path))
    }

    /// Removes a directory if it is empty; true when it did.
    pub fn remove_empty_dir(&self, p: impl AsRef<Path>) -> bool {
        std::fs::remove_dir(self.path(p)).is_ok()
    }

    /// Removes a directory if it is empty (and then its parents up to `stop`, exclusive). Both
    /// are host paths.
    pub fn remove_empty_dirs(&self, dir: &Path, stop: &Path) {
        let mut d = dir.to_path_buf();
        while d.starts_with(stop) && d != stop {
            if !self.remove_empty_dir(&d) {
                break;
            }
            match d.parent() {
                Some(p) => d = p.to_path_buf(),
                None => break,
            }
        }
    }
}

/// The directory of `path` (made if missing) and a temp name in it for `path`'s next content.
fn temp_beside(path: &Path) -> HostResult<(&Path, PathBuf)> {
    let Some(dir) = path.parent() else {
        return Err(HostError {
            path: path.to_path_buf(),
            source: std::io::Error::other("no parent directory"),
        });
    };
    std::fs::create_dir_all(dir).map_err(HostError::at(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok((
        dir,
        dir.join(format!(".{name}.bale-tmp.{}", std::process::id())),
    ))
}

fn write_atomically(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> HostResult<()> {
    let (dir, tmp) = temp_beside(path)?;
    let res = (|| {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(HostError {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}

impl From<HostError> for StepError {
    fn from(e: HostError) -> StepError {
        StepError::Io {
            path: e.path,
            source: e.source,
        }
    }
}

/// What the steps do to the host that is not a file. [`SystemCommands`] does it; a test puts
/// a recorder in its place.
pub trait HostCommands {
    /// Runs a program; its stdout on success, an error with its stderr otherwise.
    fn run(&self, program: &str, args: &[&str]) -> StepResult<String>;
    /// Whether a program exits with success (for questions such as `systemctl is-active`).
    fn succeeds(&self, program: &str, args: &[&str]) -> bool;
    /// SIGKILL to a process.
    fn kill(&self, pid: i32);
    /// Detaches a mount; true when it did.
    fn unmount(&self, path: &Path) -> bool;
    /// Removes an lvscare guardian's rules and link (`lvscare --clean`).
    fn lvscare_clean(&self, cfg: &bale_lvscare::Config) -> Result<(), bale_lvscare::Error>;
}

/// The host's own programs and system calls.
pub struct SystemCommands;

impl HostCommands for SystemCommands {
    fn run(&self, program: &str, args: &[&str]) -> StepResult<String> {
        let shown = std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ");
        let out = Command::new(program)
            .args(args)
            .output()
            .map_err(|source| StepError::Spawn {
                command: shown.clone(),
                source,
            })?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = err.trim();
            return Err(if err.is_empty() {
                StepError::Exited {
                    command: shown,
                    status: out.status,
                }
            } else {
                StepError::Command {
                    command: shown,
                    detail: err.to_string(),
                }
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn kill(&self, pid: i32) {
        // A pid read from /proc: at worst the process is gone already.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    fn unmount(&self, path: &Path) -> bool {
        // MNT_DETACH cannot hang on a busy mount.
        nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).is_ok()
    }

    fn lvscare_clean(&self, cfg: &bale_lvscare::Config) -> Result<(), bale_lvscare::Error> {
        bale_lvscare::clean(cfg).map_err(Into::into)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A node in a temporary directory for the steps' tests: its root, a stand-in for its
    //! commands, its context, and a bundle for it.

    use super::*;
    use crate::node::context::NodeContext;
    use crate::node::step::StepEnv;
    use bale_payload::{Bundle, BundleMeta, BundleWriter, WriteOptions};
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    /// Records every command; answers `run` from `answers` (the first whose key the command
    /// line contains), else with empty output. `succeeds` holds for the lines in `true_for`,
    /// which `systemctl enable`/`disable` keep as systemd would, so a second apply sees the
    /// units it started running.
    #[derive(Default)]
    pub struct Recorder {
        pub log: RefCell<Vec<String>>,
        pub answers: Vec<(String, String)>,
        pub true_for: RefCell<Vec<String>>,
    }

    impl Recorder {
        /// The recorded command lines, and a fresh log.
        pub fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.borrow_mut())
        }

        fn line(program: &str, args: &[&str]) -> String {
            let program = Path::new(program)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            std::iter::once(program.as_str())
                .chain(args.iter().copied())
                .collect::<Vec<_>>()
                .join(" ")
        }

        fn systemd_state(&self, args: &[&str]) {
            let mut state = self.true_for.borrow_mut();
            let facts = |unit: &str, now: bool| {
                let mut v = vec![format!("systemctl is-enabled --quiet {unit}")];
                if now {
                    v.push(format!("systemctl is-active --quiet {unit}"));
                }
                v
            };
            match args {
                ["enable", "--now", unit] | ["enable", unit] => {
                    for f in facts(unit, args.len() == 3) {
                        if !state.contains(&f) {
                            state.push(f);
                        }
                    }
                }
                ["disable", "--now", unit] => {
                    let gone = facts(unit, true);
                    state.retain(|f| !gone.contains(f));
                }
                _ => {}
            }
        }
    }

    impl HostCommands for Recorder {
        fn run(&self, program: &str, args: &[&str]) -> StepResult<String> {
            let line = Self::line(program, args);
            self.log.borrow_mut().push(line.clone());
            if program == "systemctl" {
                self.systemd_state(args);
            }
            Ok(self
                .answers
                .iter()
                .find(|(k, _)| line.contains(k.as_str()))
                .map(|(_, v)| v.clone())
                .unwrap_or_default())
        }

        fn succeeds(&self, program: &str, args: &[&str]) -> bool {
            let line = Self::line(program, args);
            self.log.borrow_mut().push(line.clone());
            self.true_for.borrow().contains(&line)
        }

        fn kill(&self, pid: i32) {
            self.log.borrow_mut().push(format!("kill {pid}"));
        }

        fn unmount(&self, path: &Path) -> bool {
            self.log
                .borrow_mut()
                .push(format!("umount {}", path.display()));
            true
        }

        fn lvscare_clean(&self, cfg: &bale_lvscare::Config) -> Result<(), bale_lvscare::Error> {
            self.log
                .borrow_mut()
                .push(format!("lvscare --clean {}", cfg.vs));
            Ok(())
        }
    }

    /// What a file under the root is: its bytes and mode, and (for telling a rewrite of the
    /// same bytes) its inode and mtime. Directories are listed with nothing.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct FileState {
        pub data: Option<Vec<u8>>,
        pub mode: u32,
        pub ino: u64,
        pub mtime_ns: i128,
    }

    /// A node under a temporary directory: systemd "runs" there, `/proc/self/status` has the
    /// full capability bounding set and kubelet's sysctls are as kubelet wants them.
    pub struct FakeNode {
        pub dir: tempfile::TempDir,
        pub root: HostRoot,
        pub commands: Recorder,
        pub ctx: NodeContext,
    }

    impl FakeNode {
        pub fn new() -> FakeNode {
            let dir = tempfile::tempdir().unwrap();
            let root = HostRoot::at(dir.path());
            // What every host has: undo stops emptying directories at these.
            for dir in ["/etc", "/opt", "/usr/local/bin"] {
                root.create_dir_all(dir).unwrap();
            }
            root.create_dir_all("/run/systemd/system").unwrap();
            root.create_dir_all("/var/lib/bale/steps").unwrap();
            root.write_file(
                "/proc/self/status",
                b"Name:\tbale\nCapBnd:\t000001ffffffffff\n",
                0o444,
            )
            .unwrap();
            for (name, value) in crate::kube::facts::KUBELET_SYSCTLS {
                let path = Path::new("/proc/sys").join(name.replace('.', "/"));
                root.write_file(path, format!("{value}\n").as_bytes(), 0o644)
                    .unwrap();
            }
            let ctx = NodeContext {
                data_dir: "/var/lib/bale".into(),
                bundle_digest: "ab12".into(),
                node_ip: "10.0.0.5".into(),
                role: "master".into(),
                first_master: true,
                masters: vec!["10.0.0.5".into()],
                nodes: Vec::new(),
                registry_port: crate::node::context::REGISTRY_PORT,
                vip: crate::node::context::DEFAULT_VIP.to_string(),
                registry_vip: None,
                env: Default::default(),
            };
            FakeNode {
                dir,
                root,
                commands: Recorder::default(),
                ctx,
            }
        }

        pub fn env<'a>(&'a self, bundle: Option<&'a Bundle>) -> StepEnv<'a> {
            StepEnv {
                ctx: &self.ctx,
                bundle,
                root: &self.root,
                commands: &self.commands,
            }
        }

        /// A bundle holding `files` at the node's `<data-dir>/bundle.bale`, behind a stub that
        /// is only an ELF header (the tests never run it).
        pub fn bundle(&self, files: &[(&str, &[u8])]) -> Bundle {
            let head = {
                let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
                exe[..4096].to_vec()
            };
            let stub = self.dir.path().join("stub");
            std::fs::write(&stub, head).unwrap();
            let dest = self.root.path(self.ctx.bundle_path());
            let mut w =
                BundleWriter::create(&dest, &stub, BundleMeta::default(), WriteOptions::default())
                    .unwrap();
            for (path, data) in files {
                w.add_bytes(path, 0o755, data).unwrap();
            }
            w.finish().unwrap();
            std::fs::remove_file(&stub).unwrap();
            Bundle::open(&dest).unwrap()
        }

        /// Every file and directory under the root, by host path.
        pub fn snapshot(&self) -> BTreeMap<PathBuf, FileState> {
            let mut out = BTreeMap::new();
            let mut todo = vec![self.dir.path().to_path_buf()];
            while let Some(d) = todo.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let e = e.unwrap();
                    let meta = std::fs::symlink_metadata(e.path()).unwrap();
                    let host = Path::new("/").join(e.path().strip_prefix(self.dir.path()).unwrap());
                    let data = if meta.is_dir() {
                        todo.push(e.path());
                        None
                    } else {
                        Some(std::fs::read(e.path()).unwrap())
                    };
                    let state = FileState {
                        mode: meta.mode() & 0o7777,
                        ino: if data.is_some() { meta.ino() } else { 0 },
                        mtime_ns: if data.is_some() {
                            i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
                        } else {
                            0
                        },
                        data,
                    };
                    out.insert(host, state);
                }
            }
            out
        }
    }

    /// The paths that differ between two snapshots (added, removed or changed).
    pub fn differences(
        before: &BTreeMap<PathBuf, FileState>,
        after: &BTreeMap<PathBuf, FileState>,
    ) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = before
            .iter()
            .filter(|(p, s)| after.get(*p) != Some(*s))
            .map(|(p, _)| p.clone())
            .collect();
        out.extend(after.keys().filter(|p| !before.contains_key(*p)).cloned());
        out.sort();
        out
    }

    /// Applies `step` again over what its first apply left (`written`), then undoes it: the
    /// second apply must change nothing (not even a file's inode or mtime), and the undo must
    /// bring the tree back to `before`, leaving other people's files alone.
    pub fn reapply_then_undo(
        step: &dyn crate::node::step::Step,
        env: &crate::node::step::StepEnv,
        node: &FakeNode,
        before: &BTreeMap<PathBuf, FileState>,
        written: &BTreeMap<PathBuf, FileState>,
    ) {
        let mut p = crate::node::step::Progress::new(step.name());
        step.apply(env, &mut p).unwrap();
        assert_eq!(
            p.changes(),
            0,
            "{}: the second apply changed something",
            step.name()
        );
        assert_eq!(
            differences(written, &node.snapshot()),
            Vec::<PathBuf>::new()
        );
        let mut p = crate::node::step::Progress::new(step.name());
        step.undo(env, &mut p).unwrap();
        assert_eq!(differences(before, &node.snapshot()), Vec::<PathBuf>::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_as_given_on_the_system_and_go_under_a_root_otherwise() {
        let sys = HostRoot::system();
        assert_eq!(sys.path("/etc/hosts"), Path::new("/etc/hosts"));
        assert_eq!(sys.path("data"), Path::new("data"));
        let r = HostRoot::at("/tmp/x");
        assert_eq!(r.path("/etc/hosts"), Path::new("/tmp/x/etc/hosts"));
        assert_eq!(r.path("data"), Path::new("/tmp/x/data"));
    }

    #[test]
    fn write_file_skips_identical_content_and_fixes_mode() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        let p = Path::new("/a/b/file.conf");
        assert!(root.write_file(p, b"one\n", 0o644).unwrap());
        assert!(!root.write_file(p, b"one\n", 0o644).unwrap());
        assert!(root.write_file(p, b"one\n", 0o600).unwrap());
        assert_eq!(root.mode(p), Some(0o600));
        assert!(root.write_file(p, b"two\n", 0o600).unwrap());
        assert_eq!(root.read(p).unwrap(), b"two\n");
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("a/b")).unwrap().count(),
            1
        );
        assert!(root.remove_file(p).unwrap());
        assert!(!root.remove_file(p).unwrap());
        root.remove_empty_dirs(p.parent().unwrap(), Path::new("/"));
        assert!(!dir.path().join("a").exists());
    }

    #[test]
    fn errors_name_the_file_under_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::at(dir.path());
        let e = root.read("/etc/missing").unwrap_err();
        assert_eq!(e.path, dir.path().join("etc/missing"));
        assert_eq!(root.read_optional("/etc/missing").unwrap(), None);
    }
}

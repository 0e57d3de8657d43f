//! `bale agent step runtime`: containerd, runc and the CNI plugins from the bundle, with their
//! configuration, running under systemd.
//!
//! The bundle's `bin/*` files go to `/usr/local/bin`, `cni/bin/*` to `/opt/cni/bin` (sealer's
//! layout), each written under a temp name, synced and renamed, and skipped when the file there
//! already has the same bytes. Then `/etc/containerd/config.toml`, one
//! `/etc/containerd/certs.d/<domain>/hosts.toml` per registry domain of the bundled images, and
//! `containerd.service`; containerd is started and must answer `ctr version`.
//!
//! A bundle without `bin/containerd` carries no runtime. If containerd is already on the node,
//! the step writes only the hosts files (so that the existing containerd can use this node's
//! registry) and leaves that containerd's own config and service alone, saying whether the
//! config points at the hosts directory; otherwise it does nothing.
//!
//! Everything written is recorded in `<data-dir>/steps/runtime.json`; undo stops containerd,
//! kills the containers it ran, removes exactly the recorded files and empties containerd's
//! state (`/var/lib/containerd`, `/run/containerd`) so a reinstall starts clean. The
//! directories themselves stay: `/var/lib/containerd` may be a mount point.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bale_payload::{Bundle, Entry, Kind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::containerd_config::{self as cc, CgroupDriver};
use super::cri::{self, CriClient};
use super::host::{HostCommands, HostRoot};
use super::registry_unit;
use super::step::{self, Finding, Progress, Step, StepEnv, StepError, StepResult};
use super::systemd::{self, Systemd};
use bale_registry::names;
use bale_registry::{Lookup, Registry, INDEX_PATH};

pub const BIN_DIR: &str = "/usr/local/bin";
/// How long containerd may take to answer after a start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// The index is read whole; the registry refuses bigger ones too.
const MAX_INDEX_LEN: u64 = 64 << 20;

/// Why the runtime step failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "{}: {INDEX_PATH} is {size} bytes, more than an image index can be",
        bundle.display()
    )]
    IndexTooLarge { bundle: PathBuf, size: u64 },
    #[error("{}: {INDEX_PATH}", bundle.display())]
    BadIndex {
        bundle: PathBuf,
        source: bale_contract::oci::OciError,
    },
    #[error(
        "{}: the written file does not match {entry} in the bundle (disk full or failing?)",
        written.display()
    )]
    WrittenFileDiffers { written: PathBuf, entry: String },
    #[error("no ctr on this node (the bundle's bin/ should carry it)")]
    NoCtr,
    /// containerd's last answer sits inside the sentence (its journal follows it).
    #[error(
        "containerd does not answer after {waited_secs}s: {last}\njournal of {}:\n{journal}",
        cc::UNIT
    )]
    ContainerdSilent {
        waited_secs: u64,
        last: CtrAnswer,
        journal: String,
    },
    #[error(
        "systemd is not running on this host: bale runs containerd and its registry as systemd \
         services (boot the host with systemd)"
    )]
    NoSystemd,
}

/// What `ctr version` last said while containerd was awaited.
#[derive(Debug)]
pub enum CtrAnswer {
    /// It ran, but without the server's part.
    Output(String),
    Failed(Box<StepError>),
}

impl std::fmt::Display for CtrAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtrAnswer::Output(out) => f.write_str(out),
            CtrAnswer::Failed(e) => write!(f, "{e}"),
        }
    }
}

/// What apply wrote, for undo.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Every file bale wrote, in order.
    files: Vec<String>,
    /// True once bale installed and started its own containerd.
    containerd: bool,
}

impl Record {
    fn add(&mut self, path: &Path) {
        let p = path.to_string_lossy().into_owned();
        if !self.files.contains(&p) {
            self.files.push(p);
        }
    }
}

/// A runtime file of the bundle and where it goes.
#[derive(Debug, Clone)]
pub struct RuntimeFile {
    pub entry: Entry,
    pub dest: PathBuf,
}

/// The bundle's `bin/*` and `cni/bin/*` files (direct children only) and their destinations.
pub fn runtime_files(entries: &[Entry]) -> Vec<RuntimeFile> {
    entries
        .iter()
        .filter(|e| e.kind == Kind::File)
        .filter_map(|e| {
            let (dir, rest) = if let Some(r) = e.path.strip_prefix("bin/") {
                (BIN_DIR, r)
            } else if let Some(r) = e.path.strip_prefix("cni/bin/") {
                (cc::CNI_BIN_DIR, r)
            } else {
                return None;
            };
            (!rest.is_empty() && !rest.contains('/')).then(|| RuntimeFile {
                entry: e.clone(),
                dest: Path::new(dir).join(rest),
            })
        })
        .collect()
}

pub fn has_containerd(files: &[RuntimeFile]) -> bool {
    files.iter().any(|f| f.entry.path == "bin/containerd")
}

/// The full image names in the bundle's `registry/index.json` (none without images).
pub fn bundled_image_names(bundle: &Bundle, entries: &[Entry]) -> StepResult<Vec<String>> {
    let Some(e) = entries.iter().find(|e| e.path == INDEX_PATH) else {
        return Ok(Vec::new());
    };
    let at = |source| StepError::Payload {
        path: bundle.path().join(INDEX_PATH),
        source,
    };
    if e.size > MAX_INDEX_LEN {
        return Err(RuntimeError::IndexTooLarge {
            bundle: bundle.path().to_path_buf(),
            size: e.size,
        }
        .into());
    }
    let mut text = Vec::with_capacity(e.size as usize);
    std::io::Read::read_to_end(&mut bundle.open_entry(e).map_err(at)?, &mut text)
        .map_err(|err| StepError::io(bundle.path().join(INDEX_PATH), err))?;
    let index =
        bale_contract::oci::Index::parse(&text).map_err(|source| RuntimeError::BadIndex {
            bundle: bundle.path().to_path_buf(),
            source,
        })?;
    Ok(index.ref_names().map(str::to_string).collect())
}

/// The bundled image the check pulls through the CRI: the smallest, so that the check stays
/// quick. Its size is the manifest's own bytes plus the config and layers it lists; images
/// whose size cannot be told come last, and ties go by name. `None` without images.
pub fn smallest_image(bundle: &Bundle, names: &[String]) -> Option<String> {
    let registry = Registry::from_bundle(bundle).ok();
    let size = |n: &str| registry.as_ref().and_then(|r| image_size(r, n));
    names
        .iter()
        .min_by_key(|n| (size(n).unwrap_or(u64::MAX), n.as_str()))
        .cloned()
}

fn image_size(reg: &Registry, name: &str) -> Option<u64> {
    let r = names::parse_image_ref(name).ok()?;
    let digest = match r.digest {
        Some(d) => d,
        None => match reg.lookup(&r.full_name(), None) {
            Lookup::Found(_, repo) => *repo.tags.get(r.tag.as_deref().unwrap_or("latest"))?,
            _ => return None,
        },
    };
    manifest_size(reg, &digest, 0)
}

/// For an index: its smallest child in the bundle (bundles usually carry only the node's
/// platform, so that is the one a pull fetches).
fn manifest_size(reg: &Registry, digest: &names::Digest, depth: usize) -> Option<u64> {
    if depth > 4 {
        return None;
    }
    let m = reg.manifest(digest)?;
    let own = m.bytes.len() as u64;
    let doc = bale_contract::oci::ManifestDoc::parse(&m.bytes).ok()?;
    if let Some(children) = doc.manifests {
        return children
            .iter()
            .filter_map(|c| names::parse_digest(&c.digest))
            .filter_map(|c| manifest_size(reg, &c, depth + 1))
            .min()
            .map(|s| s + own);
    }
    let sizes = doc.config.iter().chain(doc.layers.iter().flatten());
    Some(own + sizes.map(|d| d.size).sum::<u64>())
}

fn sha256_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(h.finalize().into())
}

/// True when the host file `dest` holds exactly the entry's bytes.
fn same_content(root: &HostRoot, dest: &Path, entry: &Entry) -> bool {
    let path = root.path(dest);
    std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == entry.size)
        && sha256_file(&path).is_ok_and(|d| d == entry.sha256)
}

fn mode_of(entry: &Entry) -> u32 {
    // Runtime binaries must be executable whatever the build tree said.
    (entry.mode & 0o7777) | 0o555
}

/// Installs one file from the bundle; true when it changed something. The extract phase has
/// put the same bytes under `rootfs` already: when that copy checks out, the file is a hard link
/// to it rather than a second copy written from the bundle (no second decompression, no second
/// write: with several nodes on one disk, those writes were most of this step). Across file
/// systems, or when the extracted copy differs, it is written from the bundle. Either way it is
/// replaced by rename, never written in place, and so is every later extract of the tree.
fn install_file(
    root: &HostRoot,
    bundle: &Bundle,
    rootfs: &Path,
    f: &RuntimeFile,
) -> StepResult<bool> {
    let mode = mode_of(&f.entry);
    if same_content(root, &f.dest, &f.entry) {
        if root.mode(&f.dest) == Some(mode) {
            return Ok(false);
        }
        root.set_mode(&f.dest, mode)?;
        return Ok(true);
    }
    let extracted = rootfs.join(&f.entry.path);
    if same_content(root, &extracted, &f.entry) && root.link_over(&extracted, &f.dest).is_ok() {
        root.set_mode(&f.dest, mode)?;
        return Ok(true);
    }
    let mut reader = bundle
        .open_entry(&f.entry)
        .map_err(|source| StepError::Payload {
            path: bundle.path().join(&f.entry.path),
            source,
        })?;
    root.write_with(&f.dest, mode, |out| {
        std::io::copy(&mut reader, out).map(|_| ())
    })?;
    if !same_content(root, &f.dest, &f.entry) {
        return Err(RuntimeError::WrittenFileDiffers {
            written: root.path(&f.dest),
            entry: f.entry.path.clone(),
        }
        .into());
    }
    Ok(true)
}

fn hosts_file(domain: &str) -> PathBuf {
    Path::new(cc::HOSTS_DIR).join(domain).join("hosts.toml")
}

/// containerd as `ctr` reaches it on one host.
#[derive(Clone, Copy)]
struct Ctr<'a> {
    root: &'a HostRoot,
    commands: &'a dyn HostCommands,
}

impl<'a> Ctr<'a> {
    fn of(env: &StepEnv<'a>) -> Ctr<'a> {
        Ctr {
            root: env.root,
            commands: env.commands,
        }
    }

    /// `ctr` to talk to containerd with: the one bale installed, else one in PATH.
    fn path(&self) -> Option<PathBuf> {
        let ours = Path::new(BIN_DIR).join("ctr");
        if self.root.is_file(&ours) {
            Some(self.root.path(ours))
        } else {
            step::which("ctr")
        }
    }

    fn run(&self, args: &[&str]) -> StepResult<String> {
        let ctr = self.path().ok_or(RuntimeError::NoCtr)?;
        let socket = self.root.path(cc::SOCKET);
        let socket = socket.to_string_lossy();
        let mut all = vec!["--address", &*socket];
        all.extend_from_slice(args);
        self.commands.run(&ctr.to_string_lossy(), &all)
    }
}

/// Waits until containerd answers `ctr version` (server part included).
fn wait_for_containerd(ctr: Ctr, systemd: Systemd) -> StepResult<()> {
    let start = Instant::now();
    loop {
        let last = match ctr.run(&["version"]) {
            Ok(out) if out.contains("Server:") => return Ok(()),
            Ok(out) => CtrAnswer::Output(out),
            Err(e) => CtrAnswer::Failed(Box::new(e)),
        };
        if start.elapsed() > START_TIMEOUT {
            return Err(RuntimeError::ContainerdSilent {
                waited_secs: START_TIMEOUT.as_secs(),
                last,
                journal: systemd.recent_log(cc::UNIT),
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn list(out: &str) -> Vec<String> {
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Kills and deletes every task containerd runs, in every namespace.
fn kill_all_tasks(ctr: Ctr, p: &mut Progress) {
    let Ok(namespaces) = ctr.run(&["namespaces", "ls", "-q"]) else {
        return;
    };
    for ns in list(&namespaces) {
        let Ok(tasks) = ctr.run(&["-n", &ns, "tasks", "ls", "-q"]) else {
            continue;
        };
        for id in list(&tasks) {
            let _ = ctr.run(&["-n", &ns, "tasks", "kill", "-s", "SIGKILL", &id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while ctr.run(&["-n", &ns, "tasks", "delete", &id]).is_err()
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            p.changed(format!("killed container task {ns}/{id}"));
        }
    }
}

/// Kills leftover processes running one of these executables (shims outlive containerd).
fn kill_processes_of(ctr: Ctr, exes: &[PathBuf], p: &mut Progress) {
    let Ok(dir) = ctr.root.read_dir("/proc") else {
        return;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(e.path().join("exe")) else {
            continue;
        };
        let exe_s = exe.to_string_lossy();
        let exe_s = exe_s.trim_end_matches(" (deleted)");
        if exes.iter().any(|x| x.as_os_str() == exe_s) {
            ctr.commands.kill(pid);
            p.changed(format!("killed leftover {exe_s} (pid {pid})"));
        }
    }
}

/// The config's host- and bundle-dependent settings.
fn config_options(
    root: &HostRoot,
    bundle: &Bundle,
    entries: &[Entry],
) -> StepResult<cc::ConfigOptions> {
    let names = bundled_image_names(bundle, entries)?;
    Ok(cc::ConfigOptions {
        restrict_oom_score_adj: crate::kube::NodeFacts::detect(root)?
            .needs_restrict_oom_score_adj(),
        sandbox_image: cc::sandbox_image(names.iter().map(String::as_str)),
    })
}

/// Mount points strictly below `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .filter(|m| m.starts_with(dir) && m != dir)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything below the host directory `dir` and deletes its contents, leaving `dir`
/// itself (it may be a mount point, as on the test nodes).
pub(crate) fn empty_dir(env: &StepEnv, dir: &Path, p: &mut Progress) -> StepResult<()> {
    let mountinfo = env.root.read_or_default("/proc/self/mountinfo");
    for m in mounts_below(&mountinfo, dir) {
        if env.commands.unmount(&env.root.path(&m)) {
            p.changed(format!("unmounted {}", m.display()));
        }
    }
    let entries = match env.root.read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let r = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        r.map_err(|err| StepError::io(&path, err))?;
        removed += 1;
    }
    if removed > 0 {
        p.changed(format!("emptied {}", dir.display()));
    }
    Ok(())
}

pub struct Runtime;

impl Runtime {
    fn manifest(env: &StepEnv) -> PathBuf {
        env.manifest_path("runtime")
    }

    fn domains(bundle: &Bundle, entries: &[Entry], p: &Progress) -> StepResult<BTreeSet<String>> {
        let names = bundled_image_names(bundle, entries)?;
        let (domains, bad) = cc::registry_domains(names.iter().map(String::as_str));
        for b in bad {
            p.note(format!("skipping an image name in {INDEX_PATH}: {b}"));
        }
        Ok(domains)
    }

    /// Writes the hosts files; true when any changed.
    fn write_hosts(
        env: &StepEnv,
        domains: &BTreeSet<String>,
        record: &mut Record,
        manifest: &Path,
        p: &mut Progress,
    ) -> StepResult<()> {
        for d in domains {
            let path = hosts_file(d);
            record.add(&path);
            step::save_manifest(env.root, manifest, record)?;
            let text = cc::render_hosts_toml(
                d,
                env.ctx.registry_port,
                env.ctx.registry_fallback().as_deref(),
            );
            if env.root.write_file(&path, text.as_bytes(), 0o644)? {
                p.changed(format!("wrote {}", path.display()));
            }
        }
        Ok(())
    }
}

impl Step for Runtime {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        let bundle = env.bundle()?;
        let entries = bundle.entries().map_err(|source| StepError::Payload {
            path: bundle.path().to_path_buf(),
            source,
        })?;
        let files = runtime_files(&entries);
        let p = Progress::new("runtime");
        let domains = Self::domains(bundle, &entries, &p)?;
        let mut out = Vec::new();
        for d in &domains {
            out.push(Finding::file_holds(
                env.root,
                &hosts_file(d),
                &cc::render_hosts_toml(
                    d,
                    env.ctx.registry_port,
                    env.ctx.registry_fallback().as_deref(),
                ),
            ));
        }
        if !has_containerd(&files) {
            out.push(Finding::ok(
                "this bundle carries no container runtime (no bin/containerd)",
            ));
            if let Ok(config) = env.root.read_to_string(cc::CONFIG_FILE) {
                out.push(Finding::of(
                    cc::config_uses_hosts_dir(&config),
                    format!(
                        "{}: config_path = \"{}\" (the CRI plugin reads the hosts files only then)",
                        cc::CONFIG_FILE,
                        cc::HOSTS_DIR
                    ),
                ));
            }
            return Ok(out);
        }
        for f in &files {
            let same = same_content(env.root, &f.dest, &f.entry);
            out.push(Finding::of(
                same,
                format!(
                    "{}: {}",
                    f.dest.display(),
                    if same {
                        "as in the bundle"
                    } else {
                        "missing or different from the bundle"
                    }
                ),
            ));
        }
        let driver = CgroupDriver::detect(env.root);
        let opts = config_options(env.root, bundle, &entries)?;
        let mut config = Finding::file_holds(
            env.root,
            Path::new(cc::CONFIG_FILE),
            &cc::render_config_toml(driver, &opts),
        );
        config.text += &format!(" (cgroup driver {})", driver.as_str());
        out.push(config);
        let active = env.systemd().is_active(cc::UNIT);
        out.push(Finding::of(
            active,
            format!(
                "{}: {}",
                cc::UNIT,
                if active { "active" } else { "not active" }
            ),
        ));
        out.push(match Ctr::of(env).run(&["version"]) {
            Ok(v) if v.contains("Server:") => Finding::ok(format!(
                "containerd answers: {}",
                v.lines()
                    .skip_while(|l| !l.starts_with("Server:"))
                    .find(|l| l.trim_start().starts_with("Version:"))
                    .map(|l| l.trim())
                    .unwrap_or("")
            )),
            Ok(v) => Finding::bad(format!("containerd does not answer: {}", v.trim())),
            Err(e) => Finding::bad(format!("containerd does not answer: {e}")),
        });
        // `ctr` above ignores the hosts files; kubelet pulls through the CRI plugin, which
        // reads them through config_path, so only a CRI pull shows that kubelet's path works.
        let cri = CriClient::new(env.root.path(cc::SOCKET));
        let version = cri.version();
        out.push(match &version {
            Ok(v) => Finding::ok(format!(
                "CRI answers: {} {} ({})",
                v.runtime_name,
                v.runtime_version,
                cri::API
            )),
            Err(e) => Finding::bad(format!("CRI does not answer: {e}")),
        });
        let names = bundled_image_names(bundle, &entries)?;
        if let Some(image) = smallest_image(bundle, &names) {
            let what =
                format!("the CRI plugin pulls {image} from the bale registry (kubelet's path)");
            let registry = format!("127.0.0.1:{}", env.ctx.registry_port);
            out.push(match version {
                Err(_) => Finding::bad(format!("{what}: not tried, the CRI does not answer")),
                // The registry step comes after this one (and its check reports the registry):
                // until it runs, there is nothing to pull from, which is no fault of the runtime.
                Ok(_) if registry_unit::probe(&registry, Duration::from_secs(2)).is_err() => {
                    Finding::ok(format!(
                        "{what}: not tried yet, the bale registry does not answer on {registry} \
                         (bale agent step registry apply starts it)"
                    ))
                }
                // This stores the image in containerd's k8s.io namespace, where kubelet puts
                // the images it pulls: kubelet would pull it there anyway.
                Ok(_) => match cri.pull_image(&image) {
                    Ok(_) => Finding::ok(what),
                    Err(e) => Finding::bad(format!("{what}: {e}")),
                },
            });
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let bundle = env.bundle()?;
        let entries = bundle.entries().map_err(|source| StepError::Payload {
            path: bundle.path().to_path_buf(),
            source,
        })?;
        let files = runtime_files(&entries);
        let domains = Self::domains(bundle, &entries, p)?;
        let root = env.root;
        let systemd = env.systemd();
        let manifest = Self::manifest(env);
        let mut record: Record = step::load_manifest(root, &manifest)?.unwrap_or_default();

        if !has_containerd(&files) {
            match step::which("containerd") {
                Some(existing) if !record.containerd => {
                    p.note(format!(
                        "this bundle carries no container runtime (no bin/containerd); using the \
                         containerd already here ({}): only its registry hosts files are written",
                        existing.display()
                    ));
                    Self::write_hosts(env, &domains, &mut record, &manifest, p)?;
                    step::save_manifest(root, &manifest, &record)?;
                    let config = root.read_or_default(cc::CONFIG_FILE);
                    if !cc::config_uses_hosts_dir(&config) {
                        p.note(format!(
                            "{} does not set config_path = \"{}\": the CRI plugin will not use \
                             this node's registry until it does (then restart containerd)",
                            cc::CONFIG_FILE,
                            cc::HOSTS_DIR
                        ));
                    }
                }
                _ => p.note(
                    "this bundle carries no container runtime (no bin/containerd): nothing to do",
                ),
            }
            return Ok(());
        }
        if !systemd.is_running() {
            return Err(RuntimeError::NoSystemd.into());
        }

        let mut restart_needed = false;
        let rootfs = env.ctx.rootfs();
        for f in &files {
            record.add(&f.dest);
            step::save_manifest(root, &manifest, &record)?;
            if install_file(root, bundle, &rootfs, f)? {
                p.changed(format!("installed {}", f.dest.display()));
                restart_needed = true;
            }
        }
        let driver = CgroupDriver::detect(root);
        let opts = config_options(root, bundle, &entries)?;
        record.add(Path::new(cc::CONFIG_FILE));
        step::save_manifest(root, &manifest, &record)?;
        if root.write_file(
            cc::CONFIG_FILE,
            cc::render_config_toml(driver, &opts).as_bytes(),
            0o644,
        )? {
            p.changed(format!(
                "wrote {} (cgroup driver {}{}{})",
                cc::CONFIG_FILE,
                driver.as_str(),
                opts.sandbox_image
                    .as_ref()
                    .map(|i| format!(", sandbox image {i}"))
                    .unwrap_or_default(),
                if opts.restrict_oom_score_adj {
                    ", oom_score_adj restricted: this host cannot lower it"
                } else {
                    ""
                }
            ));
            restart_needed = true;
        }
        Self::write_hosts(env, &domains, &mut record, &manifest, p)?;

        let unit_path = systemd::unit_path(cc::UNIT);
        record.add(&unit_path);
        record.containerd = true;
        step::save_manifest(root, &manifest, &record)?;
        let was_active = systemd.is_active(cc::UNIT);
        let containerd = Path::new(BIN_DIR).join("containerd");
        let unit_text = cc::render_unit(&containerd.to_string_lossy());
        let unit_changed = root
            .read_to_string(&unit_path)
            .map_or(true, |t| t != unit_text);
        if systemd.install_and_start(cc::UNIT, &unit_text)? {
            p.changed(format!("{} enabled and started", cc::UNIT));
        }
        if was_active && restart_needed && !unit_changed {
            systemd.restart(cc::UNIT)?;
            p.changed(format!(
                "restarted {} for the new binaries or config",
                cc::UNIT
            ));
        }
        wait_for_containerd(Ctr::of(env), systemd)?;
        p.note("containerd answers");
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let root = env.root;
        let systemd = env.systemd();
        let manifest = Self::manifest(env);
        let Some(record) = step::load_manifest::<Record>(root, &manifest)? else {
            return Ok(());
        };
        if record.containerd {
            if systemd.is_active(cc::UNIT) {
                kill_all_tasks(Ctr::of(env), p);
            }
            if systemd.remove(cc::UNIT)? {
                p.changed(format!("stopped and removed {}", cc::UNIT));
            }
            let shims: Vec<PathBuf> = record
                .files
                .iter()
                .filter(|f| f.contains("containerd-shim") || f.ends_with("/containerd"))
                .map(PathBuf::from)
                .collect();
            kill_processes_of(Ctr::of(env), &shims, p);
            empty_dir(env, Path::new(cc::STATE_DIR), p)?;
            empty_dir(env, Path::new(cc::ROOT_DIR), p)?;
            // The opt plugin's empty bin/ and lib/ at its default place, from a configuration
            // without OPT_DIR; anything someone put in them stays.
            for sub in ["bin", "lib"] {
                root.remove_empty_dirs(
                    &Path::new(cc::DEFAULT_OPT_DIR).join(sub),
                    Path::new("/opt"),
                );
            }
        }
        for f in record.files.iter().rev() {
            let path = Path::new(f);
            if root.remove_file(path)? {
                p.changed(format!("removed {f}"));
            }
            if let Some(parent) = path.parent() {
                let stop = if parent.starts_with(cc::CONFIG_DIR) {
                    Path::new("/etc")
                } else if parent.starts_with("/opt/cni") {
                    Path::new("/opt")
                } else {
                    parent
                };
                root.remove_empty_dirs(parent, stop);
            }
        }
        root.remove_file(&manifest)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: path.into(),
            kind,
            mode: 0o644,
            size: 0,
            sha256: [0; 32],
            frames: Vec::new(),
            target: String::new(),
        }
    }

    #[test]
    fn runtime_files_map_to_their_install_dirs() {
        let entries = [
            entry("bin", Kind::Dir),
            entry("bin/containerd", Kind::File),
            entry("bin/runc", Kind::File),
            entry("bin/sub/x", Kind::File),
            entry("bin/link", Kind::Symlink),
            entry("cni/bin/bridge", Kind::File),
            entry("cni/conf/10-net.conf", Kind::File),
            entry("etc/bin/x", Kind::File),
            entry("registry/blobs/sha256/ab", Kind::Blob),
        ];
        let f = runtime_files(&entries);
        let got: Vec<(&str, &Path)> = f
            .iter()
            .map(|f| (f.entry.path.as_str(), f.dest.as_path()))
            .collect();
        assert_eq!(
            got,
            [
                ("bin/containerd", Path::new("/usr/local/bin/containerd")),
                ("bin/runc", Path::new("/usr/local/bin/runc")),
                ("cni/bin/bridge", Path::new("/opt/cni/bin/bridge")),
            ]
        );
        assert!(has_containerd(&f));
        assert!(!has_containerd(&f[1..]));
        assert_eq!(mode_of(&entries[1]), 0o755);
    }

    #[test]
    fn mounts_below_a_dir_deepest_first() {
        let mi = "\
36 35 98:0 / /var/lib/containerd rw - ext4 /dev/vda rw
37 36 0:50 / /var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs rw - overlay overlay rw
38 35 0:51 / /run/containerd/io.containerd.runtime.v2.task/default/x/rootfs rw - overlay overlay rw
39 35 0:52 / /var/lib/containerd2 rw - tmpfs tmpfs rw
40 36 0:53 / /var/lib/containerd/with\\040space rw - tmpfs tmpfs rw
";
        let m = mounts_below(mi, Path::new("/var/lib/containerd"));
        assert_eq!(
            m,
            [
                PathBuf::from(
                    "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/1/fs"
                ),
                PathBuf::from("/var/lib/containerd/with space"),
            ]
        );
        assert_eq!(mounts_below(mi, Path::new("/run/containerd")).len(), 1);
    }

    use crate::node::host::testing::{differences, FakeNode};

    fn index_naming(image: &str) -> Vec<u8> {
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": bale_contract::oci::OCI_MANIFEST,
                "digest": format!("sha256:{}", "0".repeat(64)),
                "size": 2,
                "annotations": { bale_contract::oci::REF_NAME: image }
            }]
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn apply_writes_the_runtime_once_and_undo_takes_exactly_that_away() {
        let mut node = FakeNode::new();
        node.commands.answers = vec![(
            "ctr --address".into(),
            "Client:\n  Version: 1.7\nServer:\n  Version: 1.7\n".into(),
        )];
        let index = index_naming("docker.io/library/busybox:1.36");
        let bundle = node.bundle(&[
            ("bin/containerd", b"containerd program"),
            ("bin/ctr", b"ctr program"),
            ("cni/bin/bridge", b"bridge plugin"),
            (INDEX_PATH, &index),
        ]);
        // Files someone else keeps beside bale's.
        for foreign in [
            "/usr/local/bin/their-tool",
            "/etc/containerd/their.toml",
            "/etc/systemd/system/their.service",
        ] {
            node.root.write_file(foreign, b"theirs\n", 0o644).unwrap();
        }
        let before = node.snapshot();
        let env = node.env(Some(&bundle));

        let mut p = Progress::new("runtime");
        Runtime.apply(&env, &mut p).unwrap();
        assert!(p.changes() > 0);
        let written = node.snapshot();
        let new = differences(&before, &written);
        for f in [
            "/usr/local/bin/containerd",
            "/usr/local/bin/ctr",
            "/opt/cni/bin/bridge",
            cc::CONFIG_FILE,
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            "/etc/systemd/system/containerd.service",
            "/var/lib/bale/steps/runtime.json",
        ] {
            assert!(new.contains(&PathBuf::from(f)), "{f} not written: {new:?}");
        }
        assert_eq!(written[Path::new("/usr/local/bin/containerd")].mode, 0o755);
        assert_eq!(written[Path::new(cc::CONFIG_FILE)].mode, 0o644);
        let config = node.root.read_to_string(cc::CONFIG_FILE).unwrap();
        assert_eq!(
            config,
            cc::render_config_toml(
                CgroupDriver::Cgroupfs,
                &cc::ConfigOptions {
                    restrict_oom_score_adj: false,
                    sandbox_image: None
                }
            )
        );
        let unit = node
            .root
            .read_to_string("/etc/systemd/system/containerd.service")
            .unwrap();
        assert_eq!(unit, cc::render_unit("/usr/local/bin/containerd"));
        let log = node.commands.take();
        assert!(
            log.contains(&"systemctl daemon-reload".to_string())
                && log.contains(&"systemctl enable --now containerd.service".to_string()),
            "{log:?}"
        );
        let findings = Runtime.check(&env).unwrap();
        for f in findings.iter().filter(|f| f.text.starts_with('/')) {
            assert!(f.ok, "{}", f.text);
        }

        // Again: nothing rewritten (same inode and mtime), nothing restarted.
        let mut p = Progress::new("runtime");
        Runtime.apply(&env, &mut p).unwrap();
        assert_eq!(p.changes(), 0);
        assert_eq!(
            differences(&written, &node.snapshot()),
            Vec::<PathBuf>::new()
        );
        let log = node.commands.take();
        assert!(
            !log.iter().any(|l| {
                l.starts_with("systemctl restart")
                    || l.starts_with("systemctl enable ")
                    || l == "systemctl daemon-reload"
            }),
            "{log:?}"
        );

        // Undo: back to the host as it was, the others' files included.
        let mut p = Progress::new("runtime");
        Runtime.undo(&env, &mut p).unwrap();
        assert_eq!(
            differences(&before, &node.snapshot()),
            Vec::<PathBuf>::new()
        );
        let log = node.commands.take();
        assert!(
            log.contains(&"systemctl disable --now containerd.service".to_string()),
            "{log:?}"
        );
        // A second undo finds nothing to do.
        let mut p = Progress::new("runtime");
        Runtime.undo(&env, &mut p).unwrap();
        assert_eq!(p.changes(), 0);
    }

    #[test]
    fn a_binary_the_extracted_tree_holds_is_linked_from_there_and_never_shared_when_it_differs() {
        use std::os::unix::fs::MetadataExt;
        let mut node = FakeNode::new();
        node.commands.answers = vec![(
            "ctr --address".into(),
            "Client:\n  Version: 1.7\nServer:\n  Version: 1.7\n".into(),
        )];
        let bundle = node.bundle(&[
            ("bin/containerd", b"containerd program"),
            ("bin/ctr", b"ctr program"),
            ("cni/bin/bridge", b"bridge plugin"),
        ]);
        // What the extract phase left: containerd as in the bundle, ctr changed since, no bridge.
        let rootfs = Path::new("/var/lib/bale/rootfs");
        for (f, data) in [
            ("bin/containerd", &b"containerd program"[..]),
            ("bin/ctr", b"ctr program, edited"),
        ] {
            node.root.write_file(rootfs.join(f), data, 0o644).unwrap();
        }
        let env = node.env(Some(&bundle));
        assert_eq!(env.ctx.rootfs(), rootfs);
        Runtime.apply(&env, &mut Progress::new("runtime")).unwrap();

        let ino = |p: &Path| std::fs::metadata(node.root.path(p)).unwrap().ino();
        let containerd = Path::new("/usr/local/bin/containerd");
        assert_eq!(ino(containerd), ino(&rootfs.join("bin/containerd")));
        assert_eq!(node.root.mode(containerd), Some(0o755));
        let ctr = Path::new("/usr/local/bin/ctr");
        assert_ne!(ino(ctr), ino(&rootfs.join("bin/ctr")));
        assert_eq!(node.root.read(ctr).unwrap(), b"ctr program");
        assert_eq!(
            node.root.read("/opt/cni/bin/bridge").unwrap(),
            b"bridge plugin"
        );
        // No temp name left beside the link.
        let names: Vec<_> = node
            .root
            .read_dir("/usr/local/bin")
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");

        // Undo removes the installed link; the extracted tree keeps its file.
        Runtime.undo(&env, &mut Progress::new("runtime")).unwrap();
        assert!(!node.root.exists(containerd));
        assert_eq!(
            node.root.read(rootfs.join("bin/containerd")).unwrap(),
            b"containerd program"
        );
    }
}

//! `bale agent step kernel`: the kernel features, sysctls and swap setting a cluster node needs.
//!
//! A feature is present when the kernel says so in any of these ways: `/proc/modules` (loaded
//! module), `/sys/module/NAME` (loaded or built in), the feature itself answering (its sysctl
//! directory exists, `/proc/filesystems` lists it), or the kernel config (`/proc/config.gz`,
//! `/boot/config-RELEASE`) building it in (`=y`). `modprobe` is only ever a way to load a
//! missing one: its exit code is not trusted, since it fails on kernels without loadable
//! modules whose features are all built in (such as the test nodes').
//!
//! Apply loads what it can, fails naming any required feature still missing, persists the
//! modules (`/etc/modules-load.d/bale.conf`) and sysctls (`/etc/sysctl.d/90-bale.conf`), sets
//! the sysctls now, and turns swap off now and in `/etc/fstab` (backup beside it). Undo puts
//! back the sysctl values and swap it changed and removes its files; loaded modules stay
//! loaded (unloading a netfilter module under running traffic helps no one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::host::HostRoot;
use super::step::{self, Finding, Progress, Step, StepEnv, StepError, StepResult};

pub const MODULES_LOAD_FILE: &str = "/etc/modules-load.d/bale.conf";
pub const SYSCTL_FILE: &str = "/etc/sysctl.d/90-bale.conf";
pub const FSTAB: &str = "/etc/fstab";
pub const FSTAB_BACKUP: &str = "/etc/fstab.bale-backup";
/// Marks the fstab swap lines bale commented out, so undo restores exactly those.
pub const FSTAB_MARK: &str = "#bale-swap-off# ";

/// How a feature shows that it works, besides being a module.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// `/proc/filesystems` lists this file system.
    Filesystem(&'static str),
    /// This path (under /proc or /sys) exists.
    Path(&'static str),
    /// Only the module lists and the kernel config can tell.
    None,
}

#[derive(Debug, Clone, Copy)]
pub struct Feature {
    /// The module name (as in /proc/modules and /sys/module).
    pub name: &'static str,
    /// The kernel config option that builds it.
    pub config: &'static str,
    /// A required feature missing stops the install; a wanted one is reported.
    pub required: bool,
    pub probe: Probe,
    /// What needs it, for messages.
    pub needed_by: &'static str,
}

const IPVS_USER: &str = "lvscare IPVS backend (without it lvscare uses nftables)";

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "overlay",
        config: "CONFIG_OVERLAY_FS",
        required: true,
        probe: Probe::Filesystem("overlay"),
        needed_by: "container runtime (containerd's overlayfs snapshotter)",
    },
    Feature {
        name: "br_netfilter",
        config: "CONFIG_BRIDGE_NETFILTER",
        required: true,
        probe: Probe::Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
        needed_by: "pod network (bridged pod traffic through iptables/nftables)",
    },
    Feature {
        name: "nf_conntrack",
        config: "CONFIG_NF_CONNTRACK",
        required: true,
        probe: Probe::Path("/proc/sys/net/netfilter/nf_conntrack_max"),
        needed_by: "service proxy and lvscare's nftables backend (connection tracking)",
    },
    Feature {
        name: "ip_vs",
        config: "CONFIG_IP_VS",
        required: false,
        probe: Probe::Path("/proc/net/ip_vs"),
        needed_by: IPVS_USER,
    },
    Feature {
        name: "ip_vs_rr",
        config: "CONFIG_IP_VS_RR",
        required: false,
        probe: Probe::None,
        needed_by: IPVS_USER,
    },
    Feature {
        name: "ip_vs_wrr",
        config: "CONFIG_IP_VS_WRR",
        required: false,
        probe: Probe::None,
        needed_by: IPVS_USER,
    },
    Feature {
        name: "ip_vs_sh",
        config: "CONFIG_IP_VS_SH",
        required: false,
        probe: Probe::None,
        needed_by: IPVS_USER,
    },
];

/// Sysctls a node needs. Those under `net.ipv4.vs` are set only where IPVS exists.
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
    ("net.ipv4.ip_forward", "1"),
    ("net.ipv4.conf.all.rp_filter", "0"),
    ("net.ipv4.vs.conntrack", "1"),
];

fn sysctl_needs_ipvs(key: &str) -> bool {
    key.starts_with("net.ipv4.vs.")
}

/// How a feature was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Listed in /proc/modules.
    Loaded,
    /// /sys/module/NAME exists (loaded, or built in with parameters).
    SysModule,
    /// The feature answers (its file system or sysctl is there).
    Works,
    /// The kernel config builds it in (`=y`).
    BuiltIn,
    /// Not found; `loadable` when the kernel has it as a module that modprobe can find: in
    /// `/lib/modules/RELEASE/modules.dep`, or, where that cannot be read, built as one (`=m`).
    Missing { loadable: bool },
}

impl Presence {
    pub fn present(self) -> bool {
        !matches!(self, Presence::Missing { .. })
    }

    pub fn describe(self) -> &'static str {
        match self {
            Presence::Loaded => "loaded module",
            Presence::SysModule => "in /sys/module",
            Presence::Works => "works (built in or loaded)",
            Presence::BuiltIn => "built into the kernel",
            Presence::Missing { loadable: true } => "missing (a module, not loaded)",
            Presence::Missing { loadable: false } => "missing",
        }
    }
}

/// What the kernel tells about its features, read from a host root (the node's `/`; a fake
/// tree in tests).
#[derive(Debug)]
pub struct KernelView {
    root: HostRoot,
    loaded: HashSet<String>,
    filesystems: HashSet<String>,
    /// Kernel config options and their values (`y`, `m`).
    config: HashMap<String, String>,
    /// The modules installed for the running kernel (`modules.dep`), `None` when unreadable.
    module_files: Option<HashSet<String>>,
}

/// Module names from a `modules.dep` (`kernel/fs/overlayfs/overlay.ko.xz: deps...`), with `-`
/// read as `_` as the kernel does.
pub fn parse_modules_dep(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .filter_map(|(path, _)| path.rsplit('/').next())
        .filter_map(|file| {
            file.split_once(".ko")
                .map(|(name, _)| name.replace('-', "_"))
        })
        .collect()
}

/// Module names from `/proc/modules` lines (`name size refs deps state addr`).
pub fn parse_proc_modules(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.replace('-', "_"))
        .collect()
}

/// File systems from `/proc/filesystems` lines (`[nodev]\tname`).
pub fn parse_filesystems(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

/// `CONFIG_X=y` / `=m` lines of a kernel config; `# CONFIG_X is not set` and others ignored.
pub fn parse_kernel_config(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

impl KernelView {
    pub fn read(root: &HostRoot) -> KernelView {
        let text = |p: &str| root.read_or_default(p);
        let mut config = HashMap::new();
        // /proc/config.gz is the running kernel's own; /boot/config-RELEASE the distro's copy.
        if let Ok(gz) = root.read("/proc/config.gz") {
            let mut s = String::new();
            if flate2::read::GzDecoder::new(gz.as_slice())
                .read_to_string(&mut s)
                .is_ok()
            {
                config = parse_kernel_config(&s);
            }
        }
        let release = text("/proc/sys/kernel/osrelease");
        let release = release.trim();
        if config.is_empty() && !release.is_empty() {
            config = parse_kernel_config(&text(&format!("/boot/config-{release}")));
        }
        let module_files = Some(parse_modules_dep(&text(&format!(
            "/lib/modules/{release}/modules.dep"
        ))))
        .filter(|m| !release.is_empty() && !m.is_empty());
        KernelView {
            root: root.clone(),
            loaded: parse_proc_modules(&text("/proc/modules")),
            filesystems: parse_filesystems(&text("/proc/filesystems")),
            config,
            module_files,
        }
    }

    fn exists(&self, abs: &str) -> bool {
        self.root.exists(abs)
    }

    pub fn presence(&self, f: &Feature) -> Presence {
        if self.loaded.contains(f.name) {
            return Presence::Loaded;
        }
        if self.exists(&format!("/sys/module/{}", f.name)) {
            return Presence::SysModule;
        }
        let works = match f.probe {
            Probe::Filesystem(fs) => self.filesystems.contains(fs),
            Probe::Path(p) => self.exists(p),
            Probe::None => false,
        };
        if works {
            return Presence::Works;
        }
        let config = self.config.get(f.config).map(String::as_str);
        if config == Some("y") {
            return Presence::BuiltIn;
        }
        let loadable = match &self.module_files {
            Some(installed) => installed.contains(f.name),
            None => config == Some("m"),
        };
        Presence::Missing { loadable }
    }

    pub fn ipvs(&self) -> bool {
        FEATURES
            .iter()
            .find(|f| f.name == "ip_vs")
            .is_some_and(|f| self.presence(f).present())
    }

    /// Where a sysctl lives under /proc/sys (a host path).
    pub fn sysctl_path(key: &str) -> PathBuf {
        Path::new("/proc/sys").join(key.replace('.', "/"))
    }
}

/// A required feature that is missing, for the preflight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingFeature {
    pub feature: &'static str,
    pub needed_by: &'static str,
    /// True when the kernel has it as a module that is not loaded (modprobe may fix it).
    pub loadable: bool,
    /// The kernel was built with it as a module, but the module is not installed.
    pub module_not_installed: bool,
}

impl MissingFeature {
    pub fn fix(&self) -> String {
        if self.loadable {
            format!("load it with `modprobe {}`", self.feature)
        } else if self.module_not_installed {
            format!(
                "the kernel has it as a module that is not installed (no {}.ko under \
                 /lib/modules): install this kernel's modules package",
                self.feature
            )
        } else {
            format!(
                "use a kernel built with {}",
                FEATURES
                    .iter()
                    .find(|f| f.name == self.feature)
                    .map_or("it", |f| f.config)
            )
        }
    }
}

/// The required features this host's kernel lacks, without loading anything (for the
/// preflight, which must not change the host).
pub fn missing_features(root: &HostRoot) -> Vec<MissingFeature> {
    missing_in(&KernelView::read(root))
}

pub fn missing_in(view: &KernelView) -> Vec<MissingFeature> {
    FEATURES
        .iter()
        .filter(|f| f.required)
        .filter_map(|f| match view.presence(f) {
            Presence::Missing { loadable } => Some(MissingFeature {
                feature: f.name,
                needed_by: f.needed_by,
                loadable,
                module_not_installed: !loadable
                    && view.config.get(f.config).map(String::as_str) == Some("m"),
            }),
            _ => None,
        })
        .collect()
}

/// The modules file: the required modules, and the IPVS ones where IPVS is present (a module
/// listed there that the kernel cannot load fails systemd-modules-load at every boot).
pub fn render_modules_load(ipvs: bool) -> String {
    let mut s = String::from(
        "# Kernel modules for the cluster, written by bale (bale agent step kernel).\n",
    );
    for f in FEATURES.iter().filter(|f| f.required || ipvs) {
        s.push_str(f.name);
        s.push('\n');
    }
    s
}

pub fn render_sysctl(ipvs: bool) -> String {
    let mut s =
        String::from("# Sysctls for the cluster, written by bale (bale agent step kernel).\n");
    for (k, v) in SYSCTLS
        .iter()
        .filter(|(k, _)| ipvs || !sysctl_needs_ipvs(k))
    {
        s.push_str(&format!("{k} = {v}\n"));
    }
    s
}

/// Comments out every active swap line of an fstab; `None` when there is none.
pub fn fstab_without_swap(text: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        let is_swap = !t.starts_with('#') && t.split_whitespace().nth(2) == Some("swap");
        if is_swap {
            out.push_str(FSTAB_MARK);
            changed = true;
        }
        out.push_str(line);
    }
    changed.then_some(out)
}

/// Undoes [`fstab_without_swap`]: uncomments exactly the lines bale commented out.
pub fn fstab_restore_swap(text: &str) -> Option<String> {
    let mut changed = false;
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        match line.strip_prefix(FSTAB_MARK) {
            Some(rest) => {
                out.push_str(rest);
                changed = true;
            }
            None => out.push_str(line),
        }
    }
    changed.then_some(out)
}

/// Active swap areas from `/proc/swaps` (header line, then `path type size used prio`). Paths
/// there escape spaces as `\040`.
pub fn parse_proc_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(|p| p.replace("\\040", " "))
        .collect()
}

fn active_swaps(root: &HostRoot) -> Vec<String> {
    parse_proc_swaps(&root.read_or_default("/proc/swaps"))
}

/// What apply changed, so undo puts it back.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    /// Sysctl values before bale set them.
    sysctl_before: BTreeMap<String, String>,
    /// Swap areas bale turned off.
    swaps_off: Vec<String>,
}

/// Why the kernel step failed, beyond a missing feature ([`StepError::MissingFeature`]).
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "{}: sysctl {key} does not exist on this kernel (the kernel features above are present, \
         so this kernel is unusual: set {key} = {want} by other means)",
        path.display()
    )]
    NoSuchSysctl {
        path: PathBuf,
        key: &'static str,
        want: &'static str,
    },
    /// The cause sits inside the sentence (the advice follows it), so it is shown there rather
    /// than chained as a source.
    #[error(
        "cannot set sysctl {key} = {want} ({}: {cause}); is /proc/sys read-only here (a \
         container)? set it on the host",
        path.display()
    )]
    SysctlUnwritable {
        path: PathBuf,
        key: &'static str,
        want: &'static str,
        cause: std::io::Error,
    },
}

pub struct Kernel;

impl Kernel {
    fn manifest(env: &StepEnv) -> PathBuf {
        env.manifest_path("kernel")
    }
}

fn read_sysctl(root: &HostRoot, path: &Path) -> Option<String> {
    root.read_to_string(path).ok().map(|s| s.trim().to_string())
}

impl Step for Kernel {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn check(&self, env: &StepEnv) -> StepResult<Vec<Finding>> {
        let root = env.root;
        let view = KernelView::read(root);
        let mut out = Vec::new();
        for f in FEATURES {
            let p = view.presence(f);
            out.push(if p.present() {
                Finding::ok(format!("{}: {}", f.name, p.describe()))
            } else if f.required {
                Finding::bad(format!(
                    "{}: {} (the {} needs it)",
                    f.name,
                    p.describe(),
                    f.needed_by
                ))
            } else {
                Finding::ok(format!("{}: {} ({})", f.name, p.describe(), f.needed_by))
            });
        }
        let ipvs = view.ipvs();
        for (k, want) in SYSCTLS {
            if sysctl_needs_ipvs(k) && !ipvs {
                continue;
            }
            let got = read_sysctl(root, &KernelView::sysctl_path(k));
            out.push(Finding::of(
                got.as_deref() == Some(*want),
                format!(
                    "{k} = {} (want {want})",
                    got.as_deref().unwrap_or("missing")
                ),
            ));
        }
        let swaps = active_swaps(root);
        out.push(Finding::of(
            swaps.is_empty(),
            if swaps.is_empty() {
                "swap: off".to_string()
            } else {
                format!("swap: on ({})", swaps.join(", "))
            },
        ));
        let fstab = root.read_or_default(FSTAB);
        out.push(Finding::of(
            fstab_without_swap(&fstab).is_none(),
            format!("{FSTAB}: no active swap line"),
        ));
        for (path, text) in [
            (MODULES_LOAD_FILE, render_modules_load(ipvs)),
            (SYSCTL_FILE, render_sysctl(ipvs)),
        ] {
            out.push(Finding::file_holds(root, Path::new(path), &text));
        }
        Ok(out)
    }

    fn apply(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let root = env.root;
        let manifest = Self::manifest(env);
        let mut record: Record = step::load_manifest(root, &manifest)?.unwrap_or_default();

        // Features: load what is missing, then believe only what the kernel shows.
        let mut view = KernelView::read(root);
        let missing: Vec<&Feature> = FEATURES
            .iter()
            .filter(|f| !view.presence(f).present())
            .collect();
        if !missing.is_empty() {
            if let Some(modprobe) = step::which("modprobe") {
                for f in &missing {
                    // The exit code says nothing about a built-in feature; look again below.
                    let _ = env.commands.run(&modprobe.to_string_lossy(), &[f.name]);
                }
            }
            view = KernelView::read(root);
            for f in &missing {
                if view.presence(f).present() {
                    p.changed(format!("loaded {}", f.name));
                }
            }
        }
        let still = missing_in(&view);
        if !still.is_empty() {
            let names: Vec<&str> = still.iter().map(|m| m.feature).collect();
            return Err(StepError::MissingFeature {
                feature: names.join(", "),
                needed_by: still
                    .iter()
                    .map(|m| m.needed_by)
                    .collect::<Vec<_>>()
                    .join("; "),
                fix: still.iter().map(|m| m.fix()).collect::<Vec<_>>().join("; "),
            });
        }
        let ipvs = view.ipvs();
        for f in FEATURES.iter().filter(|f| !f.required) {
            if !view.presence(f).present() {
                p.note(format!("{} missing: the {}", f.name, f.needed_by));
            }
        }

        // Persisted settings, then the live sysctls.
        if root.write_file(
            MODULES_LOAD_FILE,
            render_modules_load(ipvs).as_bytes(),
            0o644,
        )? {
            p.changed(format!("wrote {MODULES_LOAD_FILE}"));
        }
        if root.write_file(SYSCTL_FILE, render_sysctl(ipvs).as_bytes(), 0o644)? {
            p.changed(format!("wrote {SYSCTL_FILE}"));
        }
        for (k, want) in SYSCTLS {
            if sysctl_needs_ipvs(k) && !ipvs {
                continue;
            }
            let path = KernelView::sysctl_path(k);
            let Some(got) = read_sysctl(root, &path) else {
                return Err(KernelError::NoSuchSysctl { path, key: k, want }.into());
            };
            if got == *want {
                continue;
            }
            // Saved before writing, so an interrupted apply can still be undone.
            record
                .sysctl_before
                .entry(k.to_string())
                .or_insert(got.clone());
            step::save_manifest(root, &manifest, &record)?;
            root.write_in_place(&path, format!("{want}\n").as_bytes())
                .map_err(|e| KernelError::SysctlUnwritable {
                    path: path.clone(),
                    key: k,
                    want,
                    cause: e.source,
                })?;
            p.changed(format!("set {k} = {want} (was {got})"));
        }

        // Swap: off now, and off at boot.
        for s in active_swaps(root) {
            if !record.swaps_off.contains(&s) {
                record.swaps_off.push(s.clone());
            }
            step::save_manifest(root, &manifest, &record)?;
            env.commands.run("swapoff", &[&s])?;
            p.changed(format!("swapoff {s}"));
        }
        let fstab = root.read_or_default(FSTAB);
        if let Some(new) = fstab_without_swap(&fstab) {
            if !root.exists(FSTAB_BACKUP) {
                root.write_file(FSTAB_BACKUP, fstab.as_bytes(), 0o644)?;
            }
            root.write_file(FSTAB, new.as_bytes(), 0o644)?;
            p.changed(format!(
                "commented out swap in {FSTAB} (backup: {FSTAB_BACKUP})"
            ));
        }
        step::save_manifest(root, &manifest, &record)?;
        Ok(())
    }

    fn undo(&self, env: &StepEnv, p: &mut Progress) -> StepResult<()> {
        let root = env.root;
        let manifest = Self::manifest(env);
        let record: Record = step::load_manifest(root, &manifest)?.unwrap_or_default();
        for (k, before) in &record.sysctl_before {
            let path = KernelView::sysctl_path(k);
            if read_sysctl(root, &path).as_deref() == Some(before.as_str()) {
                continue;
            }
            match root.write_in_place(&path, format!("{before}\n").as_bytes()) {
                Ok(()) => p.changed(format!("set {k} = {before} (as before bale)")),
                Err(e) => p.note(format!("could not restore {k} = {before}: {}", e.source)),
            }
        }
        for path in [SYSCTL_FILE, MODULES_LOAD_FILE] {
            if root.remove_file(path)? {
                p.changed(format!("removed {path}"));
            }
        }
        let fstab = root.read_or_default(FSTAB);
        if let Some(old) = fstab_restore_swap(&fstab) {
            root.write_file(FSTAB, old.as_bytes(), 0o644)?;
            p.changed(format!("restored the swap lines in {FSTAB}"));
        }
        if root.remove_file(FSTAB_BACKUP)? {
            p.changed(format!("removed {FSTAB_BACKUP}"));
        }
        let active = active_swaps(root);
        for s in record.swaps_off.iter().filter(|s| !active.contains(s)) {
            match env.commands.run("swapon", &[s]) {
                Ok(_) => p.changed(format!("swapon {s}")),
                Err(e) => p.note(format!("could not turn swap {s} back on: {e}")),
            }
        }
        if root.remove_file(&manifest)? {
            p.note("kernel modules stay loaded");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn feature(name: &str) -> &'static Feature {
        FEATURES.iter().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn parses_proc_modules_and_filesystems() {
        let m = parse_proc_modules(
            "br_netfilter 32768 0 - Live 0x0000000000000000\n\
             bridge 311296 1 br_netfilter, Live 0x0000000000000000\n\
             ip_vs_rr 12288 0 - Live 0x0000000000000000\n",
        );
        assert!(m.contains("br_netfilter") && m.contains("bridge") && m.contains("ip_vs_rr"));
        assert!(!m.contains("Live"));
        let fs = parse_filesystems("nodev\tsysfs\nnodev\toverlay\n\text4\n");
        assert!(fs.contains("overlay") && fs.contains("ext4") && !fs.contains("nodev"));
    }

    #[test]
    fn parses_kernel_config_values() {
        let c = parse_kernel_config(
            "#\n# Automatically generated file\nCONFIG_OVERLAY_FS=y\nCONFIG_IP_VS=m\n\
             # CONFIG_IP_VS_SH is not set\nCONFIG_LOCALVERSION=\"-fc\"\n",
        );
        assert_eq!(c.get("CONFIG_OVERLAY_FS").map(String::as_str), Some("y"));
        assert_eq!(c.get("CONFIG_IP_VS").map(String::as_str), Some("m"));
        assert_eq!(
            c.get("CONFIG_LOCALVERSION").map(String::as_str),
            Some("-fc")
        );
        assert!(!c.contains_key("CONFIG_IP_VS_SH"));
    }

    /// A fake root: no loadable modules at all, features built in, as on the test nodes.
    fn fake_root(config: &str, gz: bool) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("proc/sys/net/bridge")).unwrap();
        std::fs::create_dir_all(r.join("proc/sys/kernel")).unwrap();
        std::fs::create_dir_all(r.join("sys/module/nf_conntrack")).unwrap();
        std::fs::write(r.join("proc/modules"), "").unwrap();
        std::fs::write(r.join("proc/filesystems"), "nodev\tproc\n\text4\n").unwrap();
        std::fs::write(r.join("proc/sys/kernel/osrelease"), "6.1.0-test\n").unwrap();
        std::fs::write(r.join("proc/sys/net/bridge/bridge-nf-call-iptables"), "1\n").unwrap();
        if gz {
            let f = std::fs::File::create(r.join("proc/config.gz")).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            e.write_all(config.as_bytes()).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::create_dir_all(r.join("boot")).unwrap();
            std::fs::write(r.join("boot/config-6.1.0-test"), config).unwrap();
        }
        d
    }

    #[test]
    fn built_in_features_count_without_modules() {
        for gz in [true, false] {
            let d = fake_root(
                "CONFIG_OVERLAY_FS=y\nCONFIG_IP_VS=m\nCONFIG_IP_VS_RR=y\n",
                gz,
            );
            let v = KernelView::read(&HostRoot::at(d.path()));
            assert_eq!(v.presence(feature("overlay")), Presence::BuiltIn, "gz {gz}");
            assert_eq!(v.presence(feature("br_netfilter")), Presence::Works);
            assert_eq!(v.presence(feature("nf_conntrack")), Presence::SysModule);
            assert_eq!(
                v.presence(feature("ip_vs")),
                Presence::Missing { loadable: true }
            );
            assert_eq!(v.presence(feature("ip_vs_rr")), Presence::BuiltIn);
            assert_eq!(
                v.presence(feature("ip_vs_sh")),
                Presence::Missing { loadable: false }
            );
            assert!(!v.ipvs());
            assert!(missing_in(&v).is_empty());
        }
    }

    #[test]
    fn a_missing_required_feature_is_named_with_its_user_and_fix() {
        let d = fake_root("CONFIG_OVERLAY_FS=m\n", true);
        std::fs::remove_dir_all(d.path().join("sys/module/nf_conntrack")).unwrap();
        let v = KernelView::read(&HostRoot::at(d.path()));
        let m = missing_in(&v);
        let names: Vec<_> = m.iter().map(|m| m.feature).collect();
        assert_eq!(names, ["overlay", "nf_conntrack"]);
        assert!(m[0].loadable && m[0].fix().contains("modprobe overlay"));
        assert!(m[0].needed_by.contains("container runtime"));
        assert!(m[1].fix().contains("CONFIG_NF_CONNTRACK"));
        // The probe finds a loaded module and a working file system too.
        std::fs::write(d.path().join("proc/filesystems"), "nodev\toverlay\n").unwrap();
        std::fs::write(
            d.path().join("proc/modules"),
            "nf_conntrack 1 0 - Live 0x0\n",
        )
        .unwrap();
        let v = KernelView::read(&HostRoot::at(d.path()));
        assert_eq!(v.presence(feature("overlay")), Presence::Works);
        assert_eq!(v.presence(feature("nf_conntrack")), Presence::Loaded);
        assert!(missing_in(&v).is_empty());
    }

    /// A distribution kernel: the features are modules, none loaded yet, and modules.dep says
    /// which are installed. The installed ones are loadable (the kernel step loads them); one
    /// the kernel was built with but whose module is not installed is not.
    #[test]
    fn modules_dep_tells_a_loadable_module_from_one_not_installed() {
        let d = fake_root(
            "CONFIG_OVERLAY_FS=m\nCONFIG_BRIDGE_NETFILTER=m\nCONFIG_NF_CONNTRACK=m\n",
            false,
        );
        let r = d.path();
        std::fs::remove_dir_all(r.join("sys/module/nf_conntrack")).unwrap();
        std::fs::remove_dir_all(r.join("proc/sys/net/bridge")).unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-test")).unwrap();
        std::fs::write(
            r.join("lib/modules/6.1.0-test/modules.dep"),
            "kernel/fs/overlayfs/overlay.ko.xz:\n\
             kernel/net/bridge/br_netfilter.ko.xz: kernel/net/bridge/bridge.ko.xz\n\
             kernel/net/ipv4/ip-tunnel.ko:\n",
        )
        .unwrap();
        assert!(parse_modules_dep("kernel/net/ipv4/ip-tunnel.ko.zst:\n").contains("ip_tunnel"));
        let v = KernelView::read(&HostRoot::at(r));
        let m = missing_in(&v);
        let by_name = |n: &str| m.iter().find(|m| m.feature == n).unwrap();
        assert!(by_name("overlay").loadable && by_name("br_netfilter").loadable);
        let conntrack = by_name("nf_conntrack");
        assert!(!conntrack.loadable && conntrack.module_not_installed);
        assert!(
            conntrack.fix().contains("modules package"),
            "{}",
            conntrack.fix()
        );
        // Without a readable modules.dep the config alone decides, as before.
        std::fs::remove_file(r.join("lib/modules/6.1.0-test/modules.dep")).unwrap();
        let v = KernelView::read(&HostRoot::at(r));
        assert!(missing_in(&v).iter().all(|m| m.loadable));
    }

    #[test]
    fn persisted_files_list_ipvs_only_where_present() {
        let without = render_modules_load(false);
        assert!(without.contains("overlay\nbr_netfilter\nnf_conntrack\n"));
        assert!(!without.contains("ip_vs"));
        assert!(render_modules_load(true).contains("ip_vs\nip_vs_rr\nip_vs_wrr\nip_vs_sh\n"));
        let s = render_sysctl(false);
        assert!(s.contains("net.bridge.bridge-nf-call-iptables = 1\n"));
        assert!(s.contains("net.bridge.bridge-nf-call-ip6tables = 1\n"));
        assert!(s.contains("net.ipv4.ip_forward = 1\n"));
        assert!(s.contains("net.ipv4.conf.all.rp_filter = 0\n"));
        assert!(!s.contains("vs.conntrack"));
        assert!(render_sysctl(true).contains("net.ipv4.vs.conntrack = 1\n"));
    }

    #[test]
    fn fstab_swap_lines_are_commented_and_restored_exactly() {
        let fstab = "# /etc/fstab\nUUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n\
                     # /old none swap sw 0 0\n  UUID=2 none swap sw 0 0\n";
        let off = fstab_without_swap(fstab).unwrap();
        assert!(off.contains("#bale-swap-off# /swapfile none swap"));
        assert!(off.contains("#bale-swap-off#   UUID=2 none swap"));
        assert!(off.contains("\n# /old none swap sw 0 0\n"));
        assert!(fstab_without_swap(&off).is_none());
        assert_eq!(fstab_restore_swap(&off).unwrap(), fstab);
        assert!(fstab_restore_swap(fstab).is_none());
    }

    #[test]
    fn proc_swaps_paths() {
        let s = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                 /swapfile                               file\t\t1048572\t\t0\t\t-2\n\
                 /my\\040swap                            file\t\t1048572\t\t0\t\t-3\n";
        assert_eq!(parse_proc_swaps(s), ["/swapfile", "/my swap"]);
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    use crate::node::host::testing::{differences, FakeNode};

    #[test]
    fn apply_sets_what_is_missing_once_and_undo_puts_it_back() {
        let node = FakeNode::new();
        let r = &node.root;
        // Features that answer without modules; sysctls as a fresh host has them; a swap area.
        r.write_file("/proc/filesystems", b"nodev\toverlay\n", 0o444)
            .unwrap();
        r.create_dir_all("/sys/module/nf_conntrack").unwrap();
        // systemd hosts have these; undo leaves them.
        for dir in ["/etc/modules-load.d", "/etc/sysctl.d"] {
            r.create_dir_all(dir).unwrap();
        }
        for (key, value) in [
            ("net.bridge.bridge-nf-call-iptables", "0"),
            ("net.bridge.bridge-nf-call-ip6tables", "1"),
            ("net.ipv4.ip_forward", "0"),
            ("net.ipv4.conf.all.rp_filter", "1"),
        ] {
            r.write_file(
                KernelView::sysctl_path(key),
                format!("{value}\n").as_bytes(),
                0o644,
            )
            .unwrap();
        }
        let fstab = "UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n";
        r.write_file(FSTAB, fstab.as_bytes(), 0o644).unwrap();
        r.write_file(
            "/proc/swaps",
            b"Filename Type Size Used Priority\n/swapfile file 1024 0 -2\n",
            0o444,
        )
        .unwrap();
        let before = node.snapshot();
        let env = node.env(None);

        let mut p = Progress::new("kernel");
        Kernel.apply(&env, &mut p).unwrap();
        assert_eq!(
            r.read_to_string(MODULES_LOAD_FILE).unwrap(),
            render_modules_load(false)
        );
        assert_eq!(r.read_to_string(SYSCTL_FILE).unwrap(), render_sysctl(false));
        for key in ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables"] {
            assert_eq!(read_sysctl(r, &KernelView::sysctl_path(key)).unwrap(), "1");
        }
        assert_eq!(
            read_sysctl(r, &KernelView::sysctl_path("net.ipv4.conf.all.rp_filter")).unwrap(),
            "0"
        );
        assert_eq!(r.read_to_string(FSTAB_BACKUP).unwrap(), fstab);
        assert!(r
            .read_to_string(FSTAB)
            .unwrap()
            .contains("#bale-swap-off# /swapfile"));
        assert_eq!(node.commands.take(), ["swapoff /swapfile"]);

        // The fake /proc/swaps still lists the area; what matters here is the files.
        let written = node.snapshot();
        let mut p = Progress::new("kernel");
        Kernel.apply(&env, &mut p).unwrap();
        assert_eq!(
            differences(&written, &node.snapshot()),
            Vec::<PathBuf>::new()
        );

        let mut p = Progress::new("kernel");
        Kernel.undo(&env, &mut p).unwrap();
        let after = node.snapshot();
        for path in differences(&before, &after) {
            // What undo wrote back (the sysctls, fstab) has its old bytes and mode, but a new
            // mtime; anything else must be untouched.
            assert!(
                path.starts_with("/proc/sys") || path == Path::new(FSTAB),
                "{} differs",
                path.display()
            );
            let (was, is) = (&before[&path], &after[&path]);
            assert_eq!(
                (&was.data, was.mode),
                (&is.data, is.mode),
                "{}",
                path.display()
            );
        }
    }
}

//! containerd's files as bale writes them: `config.toml`, one `hosts.toml` per registry domain
//! of the bundled images (each pointing first at this node's bale registry, so images keep
//! their original names), and the systemd unit.
//!
//! The config is version 2, which containerd 1.5–1.7 read as is and containerd 2.x migrates on
//! load, so one file serves whatever containerd a bundle carries. The CRI plugin reads the hosts
//! files through `config_path`; `ctr` reads them only when given `--hosts-dir`.

use std::collections::BTreeSet;

use bale_registry::names;

pub const CONFIG_DIR: &str = "/etc/containerd";
pub const CONFIG_FILE: &str = "/etc/containerd/config.toml";
pub const HOSTS_DIR: &str = "/etc/containerd/certs.d";
pub const UNIT: &str = "containerd.service";
pub const SOCKET: &str = "/run/containerd/containerd.sock";
pub const ROOT_DIR: &str = "/var/lib/containerd";
/// Where containerd's "opt" plugin makes its bin/ and lib/: inside ROOT_DIR, so that a reset
/// which empties ROOT_DIR leaves nothing of it (its default is /opt/containerd).
pub const OPT_DIR: &str = "/var/lib/containerd/opt";
/// The opt plugin's default, where containerd configs written before [`OPT_DIR`] left it.
pub const DEFAULT_OPT_DIR: &str = "/opt/containerd";
pub const STATE_DIR: &str = "/run/containerd";
pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";

/// Which cgroup driver runc uses under containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupDriver {
    /// systemd owns the cgroup tree (systemd as init with the unified cgroup v2 hierarchy):
    /// containers go through systemd, as kubelet's `cgroupDriver: systemd` expects.
    Systemd,
    /// runc writes the cgroup v1 hierarchies itself.
    Cgroupfs,
}

impl CgroupDriver {
    /// Systemd where systemd runs on cgroup v2 (`/sys/fs/cgroup/cgroup.controllers` exists at
    /// the top), cgroupfs otherwise. On cgroup v1 (also "hybrid", with only systemd's own tree
    /// unified) runc's systemd driver depends on systemd's delegation of every v1 controller,
    /// which container hosts such as systemd-nspawn do not give: there cgroupfs is what works.
    pub fn detect(root: &super::host::HostRoot) -> CgroupDriver {
        let v2 = root.exists("/sys/fs/cgroup/cgroup.controllers");
        if v2 && root.is_dir("/run/systemd/system") {
            CgroupDriver::Systemd
        } else {
            CgroupDriver::Cgroupfs
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CgroupDriver::Systemd => "systemd",
            CgroupDriver::Cgroupfs => "cgroupfs",
        }
    }
}

/// The registry hosts of the bundle's image names (`docker.io/library/busybox:1.36` gives
/// `docker.io`), sorted and without duplicates. Names that do not parse are returned apart.
pub fn registry_domains<'a>(
    image_names: impl IntoIterator<Item = &'a str>,
) -> (BTreeSet<String>, Vec<String>) {
    let mut domains = BTreeSet::new();
    let mut bad = Vec::new();
    for n in image_names {
        match names::parse_image_ref(n) {
            Ok(r) => {
                domains.insert(r.host);
            }
            Err(e) => bad.push(format!("{n}: {e}")),
        }
    }
    (domains, bad)
}

/// The upstream a domain's hosts file falls back to when the local registry lacks an image.
pub fn upstream(domain: &str) -> String {
    if domain == names::DOCKER_HUB {
        "https://registry-1.docker.io".into()
    } else {
        format!("https://{domain}")
    }
}

/// `certs.d/<domain>/hosts.toml` (containerd looks the domain up as written, port included):
/// the local bale registry first, for pulls and resolves; then, on a worker of an install with
/// `--registry-vip`, the masters' registries behind that VIP (`fallback`, host:port), which
/// containerd tries when the local one does not answer.
pub fn render_hosts_toml(domain: &str, registry_port: u16, fallback: Option<&str>) -> String {
    let mut out = format!(
        "# Written by bale (bale agent step runtime): images of {domain} come from this node's\n\
         # bale registry first, under their original names.\n\
         server = \"{upstream}\"\n\
         \n\
         [host.\"http://127.0.0.1:{registry_port}\"]\n\
         \x20 capabilities = [\"pull\", \"resolve\"]\n",
        upstream = upstream(domain),
    );
    if let Some(vip) = fallback {
        out.push_str(&format!(
            "\n# The masters' registries, through the registry guardian, if this node's fails.\n\
             [host.\"http://{vip}\"]\n\
             \x20 capabilities = [\"pull\", \"resolve\"]\n"
        ));
    }
    out
}

/// What the config depends on besides the cgroup driver.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigOptions {
    /// Clamp containers' `oom_score_adj` to containerd's own: where the host cannot lower it
    /// (no CAP_SYS_RESOURCE in the bounding set, as in some container hosts) runc otherwise
    /// fails to start every pod sandbox, since kubelet asks for -998.
    pub restrict_oom_score_adj: bool,
    /// The pause image by its original name, when the bundle carries one: containerd's default
    /// names a version the bundle may not hold, and a pull of it would leave the site.
    pub sandbox_image: Option<String>,
}

/// The sandbox image among the bundle's image names: the one whose repository is `pause`.
pub fn sandbox_image<'a>(image_names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    image_names
        .into_iter()
        .find(|n| {
            names::parse_image_ref(n).is_ok_and(|r| r.path.rsplit('/').next() == Some("pause"))
        })
        .map(str::to_string)
}

pub fn render_config_toml(driver: CgroupDriver, opts: &ConfigOptions) -> String {
    let systemd_cgroup = driver == CgroupDriver::Systemd;
    let sandbox = opts
        .sandbox_image
        .as_ref()
        .map(|i| format!("  sandbox_image = {}\n", toml_string(i)))
        .unwrap_or_default();
    let restrict = if opts.restrict_oom_score_adj {
        "  # This host cannot lower oom_score_adj (no CAP_SYS_RESOURCE).\n  restrict_oom_score_adj = true\n"
    } else {
        ""
    };
    format!(
        r#"# Written by bale (bale agent step runtime). Version 2: containerd 1.x reads it as is,
# containerd 2.x migrates it on load.
version = 2
root = "{ROOT_DIR}"
state = "{STATE_DIR}"

[grpc]
  address = "{SOCKET}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{OPT_DIR}"

[plugins."io.containerd.grpc.v1.cri"]
{sandbox}{restrict}  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # cgroup driver: {driver}
        SystemdCgroup = {systemd_cgroup}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{CNI_CONF_DIR}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    # One hosts.toml per registry domain; each points first at this node's bale registry.
    config_path = "{HOSTS_DIR}"
"#,
        driver = driver.as_str(),
    )
}

/// A TOML basic string (image names hold no control characters, but quotes are escaped anyway).
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// containerd's unit, run from where bale installs the binaries.
pub fn render_unit(containerd: &str) -> String {
    format!(
        "# Written by bale (bale agent step runtime).\n\
         [Unit]\n\
         Description=containerd container runtime (installed by bale)\n\
         After=network.target local-fs.target\n\
         \n\
         [Service]\n\
         ExecStartPre=-/sbin/modprobe overlay\n\
         ExecStart={containerd} --config {CONFIG_FILE}\n\
         Type=notify\n\
         # The containers are the shims' children, not containerd's: a restart of containerd\n\
         # must not kill them.\n\
         Delegate=yes\n\
         KillMode=process\n\
         Restart=always\n\
         RestartSec=5\n\
         LimitNPROC=infinity\n\
         LimitCORE=infinity\n\
         LimitNOFILE=infinity\n\
         TasksMax=infinity\n\
         OOMScoreAdjust=-999\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    )
}

/// Whether an existing config (one bale did not write) points the CRI plugin at the hosts
/// directory: a plain look for `config_path = "<HOSTS_DIR>"`, enough to tell the operator.
pub fn config_uses_hosts_dir(config: &str) -> bool {
    config.lines().any(|l| {
        let l = l.trim();
        !l.starts_with('#')
            && l.split_once('=').is_some_and(|(k, v)| {
                k.trim() == "config_path" && v.trim().trim_matches(['"', '\'']) == HOSTS_DIR
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_of_bundled_images() {
        let (d, bad) = registry_domains([
            "docker.io/library/busybox:1.36",
            "docker.io/appliance/web:1.0",
            "registry.k8s.io/pause:3.9",
            "quay.io/coreos/etcd@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "ghcr.io/org/app:v1",
            "registry.local:5000/team/app:2",
            "index.docker.io/library/nginx:1",
            "not a name",
        ]);
        let d: Vec<&str> = d.iter().map(String::as_str).collect();
        assert_eq!(
            d,
            [
                "docker.io",
                "ghcr.io",
                "quay.io",
                "registry.k8s.io",
                "registry.local:5000"
            ]
        );
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn hosts_toml_points_at_the_local_registry_first() {
        let t = render_hosts_toml("docker.io", 5050, None);
        assert!(t.contains("server = \"https://registry-1.docker.io\"\n"));
        assert!(t.contains(
            "[host.\"http://127.0.0.1:5050\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
        ));
        let t = render_hosts_toml("registry.k8s.io", 6000, None);
        assert!(t.contains("server = \"https://registry.k8s.io\""));
        assert!(t.contains("http://127.0.0.1:6000"));
        // Every table header comes after the top-level keys (TOML would nest them otherwise).
        let server = t.find("server =").unwrap();
        assert!(t.find("[host.").unwrap() > server);
        assert_eq!(t.matches("[host.").count(), 1);
    }

    #[test]
    fn hosts_toml_lists_the_registry_vip_second() {
        let t = render_hosts_toml("quay.io", 5050, Some("10.103.97.3:5050"));
        let local = t.find("[host.\"http://127.0.0.1:5050\"]").unwrap();
        let vip = t.find("[host.\"http://10.103.97.3:5050\"]").unwrap();
        assert!(local < vip, "containerd tries hosts in the order written");
        assert_eq!(
            t.matches("capabilities = [\"pull\", \"resolve\"]\n")
                .count(),
            2
        );
    }

    #[test]
    fn config_sets_hosts_dir_and_cgroup_driver() {
        let c = render_config_toml(CgroupDriver::Systemd, &ConfigOptions::default());
        assert!(config_uses_hosts_dir(&c));
        assert!(c.contains("SystemdCgroup = true"));
        assert!(c.starts_with("# Written by bale") && c.contains("\nversion = 2\n"));
        let c = render_config_toml(CgroupDriver::Cgroupfs, &ConfigOptions::default());
        assert!(c.contains("SystemdCgroup = false"));
        assert!(c.contains("bin_dir = \"/opt/cni/bin\""));
        assert!(c.contains("path = \"/var/lib/containerd/opt\""), "{c}");
        assert!(!config_uses_hosts_dir(
            "# config_path = \"/etc/containerd/certs.d\"\n"
        ));
        assert!(!config_uses_hosts_dir(
            "config_path = \"/etc/docker/certs.d\"\n"
        ));
        assert!(config_uses_hosts_dir(
            "      config_path = '/etc/containerd/certs.d'\n"
        ));
    }

    #[test]
    fn unit_runs_the_installed_binary_with_the_config() {
        let u = render_unit("/usr/local/bin/containerd");
        assert!(u.contains(
            "ExecStart=/usr/local/bin/containerd --config /etc/containerd/config.toml\n"
        ));
        assert!(u.contains("Type=notify\n") && u.contains("KillMode=process\n"));
        assert!(u.contains("WantedBy=multi-user.target"));
    }
}

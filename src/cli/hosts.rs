//! `bale install`, `reset`, `delete` and `check`: the hosts of a run and how to reach them
//! ([`TargetArgs`]), and what each command adds to them.

use bale_installer::install::InstallOptions;
use bale_installer::reset::ResetOptions;
use bale_installer::run::{Target, DEFAULT_CONNECT_TIMEOUT_SECS, DEFAULT_PARALLEL};
use std::path::PathBuf;

const INSTALL_HELP: &str = "\
Hosts: --masters 10.0.0.2,10.0.0.3 --nodes 10.0.0.5-10.0.0.9, or -f Clusterfile (sealer.io/v2).
No hosts: install on this machine only.
Passwords are never taken on the command line: --password-file FILE or BALE_SSH_PASSWORD.
Completed phases are recorded on each host (<data-dir>/journal.json) and skipped on a re-run.
A failure never uninstalls: the host is left as it is, and the same command, run again once
the cause is fixed, goes on from there. Only reset and delete take things apart.";

const RESET_HELP: &str = "\
Undoes the install on the hosts: stops and removes the lvscare guard, the registry unit, the
container runtime bale installed (with its state), the kernel settings bale persisted, then
bale's files in the data dir. PreClean and PostClean hooks run around it. Safe to repeat.";

pub const DELETE_HELP: &str = "\
Resets the named hosts, then hands the hosts that stay the new list of masters and workers
(read from the deleted hosts' node.json): the workers' lvscare guards reload with the masters
that are left, without a restart. The hosts that stay are reached with the same login options.
A deleted host that cannot be reached is not reset and cannot tell who stays: then run install
again with the hosts that stay, which updates them the same way.

Example: ./app.bale delete --masters 10.0.0.3 --key ~/.ssh/id_ed25519";

/// The hosts of a run and how to reach them (shared by install, reset, delete and check).
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// The bundle to act on [default: this program, when it carries a payload]. Lets a bale of
    /// one architecture install a bundle of another: each host runs its own copy of the file
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Control-plane hosts: addresses and ranges, comma-separated
    #[arg(short = 'm', long)]
    pub masters: Option<String>,
    /// Worker hosts: addresses and ranges, comma-separated
    #[arg(short = 'n', long)]
    pub nodes: Option<String>,
    /// A Clusterfile (apiVersion sealer.io/v2, kind Cluster) with hosts and per-host login
    #[arg(short = 'f', long = "clusterfile", value_name = "FILE")]
    pub clusterfile: Option<PathBuf>,
    /// Login user [default: root]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// SSH port [default: 22]
    #[arg(long)]
    pub port: Option<u16>,
    /// Private key file
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// File holding the private key's passphrase
    #[arg(long, value_name = "FILE")]
    pub key_passphrase_file: Option<PathBuf>,
    /// File holding the login (and sudo) password
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Run privileged commands through sudo (the default for users other than root)
    #[arg(long)]
    pub sudo: bool,
    /// known_hosts file that host keys are checked against [default: ~/.ssh/known_hosts]
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Record host keys never seen before (a changed key is still refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// Seconds to wait for an SSH connection
    #[arg(long, default_value_t = DEFAULT_CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: u32,
    /// Where the bundle and the journal go on each host
    #[arg(long, default_value = bale_installer::layout::DEFAULT_DATA_DIR)]
    pub data_dir: String,
    /// Hosts worked on at the same time
    #[arg(long, default_value_t = DEFAULT_PARALLEL)]
    pub parallel: usize,
    /// Connect and check, then print what would be done on each host
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object per event on stdout
    #[arg(long)]
    pub json: bool,
}

impl From<TargetArgs> for Target {
    fn from(a: TargetArgs) -> Self {
        Target {
            bundle: a.bundle,
            masters: a.masters,
            nodes: a.nodes,
            clusterfile: a.clusterfile,
            user: a.user,
            port: a.port,
            key: a.key,
            key_passphrase_file: a.key_passphrase_file,
            password_file: a.password_file,
            sudo: a.sudo,
            known_hosts: a.known_hosts,
            accept_new_host_keys: a.accept_new_host_keys,
            connect_timeout: a.connect_timeout,
            data_dir: a.data_dir,
            parallel: a.parallel,
            dry_run: a.dry_run,
            json: a.json,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = INSTALL_HELP)]
pub struct InstallArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Preflight checks to ignore, comma-separated (arch, os, kernel, disk, tmp, hostname,
    /// clock, ports, systemd, conflicts, reach, features)
    #[arg(long, value_name = "NAME[,NAME]", value_delimiter = ',')]
    pub ignore_preflight: Vec<String>,
    /// Stop after this phase, e.g. `--until upload` to stage the bundle on every host ahead of
    /// a maintenance window (a later run goes on from there)
    #[arg(long, value_name = "PHASE")]
    pub until: Option<String>,
    /// The API servers' virtual IP: every worker's guardian (bale-lvscare.service) keeps
    /// VIP:6443 pointing at the healthy masters, and apiserver.cluster.local names it
    #[arg(long, value_name = "IP", default_value_t = bale_installer::node::context::DEFAULT_VIP)]
    pub vip: std::net::Ipv4Addr,
    /// Also guard the masters' registries behind this virtual IP (at the registry port, 5050):
    /// each worker gets a second guardian (bale-lvscare-registry.service), and its containerd
    /// pulls through the VIP whenever the worker's own registry does not answer. Off unless
    /// given; a later install without it removes that guardian
    #[arg(long, value_name = "IP")]
    pub registry_vip: Option<std::net::Ipv4Addr>,
}

impl From<InstallArgs> for InstallOptions {
    fn from(a: InstallArgs) -> Self {
        InstallOptions {
            target: a.target.into(),
            ignore_preflight: a.ignore_preflight,
            until: a.until,
            vip: a.vip,
            registry_vip: a.registry_vip,
        }
    }
}

/// `reset`, and `delete` with its own after-help.
#[derive(Debug, clap::Args)]
#[command(after_help = RESET_HELP)]
pub struct ResetArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Do not ask for confirmation
    #[arg(short = 'y', long)]
    pub yes: bool,
}

impl From<ResetArgs> for ResetOptions {
    fn from(a: ResetArgs) -> Self {
        ResetOptions {
            target: a.target.into(),
            yes: a.yes,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: TargetArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        install: InstallArgs,
    }

    fn install(flags: &[&str]) -> Result<InstallOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("install").chain(flags.iter().copied()))
            .map(|c| c.install.into())
    }

    #[test]
    fn install_flags_become_the_library_options() {
        let o = install(&[]).unwrap();
        let d = InstallOptions::default();
        assert_eq!((o.vip, o.registry_vip), (d.vip, d.registry_vip));
        assert_eq!(o.target.connect_timeout, d.target.connect_timeout);
        assert_eq!(o.target.parallel, d.target.parallel);
        assert_eq!(o.target.data_dir, d.target.data_dir);
        assert!(o.ignore_preflight.is_empty() && o.until.is_none());

        let o = install(&[
            "-m",
            "10.0.0.2",
            "--nodes",
            "10.0.0.5-10.0.0.9",
            "--vip",
            "10.96.0.2",
            "--registry-vip",
            "10.96.0.3",
            "--ignore-preflight",
            "disk,ports",
            "--parallel",
            "4",
        ])
        .unwrap();
        assert_eq!(o.target.masters.as_deref(), Some("10.0.0.2"));
        assert_eq!(o.target.nodes.as_deref(), Some("10.0.0.5-10.0.0.9"));
        assert_eq!(o.vip.to_string(), "10.96.0.2");
        assert_eq!(
            o.registry_vip.map(|r| r.to_string()).as_deref(),
            Some("10.96.0.3")
        );
        assert_eq!(o.ignore_preflight, ["disk", "ports"]);
        assert_eq!(o.target.parallel, 4);

        // The VIPs are IPv4 only.
        assert!(install(&["--registry-vip", "fd00::1"]).is_err());
        assert!(install(&["--vip", "fd00::1"]).is_err());
    }
}

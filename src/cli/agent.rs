//! `bale agent` (hidden): what the copied bundle runs on each node during an install. The
//! installer writes these command lines itself, over SSH.

use bale_installer::agent::{AgentCommand, KubeCommand};
use bale_installer::copy::agent::CopyOptions;
use bale_installer::marks::{self, MarkError, Taint};
use bale_installer::node::step::{StepAction, StepName};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use std::net::IpAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentSubcommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentSubcommand {
    /// Receive the bundle (checked chunk by chunk, resumable) and serve it to other nodes
    Copy(CopyArgs),
    /// Print this node's and this bundle's identity
    Status {
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
    /// Run one node-local install step: apply, undo or check it
    Step {
        #[arg(value_parser = step_names())]
        name: StepName,
        #[arg(value_parser = step_actions())]
        action: StepAction,
        /// Where the install keeps node.json and bundle.bale
        #[arg(long, default_value = bale_installer::layout::DEFAULT_DATA_DIR)]
        data_dir: String,
    },
    /// Ask this node's Kubernetes control plane (the installer runs these on the first master)
    #[command(subcommand)]
    Kube(KubeSubcommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum KubeSubcommand {
    /// Print a fresh bootstrap token (30 minutes) and the CA hash as JSON, for one join. The
    /// output holds secrets: it is meant for the installer's SSH channel, not a terminal log
    JoinMaterial {
        /// Also upload the control-plane certificates under a fresh key, for a master's join
        #[arg(long)]
        control_plane: bool,
    },
    /// Cordon and drain the nodes of hosts about to leave the cluster (by their addresses)
    Drain {
        /// Comma-separated InternalIPs
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<String>,
    },
    /// Delete the Node objects of hosts that left the cluster (by their addresses)
    Forget {
        /// Comma-separated InternalIPs
        #[arg(long, value_delimiter = ',')]
        addresses: Vec<String>,
    },
    /// Give the Node of a host (by its address) labels and taints, changing only what differs
    Mark {
        /// The host's InternalIP
        #[arg(long)]
        address: String,
        /// A label, key=value (repeat for more)
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// A taint in sealer's syntax: key=value:Effect, key:Effect, key:Effect- or key-
        /// (repeat for more)
        #[arg(long = "taint", value_parser = parse_taint)]
        taints: Vec<Taint>,
    },
    /// Print where the etcd member of a host stands, as this master's etcd lists it: `absent`,
    /// `learner`, `unstarted-voter` (added without learner mode, not started yet) or `voter`
    EtcdMember {
        /// The host's address (its member's peer URL host)
        #[arg(long)]
        address: String,
    },
    /// Print `member` when this host already is a complete member of the cluster (kubelet's
    /// credentials, and on a master its control plane's static pods), else `not a member`
    Member {
        /// Where node.json says this host's role
        #[arg(long, default_value = bale_installer::layout::DEFAULT_DATA_DIR)]
        data_dir: String,
    },
    /// Print the cluster's nodes with their addresses and pod subnets as JSON
    Nodes {
        /// Wait until at least this many nodes have a pod subnet
        #[arg(long, default_value_t = 0)]
        wait_for: usize,
        /// Give up waiting after this many seconds (the list is printed anyway)
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct CopyArgs {
    /// Where bundle.bale goes
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Header digest of the bundle (hex)
    #[arg(long)]
    pub digest: String,
    /// This node's address, where other nodes fetch chunks
    #[arg(long)]
    pub listen: IpAddr,
    /// Length of the program part of the bundle (what `stub` requests get)
    #[arg(long)]
    pub stub_len: u64,
    /// This start's name, written to the state file
    #[arg(long, default_value = "")]
    pub run: String,
}

fn parse_label(s: &str) -> Result<(String, String), MarkError> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    marks::check_key(k)?;
    marks::check_value(v)?;
    Ok((k.to_string(), v.to_string()))
}

fn parse_taint(s: &str) -> Result<Taint, MarkError> {
    Taint::parse(s)
}

/// The step names with their help, checked by clap (its own "invalid value" error and list of
/// possible values) before the library reads them.
fn step_names() -> impl TypedValueParser<Value = StepName> {
    PossibleValuesParser::new(StepName::ALL.map(|s| PossibleValue::new(s.as_str()).help(s.about())))
        .try_map(|s| s.parse::<StepName>())
}

/// The step actions with their help, checked like [`step_names`].
fn step_actions() -> impl TypedValueParser<Value = StepAction> {
    PossibleValuesParser::new(
        StepAction::ALL.map(|a| PossibleValue::new(a.as_str()).help(a.about())),
    )
    .try_map(|s| s.parse::<StepAction>())
}

impl From<CopyArgs> for CopyOptions {
    fn from(a: CopyArgs) -> Self {
        CopyOptions {
            data_dir: a.data_dir,
            digest: a.digest,
            listen: a.listen,
            stub_len: a.stub_len,
            run: a.run,
        }
    }
}

impl From<KubeSubcommand> for KubeCommand {
    fn from(c: KubeSubcommand) -> Self {
        match c {
            KubeSubcommand::JoinMaterial { control_plane } => {
                KubeCommand::JoinMaterial { control_plane }
            }
            KubeSubcommand::Drain { addresses } => KubeCommand::Drain { addresses },
            KubeSubcommand::Forget { addresses } => KubeCommand::Forget { addresses },
            KubeSubcommand::Nodes { wait_for, timeout } => KubeCommand::Nodes { wait_for, timeout },
            KubeSubcommand::Member { data_dir } => KubeCommand::Member { data_dir },
            KubeSubcommand::EtcdMember { address } => KubeCommand::EtcdMember { address },
            KubeSubcommand::Mark {
                address,
                labels,
                taints,
            } => KubeCommand::Mark {
                address,
                labels,
                taints,
            },
        }
    }
}

impl From<AgentArgs> for AgentCommand {
    fn from(a: AgentArgs) -> Self {
        match a.command {
            AgentSubcommand::Copy(c) => AgentCommand::Copy(c.into()),
            AgentSubcommand::Status { json } => AgentCommand::Status { json },
            AgentSubcommand::Step {
                name,
                action,
                data_dir,
            } => AgentCommand::Step {
                name,
                action,
                data_dir,
            },
            AgentSubcommand::Kube(k) => AgentCommand::Kube(k.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn agent(args: &[&str]) -> Result<AgentCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .map(|c| c.agent.into())
    }

    #[test]
    fn every_step_and_action_parses_and_nothing_else_does() {
        for name in StepName::ALL {
            for action in StepAction::ALL {
                let c = agent(&["step", name.as_str(), action.as_str()]).unwrap();
                assert!(
                    matches!(c, AgentCommand::Step { name: n, action: a, ref data_dir }
                        if n == name && a == action && data_dir == "/var/lib/bale"),
                    "{c:?}"
                );
            }
        }
        let e = agent(&["step", "frob", "apply"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(agent(&["step", "kernel", "Apply"]).is_err());
    }

    #[test]
    fn kube_addresses_are_comma_separated() {
        let c = agent(&["kube", "drain", "--addresses", "10.0.0.2,10.0.0.3"]).unwrap();
        assert!(
            matches!(&c, AgentCommand::Kube(KubeCommand::Drain { addresses })
                if addresses == &["10.0.0.2", "10.0.0.3"]),
            "{c:?}"
        );
    }

    #[test]
    fn kube_mark_takes_labels_and_taints_and_checks_them() {
        let c = agent(&[
            "kube",
            "mark",
            "--address",
            "10.0.0.5",
            "--label",
            "disk=ssd",
            "--label",
            "example.com/gpu=",
            "--taint",
            "dedicated=db:NoSchedule",
            "--taint",
            "gpu-",
        ])
        .unwrap();
        let AgentCommand::Kube(KubeCommand::Mark {
            address,
            labels,
            taints,
        }) = c
        else {
            panic!("{c:?}")
        };
        assert_eq!(address, "10.0.0.5");
        assert_eq!(labels[1], ("example.com/gpu".to_string(), String::new()));
        assert_eq!(taints[1].kubectl_arg(), "gpu-");
        assert!(agent(&["kube", "mark", "--address", "a", "--taint", "x=y"]).is_err());
        assert!(agent(&["kube", "mark", "--address", "a", "--label", "a b=c"]).is_err());
    }
}

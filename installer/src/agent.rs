//! `bale agent`: what the copied bundle does on each node. For now `status`, which proves the
//! bundle's native code runs on the node and says which bundle it is.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Print this node's and this bundle's identity
    Status {
        /// One JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub arch: String,
    pub hostname: String,
    pub kernel: String,
    pub bundle: Option<BundleId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BundleId {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub path: PathBuf,
}

fn proc(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn status(this: Option<&bale_payload::Bundle>) -> Status {
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        arch: std::env::consts::ARCH.into(),
        hostname: proc("/proc/sys/kernel/hostname"),
        kernel: proc("/proc/sys/kernel/osrelease"),
        bundle: this.map(|b| BundleId {
            name: b.header.name.clone(),
            version: b.header.version.clone(),
            digest: bale_payload::format::hex(&b.trailer.header_sha256),
            path: b.path().to_path_buf(),
        }),
    }
}

pub fn run(args: AgentArgs, this: Option<&bale_payload::Bundle>) -> anyhow::Result<()> {
    match args.command {
        AgentCommand::Status { json } => {
            let st = status(this);
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                println!(
                    "bale agent {} on {} ({}, kernel {})",
                    st.version, st.hostname, st.arch, st.kernel
                );
                match &st.bundle {
                    Some(b) => println!("bundle {} {} ({})", b.name, b.version, b.digest),
                    None => println!("no bundle: this bale carries no payload"),
                }
            }
            Ok(())
        }
    }
}

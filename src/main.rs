//! The `bale` program. Without a payload it is the build tool; with one appended, the very same
//! executable is the bundle and acts on itself.

mod bundle_cmds;
mod cli;
mod lvscare_cmd;
mod progress;
mod share_cmds;
mod store_cmds;
mod trust_cmds;

use anyhow::Result;
use bale_payload::Bundle;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a bundle whose bytes are wrong (damaged, truncated, tampered).
pub const EXIT_DAMAGED: u8 = 3;
/// Exit code for a bundle not signed by a trusted key while trust is required.
pub const EXIT_UNTRUSTED: u8 = 4;

const AFTER_HELP: &str = "\
A bundle is this program with a cluster image appended: one file to copy to a site with no
internet and run there. Every byte is checked against SHA-256 digests chained from the end of
the file.

Build:     bale build ./rootfs -o app.bale --name app --version 1.0
Inspect:   bale info app.bale        bale list app.bale       bale verify app.bale
           bale sbom app.bale
Sign:      bale keygen -o key        bale sign app.bale --key key
           bale verify --key key.pub app.bale     bale build ... --sign key --trust key.pub
Share:     bale push app.bale registry.example.com/apps/app:1.0
           bale pull registry.example.com/apps/app:1.0 -o app.bale
Store:     bale build -t base:1.0 ./base   (then FROM base:1.0)   bale images   bale rmi base:1.0
On site:   ./app.bale verify         ./app.bale extract --to /opt/app

Exit codes: 0 success, 1 error, 2 usage, 3 the bundle is damaged, 4 the bundle is not signed
by a trusted key while trust is required.";

#[derive(Parser)]
#[command(
    name = "bale",
    version,
    about = "One file carries a whole cluster: build, inspect and install air-gapped bundles",
    after_help = AFTER_HELP,
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Build a bundle from a Kubefile, or pack a directory tree
    Build(bundle_cmds::BuildArgs),
    /// Show a bundle's name, version, architecture, inputs, sizes and counts
    Info(bundle_cmds::InfoArgs),
    /// List a bundle's entries
    List(bundle_cmds::ListArgs),
    /// Check every byte of a bundle against its digests
    Verify(bundle_cmds::VerifyArgs),
    /// Write a bundle's entries to a directory
    Extract(bundle_cmds::ExtractArgs),
    /// Write the copy of a bundle of several platforms that runs on another architecture
    #[command(after_help = bundle_cmds::VARIANT_HELP)]
    Variant(bundle_cmds::VariantArgs),
    /// Make an ed25519 key pair to sign bundles with
    Keygen(trust_cmds::KeygenArgs),
    /// Sign a bundle (adds a signature over its root; the payload is unchanged)
    Sign(trust_cmds::SignArgs),
    /// Work with a bundle's signatures
    #[command(subcommand)]
    Signatures(trust_cmds::SignaturesCommand),
    /// Print a bundle's SBOM (CycloneDX 1.5 JSON)
    Sbom(bundle_cmds::SbomArgs),
    /// Store a bundle in an OCI registry (chunked, parallel, resumable)
    Push(share_cmds::PushArgs),
    /// Fetch a bundle from an OCI registry and verify every byte
    Pull(share_cmds::PullArgs),
    /// List the bundles in the local bundle store (what `build -t` recorded)
    Images(store_cmds::ImagesArgs),
    /// Remove tags, and bundles no tag names, from the local bundle store
    Rmi(store_cmds::RmiArgs),
    /// Give a stored bundle another tag
    Tag(store_cmds::TagArgs),
    /// Serve the bundled images over the OCI distribution API
    #[command(subcommand)]
    Registry(cli::registry::RegistryCommand),
    /// Keep a virtual IP pointing at healthy API servers (IPVS or nftables)
    Lvscare(lvscare_cmd::LvscareArgs),
    /// Install this bundle on hosts over SSH (or on this machine when none are given)
    Install(cli::hosts::InstallArgs),
    /// Remove everything bale installed on the hosts (safe to repeat)
    Reset(cli::hosts::ResetArgs),
    /// Remove the named hosts from the cluster (a reset of just those hosts)
    #[command(after_help = cli::hosts::DELETE_HELP)]
    Delete(cli::hosts::ResetArgs),
    /// Report, per host, whether the runtime, the registry, the guard and the apps are healthy
    Check(cli::hosts::CheckArgs),
    /// What the copied bundle runs on each host during an install
    #[command(hide = true)]
    Agent(cli::agent::AgentArgs),
}

/// For commands that only print: a reader that stops early (`bale list | head`) ends the
/// program quietly, as it ends `ls`, instead of a failed write to the closed pipe. Only for
/// those: the others write to pipes whose end is an error to handle (ssh, a copy agent).
fn print_until_the_reader_leaves() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SigDfl installs no handler of ours, and this runs before any thread starts.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

fn main() -> ExitCode {
    // Started by ssh as SSH_ASKPASS during `install`: answer the prompt and stop.
    if let Some(code) = bale_installer::ssh::askpass_hook() {
        return ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Some(Command::Info(_) | Command::List(_) | Command::Sbom(_) | Command::Images(_))
    ) {
        print_until_the_reader_leaves();
    }
    let this = match Bundle::open_self() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bale: this program's own payload is unreadable: {e}");
            return ExitCode::from(EXIT_DAMAGED);
        }
    };
    let r: Result<()> = match cli.command {
        None => {
            match &this {
                Some(b) => bundle_cmds::summary(b),
                None => {
                    use clap::CommandFactory;
                    let _ = Cli::command().print_help();
                }
            }
            Ok(())
        }
        Some(Command::Build(a)) => bundle_cmds::build(a),
        Some(Command::Info(a)) => bundle_cmds::info(a, this),
        Some(Command::List(a)) => bundle_cmds::list(a, this),
        Some(Command::Verify(a)) => bundle_cmds::verify(a, this),
        Some(Command::Extract(a)) => bundle_cmds::extract(a, this),
        Some(Command::Variant(a)) => bundle_cmds::variant(a, this),
        Some(Command::Keygen(a)) => trust_cmds::keygen(a),
        Some(Command::Sign(a)) => trust_cmds::sign(a),
        Some(Command::Signatures(trust_cmds::SignaturesCommand::Export(a))) => {
            trust_cmds::export(a, this)
        }
        Some(Command::Sbom(a)) => bundle_cmds::sbom(a, this),
        Some(Command::Push(a)) => share_cmds::push(a),
        Some(Command::Pull(a)) => share_cmds::pull(a),
        Some(Command::Images(a)) => store_cmds::images(a),
        Some(Command::Rmi(a)) => store_cmds::rmi(a),
        Some(Command::Tag(a)) => store_cmds::tag(a),
        Some(Command::Registry(cli::registry::RegistryCommand::Serve(a))) => {
            bale_registry::serve(a.into()).map_err(Into::into)
        }
        Some(Command::Lvscare(a)) => lvscare_cmd::run(a),
        Some(Command::Install(a)) => {
            let bundle = acted_on(a.target.bundle.clone(), this.as_ref());
            bale_installer::install::run(a.into(), bundle)
        }
        .map_err(anyhow::Error::from),
        Some(Command::Reset(a)) => {
            let bundle = acted_on(a.target.bundle.clone(), this.as_ref());
            bale_installer::reset::reset(a.into(), bundle)
        }
        .map_err(anyhow::Error::from),
        Some(Command::Delete(a)) => {
            let bundle = acted_on(a.target.bundle.clone(), this.as_ref());
            bale_installer::delete::delete(a.into(), bundle)
        }
        .map_err(anyhow::Error::from),
        Some(Command::Check(a)) => {
            let bundle = acted_on(a.target.bundle.clone(), this.as_ref());
            bale_installer::check::check(&a.target.into(), bundle)
        }
        .map_err(anyhow::Error::from),
        Some(Command::Agent(a)) => {
            bale_installer::agent::run(a.into(), this.as_ref()).map_err(anyhow::Error::from)
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bale: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The exit code for an error: 4 untrusted, 3 damaged (a signature that fails over the root is
/// damage too: the bytes were changed after signing), 1 otherwise.
fn exit_code(e: &anyhow::Error) -> u8 {
    fn trust<'a>(c: &'a (dyn std::error::Error + 'static)) -> Option<&'a bale_trust::Error> {
        c.downcast_ref::<bale_trust::Error>()
    }
    if e.chain()
        .any(|c| trust(c).is_some_and(|t| t.is_untrusted()))
    {
        return EXIT_UNTRUSTED;
    }
    let damaged = e.chain().any(|c| {
        c.downcast_ref::<bale_payload::Error>()
            .is_some_and(|p| p.is_corruption())
            || trust(c).is_some_and(|t| t.is_corruption())
            || c.downcast_ref::<bale_bundler::share::ShareError>()
                .is_some_and(|s| s.is_damaged())
            || c.downcast_ref::<bale_bundler::store::StoreError>()
                .is_some_and(|s| s.is_damaged())
            || c.downcast_ref::<bale_bundler::build::BuildError>()
                .is_some_and(|b| b.is_damaged())
            || c.downcast_ref::<bale_installer::run::RunError>()
                .is_some_and(|r| r.is_damaged())
    });
    if damaged {
        EXIT_DAMAGED
    } else {
        1
    }
}

/// A payload error about the bundle at `path`, named once: an I/O error already names its
/// file, every other one gets the bundle's path in front.
pub fn in_bundle(path: &std::path::Path, e: bale_payload::Error) -> anyhow::Error {
    match e {
        bale_payload::Error::Io { .. } => anyhow::Error::new(e),
        e => anyhow::Error::new(e)
            .context(bale_payload::printable(&path.to_string_lossy()).into_owned()),
    }
}

/// The bundle file a run over hosts acts on: the one named with `--bundle`, else this program
/// when it carries a payload.
fn acted_on(named: Option<PathBuf>, this: Option<&Bundle>) -> Option<PathBuf> {
    named.or_else(|| this.map(|b| b.path().to_path_buf()))
}

/// The bundle a command acts on: the one named, or this program itself when it is a bundle.
pub fn target_bundle(named: Option<PathBuf>, this: Option<Bundle>) -> Result<Bundle> {
    match (named, this) {
        (Some(p), _) => Bundle::open(&p).map_err(|e| in_bundle(&p, e)),
        (None, Some(b)) => Ok(b),
        (None, None) => anyhow::bail!(
            "name a bundle file, e.g. `bale info app.bale` (this bale program carries no payload)"
        ),
    }
}

//! `bale push` and `bale pull`: whole bundles through an OCI registry (see
//! `bale_bundler::share` for the artifact's layout and the checks).

use anyhow::{bail, Context, Result};
use bale_bundler::images::registry::auth::Credentials;
use bale_bundler::images::registry::Connection;
use bale_bundler::share::{self, ShareOptions};
use bale_payload::error::human_bytes;
use clap::Args;
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Instant;

/// How to reach the registry; shared by push and pull.
#[derive(Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP and unverified TLS for this registry (loopback registries always may)
    #[arg(long)]
    pub insecure: bool,
    /// PEM file of the CA that signed the registry's certificate (checked even on loopback)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// User name for the registry [default: from Docker's config.json, as `docker login` left it]
    #[arg(long, short = 'u')]
    pub username: Option<String>,
    /// Read the password for --username from the first line of standard input
    #[arg(long, requires = "username")]
    pub password_stdin: bool,
    /// Chunks transferred at once
    #[arg(long, short = 'j', default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=32))]
    pub jobs: u16,
    /// Print the result as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(after_help = "\
Stores the bundle as an OCI artifact (artifactType application/vnd.bale.bundle.v1): the file
cut into 64 MiB chunk blobs, uploaded in parallel. Chunks the registry already has are not
sent again, so a push that was cut resumes where it stopped. The SBOM, when the bundle has one,
is also pushed as a referrer; the signature is inside the file.

Example: bale push app.bale registry.example.com/apps/app:1.0")]
pub struct PushArgs {
    /// Bundle file
    pub file: PathBuf,
    /// Where to: REGISTRY/ns/name:tag
    #[arg(value_name = "REF")]
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// MiB per chunk (for tests: many chunks from a small bundle)
    #[arg(long, hide = true, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub chunk_mib: u64,
}

#[derive(Args)]
#[command(after_help = "\
Downloads the chunks into OUT.part (a cut pull keeps what it has: run it again), checks each
against its digest, verifies every byte of the bundle as `bale verify` does, and only then
renames it to OUT; with trusted keys (--key, --trusted-keys, BALE_TRUSTED_KEYS,
/etc/bale/trusted-keys/, or keys baked into this program) it must also be signed by one, as
`bale verify` checks. Exit 3 when the registry's bytes are damaged (the blob is named), 4 when
the bundle is not signed by a trusted key.

Example: bale pull registry.example.com/apps/app:1.0 -o app.bale")]
pub struct PullArgs {
    /// What to pull: REGISTRY/ns/name:tag or REGISTRY/ns/name@sha256:...
    #[arg(value_name = "REF")]
    pub reference: String,
    /// Bundle file to write
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub trust: crate::trust_cmds::TrustArgs,
}

fn options(a: &RegistryArgs) -> Result<ShareOptions> {
    let credentials = match &a.username {
        Some(user) => {
            if !a.password_stdin {
                bail!(
                    "--username {user} needs its password on standard input: \
                     echo \"$PASSWORD\" | bale ... --username {user} --password-stdin"
                );
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from standard input")?;
            let pass = line.trim_end_matches(['\n', '\r']).to_string();
            if pass.is_empty() {
                bail!("--password-stdin: standard input held no password");
            }
            Some(Credentials {
                user: user.clone(),
                pass,
                origin: "--username/--password-stdin".into(),
            })
        }
        None => None,
    };
    if let Some(ca) = &a.ca_file {
        if !ca.is_file() {
            bail!("--ca-file {}: no such file", ca.display());
        }
    }
    Ok(ShareOptions {
        connection: Connection {
            insecure: a.insecure,
            ca_file: a.ca_file.clone(),
        },
        credentials,
        jobs: usize::from(a.jobs),
        progress: !a.json,
        ..Default::default()
    })
}

pub fn push(a: PushArgs) -> Result<()> {
    let started = Instant::now();
    let mut opts = options(&a.registry)?;
    opts.chunk_size = a.chunk_mib << 20;
    let r = share::parse_reference(&a.reference)?;
    let report = share::push(&a.file, &r, &opts)
        .with_context(|| format!("pushing {} to {}", a.file.display(), a.reference))?;
    let secs = started.elapsed().as_secs_f64();
    if a.registry.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "pushed {} to {}@{}: {} in {} chunks, {} sent ({} chunks already there) in {:.1}s{}",
        a.file.display(),
        r.name(),
        report.digest,
        human_bytes(report.size),
        report.chunks,
        human_bytes(report.bytes_uploaded),
        report.chunks - report.uploaded,
        secs,
        match (&report.sbom, &report.referrers) {
            (Some(d), Some(how)) => format!("; SBOM {d} ({how})"),
            _ => String::new(),
        }
    );
    Ok(())
}

pub fn pull(a: PullArgs) -> Result<()> {
    let started = Instant::now();
    let mut opts = options(&a.registry)?;
    opts.trust = crate::trust_cmds::policy(&a.trust)?;
    let r = share::parse_reference(&a.reference)?;
    let report = share::pull(&r, &a.output, &opts)
        .with_context(|| format!("pulling {} to {}", a.reference, a.output.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if a.registry.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "pulled {}@{} to {}: {} {}, {} in {} chunks, {} fetched ({} kept from {}), verified, \
         in {:.1}s; {}",
        r.name(),
        report.digest,
        a.output.display(),
        bale_payload::printable(&report.name),
        bale_payload::printable(&report.version),
        human_bytes(report.size),
        report.chunks,
        human_bytes(report.bytes_fetched),
        report.chunks - report.fetched,
        share::part_path(&a.output).display(),
        secs,
        report.signature
    );
    Ok(())
}

//! The commands about signatures: keygen, sign, signatures export, and the trust side of
//! build, verify and info.
//!
//! A bundle's signatures are OpenSSH SSHSIG over its root; `signatures export` lays them out
//! for a stock `ssh-keygen -Y verify`, so a host with nothing but OpenSSH can check one.

use crate::in_bundle;
use anyhow::{bail, Context, Result};
use bale_payload::{printable, Bundle};
use bale_trust::keys;
use bale_trust::ssh_key::{LineEnding, PrivateKey};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(after_help = "\
Makes NAME (the private key, mode 0600) and NAME.pub (the public key, one line to hand to
whoever checks bundles). Neither is ever overwritten. With --passphrase-file or
BALE_KEY_PASSPHRASE the private key is encrypted with that passphrase.")]
pub struct KeygenArgs {
    /// Private key file to create (the public key goes to NAME.pub)
    #[arg(short, long, value_name = "NAME")]
    pub output: PathBuf,
    /// Comment stored with the key (who it belongs to)
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub comment: String,
    /// File whose first line is the passphrase to encrypt the key with
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Args)]
#[command(after_help = "\
Signs the bundle's root (the SHA-256 of its header, which the digest chain extends to every
byte) and stores the signature in the bundle. Nothing else in the file changes: the payload's
digests stay as they are. Signing again with the same key replaces its signature; another
key adds one (key rotation, a second publisher). The file is rewritten under a temporary name
and renamed when complete.")]
pub struct SignArgs {
    /// Bundle file to sign
    pub file: PathBuf,
    /// Private key (OpenSSH ed25519, mode 0600)
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// File whose first line is the key's passphrase [or BALE_KEY_PASSPHRASE]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Drop every existing signature first
    #[arg(long)]
    pub replace: bool,
    /// Write the signed bundle here instead of replacing FILE
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The flags naming trusted keys, for `verify`.
#[derive(Args, Clone, Default)]
pub struct TrustArgs {
    /// Trust the public keys in this file (repeatable; one `ssh-ed25519 ...` line per key)
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Trust every *.pub in DIR; DIR/revoked lists revoked keys or SHA256 fingerprints
    #[arg(long = "trusted-keys", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

/// Signing flags of `build`.
#[derive(Args, Clone, Default)]
pub struct BuildSignArgs {
    /// Sign the bundle with this private key (OpenSSH ed25519)
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// File whose first line is the signing key's passphrase [or BALE_KEY_PASSPHRASE]
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Bake the public keys in this file into the bundle's program (repeatable): the bundle
    /// then refuses, before anything runs, a payload not signed by one of them
    #[arg(long = "trust", value_name = "PUB")]
    pub trust: Vec<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum SignaturesCommand {
    /// Write the root and the signatures for a stock `ssh-keygen -Y verify`
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
    /// Directory to write root.bin, the .sig files and allowed_signers into
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    let pass = keys::passphrase(a.passphrase_file.as_deref())?;
    let k = keys::keygen(&a.output, &a.comment, pass.as_deref())?;
    eprintln!(
        "wrote {} (private, {}) and {} (public)",
        k.private.display(),
        if pass.is_some() {
            "passphrase-protected"
        } else {
            "not encrypted"
        },
        k.public.display()
    );
    println!("{}", k.fingerprint);
    Ok(())
}

fn load_key(key: &Path, passphrase_file: Option<&Path>) -> Result<PrivateKey> {
    let pass = keys::passphrase(passphrase_file)?;
    Ok(keys::load_private_key(key, pass.as_deref())?)
}

pub fn sign(a: SignArgs) -> Result<()> {
    let key = load_key(&a.key, a.passphrase_file.as_deref())?;
    let b = Bundle::open(&a.file).map_err(|e| in_bundle(&a.file, e))?;
    let dest = a.output.clone().unwrap_or_else(|| a.file.clone());
    bale_trust::sign_bundle(&b, &key, a.replace, &dest)
        .map_err(|e| anyhow::Error::new(e).context(a.file.display().to_string()))?;
    eprintln!(
        "signed {} with {}",
        dest.display(),
        keys::fingerprint(key.public_key())
    );
    Ok(())
}

/// Checks the signing flags of `build` before anything is built, and returns the loaded key
/// and the key lines to bake.
pub struct BuildSigning {
    key: Option<PrivateKey>,
    baked: Option<String>,
    baked_fps: Vec<String>,
}

pub fn build_signing(a: &BuildSignArgs) -> Result<BuildSigning> {
    let key = a
        .sign
        .as_deref()
        .map(|k| load_key(k, a.passphrase_file.as_deref()))
        .transpose()?;
    let mut lines = String::new();
    let mut fps = Vec::new();
    for f in &a.trust {
        for k in keys::read_public_keys(f)? {
            lines.push_str(&keys::public_line(&k)?);
            lines.push('\n');
            fps.push(keys::fingerprint(&k));
        }
    }
    if let Some(k) = &key {
        let fp = keys::fingerprint(k.public_key());
        if !fps.is_empty() && !fps.contains(&fp) {
            eprintln!(
                "warning: the bundle is signed by {fp}, but its program trusts only {}: it \
                 will refuse to install until a trusted key signs it",
                fps.join(", ")
            );
        }
    }
    Ok(BuildSigning {
        key,
        baked: (!a.trust.is_empty()).then_some(lines),
        baked_fps: fps,
    })
}

/// A stub with baked keys, written next to the output and removed when dropped.
pub struct BakedStub(PathBuf);

impl BakedStub {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for BakedStub {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl BuildSigning {
    /// The stub to build with: `stub` itself, or a copy with the trusted keys baked in.
    pub fn stub_for(&self, stub: &Path, output: &Path) -> Result<Option<BakedStub>> {
        let Some(lines) = &self.baked else {
            return Ok(None);
        };
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into());
        let tmp =
            BakedStub(output.with_file_name(format!(".{name}.stub-{}.tmp", std::process::id())));
        bale_trust::baked::bake(stub, tmp.path(), lines)?;
        eprintln!(
            "baked {} trusted key(s) into the program: {}",
            self.baked_fps.len(),
            self.baked_fps.join(", ")
        );
        Ok(Some(tmp))
    }

    /// Signs the bundle just written, when --sign was given.
    pub fn sign(&self, output: &Path) -> Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let signed = Bundle::open(output)
            .map_err(|e| in_bundle(output, e))
            .and_then(|b| {
                bale_trust::sign_bundle(&b, key, true, output)
                    .map_err(|e| anyhow::Error::new(e).context(output.display().to_string()))
            });
        if let Err(e) = signed {
            // An unsigned file under the name of a build that was asked to sign would pass for
            // the finished result.
            let _ = std::fs::remove_file(output);
            return Err(e.context("the bundle was built but could not be signed; removed it"));
        }
        eprintln!(
            "signed {} with {}",
            output.display(),
            keys::fingerprint(key.public_key())
        );
        Ok(())
    }
}

/// The trust policy of `verify`: its flags and every other source.
pub fn policy(a: &TrustArgs) -> Result<bale_trust::TrustPolicy> {
    Ok(bale_trust::TrustPolicy::load(&bale_trust::TrustFlags {
        keys: a.keys.clone(),
        dirs: a.dirs.clone(),
    })?)
}

/// The signature part of `verify`: the verdict in plain words, enforced when trust is
/// configured.
pub fn verify_signatures(b: &Bundle, policy: &bale_trust::TrustPolicy) -> Result<String> {
    let report = bale_trust::enforce(b, policy)
        .map_err(|e| anyhow::Error::new(e).context(b.path().display().to_string()))?;
    Ok(report.describe())
}

/// The signers for `info`, one line each; a damaged block is shown, not fatal.
pub fn info_lines(b: &Bundle) -> Vec<String> {
    match bale_trust::policy::signers(b) {
        Ok(s) if s.is_empty() => vec!["unsigned".into()],
        Ok(s) => s
            .iter()
            .map(|s| {
                let c = s.key.comment();
                if c.is_empty() {
                    s.fingerprint.clone()
                } else {
                    format!("{} ({})", s.fingerprint, printable(c))
                }
            })
            .collect(),
        Err(e) => vec![format!("INVALID: {e}")],
    }
}

pub fn export(a: ExportArgs, this: Option<Bundle>) -> Result<()> {
    let b = crate::target_bundle(a.file, this)?;
    let signers = bale_trust::policy::signers(&b)
        .map_err(|e| anyhow::Error::new(e).context(b.path().display().to_string()))?;
    if signers.is_empty() {
        bail!(
            "{}: unsigned, there is no signature to export (sign it with `bale sign`)",
            b.path().display()
        );
    }
    let dir = &a.output;
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    write_file(&dir.join("root.bin"), &b.root())?;
    let mut allowed = String::new();
    let mut cmds = Vec::new();
    for (i, s) in signers.iter().enumerate() {
        let n = i + 1;
        let principal = format!("signer-{n}");
        let sig = s
            .signature
            .to_pem(LineEnding::LF)
            .context("cannot encode a signature")?;
        let sig_name = format!("signature-{n}.sig");
        write_file(&dir.join(&sig_name), sig.as_bytes())?;
        let key = keys::public_line_bare(&s.key)?;
        allowed.push_str(&format!(
            "{principal} namespaces=\"{}\" {key}\n",
            bale_trust::NAMESPACE
        ));
        cmds.push(format!(
            "ssh-keygen -Y verify -f allowed_signers -I {principal} -n {} -s {sig_name} < root.bin   # {}",
            bale_trust::NAMESPACE,
            s.fingerprint
        ));
    }
    write_file(&dir.join("allowed_signers"), allowed.as_bytes())?;
    println!(
        "wrote root.bin (the root: trailer bytes 48..80 of {}), {} signature(s) and \
         allowed_signers to {}",
        b.path().display(),
        signers.len(),
        dir.display()
    );
    println!("Check with OpenSSH alone, in {}:", dir.display());
    for c in cmds {
        println!("  {c}");
    }
    println!(
        "The root can also be taken from the bundle itself: \
         tail -c 128 FILE | head -c 80 | tail -c 32 > root.bin"
    );
    Ok(())
}

/// Writes a file under a temporary name in the same directory, then renames it.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(anyhow::Error::new(e).context(path.display().to_string()));
    }
    Ok(())
}

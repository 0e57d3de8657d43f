//! The commands that work on bundle files: build, info, list, verify, extract, sbom.
//!
//! Whatever a bundle says about itself (names, versions, inputs, entry paths, link targets) is
//! printed through [`bale_payload::printable`], so a crafted bundle cannot fake lines or move
//! the cursor; `--json` output is escaped by JSON itself.

use crate::{in_bundle, progress, target_bundle};
use anyhow::{bail, Context, Result};
use bale_bundler::{sbom, tree};
use bale_payload::error::human_bytes;
use bale_payload::extract::{self, ExtractOptions};
use bale_payload::{printable, verify, Bundle, BundleMeta, BundleWriter, Kind, WriteOptions};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args)]
#[command(after_help = "\
Two forms. With a Kubefile (-f, or a Kubefile in CONTEXT), the Kubefile is executed: the base
(FROM scratch, a directory, a .bale file, or a name: FROM name:tag is looked for as a path in
the context, then in the bundle store (what `bale build -t name:tag` recorded), then, for
REGISTRY/ns/name:tag, in that registry, pulled into the bundle store), COPY/ADD from the
context, RUN on the build host,
CMD/APP as install steps; the images the context's manifests, charts and imageList name are
collected (from CONTEXT/images/ first, then the image cache, then their registries) into
registry/. Without one, the CONTEXT directory is packed as it is.

The bundle is written for the architecture of the stub: this program by default, or the
bale binary given with --stub (e.g. an aarch64 build). With several --platform values, one
bundle that installs on every one of them (each host gets its own architecture's program and
binaries, and each image's variant for it; blobs are carried once); with -o naming {arch},
one bundle per platform instead. Output is byte-for-byte
reproducible: entries are sorted and no time or host name is recorded unless --timestamp is
given.

Examples:
  bale build -f Kubefile -t app:1.0 .
  bale build -t app:1.0 --platform linux/amd64,linux/arm64 --stub-dir out/release .
  bale build -t app:1.0 --platform linux/amd64,linux/arm64 -o 'app-{arch}.bale' .
  bale build ./rootfs -o app.bale --name app --version 1.0")]
pub struct BuildArgs {
    /// Build context (holding a Kubefile), or a directory tree to pack
    #[arg(value_name = "CONTEXT")]
    pub dir: PathBuf,
    /// Bundle file to write (written under a temporary name, renamed when complete)
    /// [default: NAME-VERSION.bale]; {arch} is replaced by each platform's architecture
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Kubefile to execute [default: CONTEXT/Kubefile, when it exists]
    #[arg(short = 'f', long = "file", value_name = "KUBEFILE")]
    pub kubefile: Option<PathBuf>,
    /// Bundle name and version, e.g. app:1.0; the bundle is also recorded under that tag in
    /// the bundle store (see --store), where `FROM app:1.0` finds it
    #[arg(short = 't', long = "tag", value_name = "NAME[:VERSION]")]
    pub tag: Option<String>,
    /// Value for an ARG of the Kubefile (repeatable)
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// Platforms to build for, comma-separated (e.g. linux/amd64,linux/arm64): one bundle for
    /// all of them, or one each when -o names {arch} [default: the stub's]
    #[arg(long, value_delimiter = ',', value_name = "OS/ARCH")]
    pub platform: Vec<String>,
    /// Print the images the context needs, where each is named, and exit without building
    #[arg(long)]
    pub list_images: bool,
    /// Do not contact registries: images come from CONTEXT/images/ and the image cache only,
    /// a FROM REGISTRY/... base from the bundle store (as last pulled)
    #[arg(long)]
    pub offline: bool,
    /// Image cache directory [default: $XDG_CACHE_HOME/bale/oci]
    #[arg(long, value_name = "DIR")]
    pub image_cache: Option<PathBuf>,
    /// Registry (host[:port]) that may use plain HTTP or unverified TLS (repeatable)
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
    /// Bundle name [default: from --tag, else the directory's name]
    #[arg(long)]
    pub name: Option<String>,
    /// Bundle version [default: from --tag, else 0.0.0]
    #[arg(long)]
    pub version: Option<String>,
    /// bale program to put in front of the payload (another architecture's build)
    #[arg(long, value_name = "BALE")]
    pub stub: Option<PathBuf>,
    /// Directory holding bale-x86_64 / bale-aarch64, the stubs for other architectures
    #[arg(long, value_name = "DIR")]
    pub stub_dir: Option<PathBuf>,
    /// zstd level for compressible content (1 fast .. 19 small)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Worker threads [default: every core]
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
    /// Record the build time in the bundle (makes builds non-reproducible)
    #[arg(long)]
    pub timestamp: bool,
    #[command(flatten)]
    pub signing: crate::trust_cmds::BuildSignArgs,
    #[command(flatten)]
    pub store: crate::store_cmds::StoreArg,
}

#[derive(Args)]
pub struct InfoArgs {
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
    /// Print the header as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct VariantArgs {
    /// Architecture whose program the copy starts with: x86_64 or aarch64 (amd64 and arm64
    /// are understood too)
    #[arg(long, value_name = "ARCH")]
    pub arch: String,
    /// File to write [default: NAME-VERSION-ARCH.bale]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
}

pub const VARIANT_HELP: &str = "\
A bundle built with several --platform values starts with one architecture's program and
carries the others'. `install` sends every host its own architecture's copy by itself; this
writes such a copy, to run the bundle on a host of that architecture directly:

  bale variant --arch aarch64 -o app-arm64.bale app.bale
  scp app-arm64.bale arm-host: && ssh arm-host ./app-arm64.bale install

The copy has the same header, entries and signatures (its root is the same), so `verify` and
the trusted keys accept it as the same bundle.";

#[derive(Args)]
pub struct ListArgs {
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
    /// Show kind, mode, size, stored size and digest
    #[arg(short, long)]
    pub long: bool,
    /// One JSON object per line; `file_offset` is where the content lies in the file as one
    /// run of raw bytes (image blobs, incompressible files), which is what the registry serves
    /// in place, and null for content stored compressed
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(after_help = "\
Checks the program, the header, the entry table and every stored frame against the SHA-256
chain that starts in the trailer. Exit 0 when every byte is right; otherwise exit 3 and the
first damaged entry is named.

Then the signatures: each must verify over the bundle's root (else exit 3: the bundle was
changed after it was signed). Trusted keys come from --key, --trusted-keys, BALE_TRUSTED_KEYS
(a key file or directory), /etc/bale/trusted-keys/ and the keys baked into this program; when
there are any, a bundle not signed by one of them is refused (exit 4). Without any, the
verdict is only stated: unsigned, or signed by an unknown key.")]
pub struct VerifyArgs {
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
    /// Also decompress every entry and check its content digest (slower)
    #[arg(long)]
    pub content: bool,
    /// Worker threads [default: every core]
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub trust: crate::trust_cmds::TrustArgs,
}

#[derive(Args)]
#[command(after_help = "\
On a bundle:        ./app.bale extract --to DIR [PATHS...]
On any bundle file: bale extract app.bale --to DIR [PATHS...]

PATHS select entries or whole directories. Files are written under temporary names and
renamed only once verified; paths that would escape DIR, symlinks that point outside it,
and anything on disk that would redirect a write are refused.")]
pub struct ExtractArgs {
    /// [BUNDLE] [PATHS...]: the bundle file (unless this program is one), then entries
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,
    /// Directory to extract into (created if missing)
    #[arg(short = 'C', long = "to", value_name = "DIR", default_value = ".")]
    pub to: PathBuf,
    /// Bundle file to read, even when this program is itself a bundle
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// Worker threads [default: every core]
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
    /// Do not check free space first
    #[arg(long)]
    pub skip_space_check: bool,
    /// Flush to disk before reporting success (survives a power cut, not only a crash)
    #[arg(long)]
    pub sync: bool,
}

#[derive(Args)]
#[command(after_help = "\
Prints the bundle's software bill of materials (CycloneDX 1.5 JSON), the entry
.bale/sbom.cdx.json that every build writes: each file with its SHA-256, each image with its
original name, platform, manifest and layer digests, the Go modules and Debian packages
binaries and layers came from, the base bundles and the Kubernetes version. Its bytes are
checked against the bundle's digest chain as they are read (exit 3 when they are wrong).")]
pub struct SbomArgs {
    /// Bundle file [default: this program, when it is a bundle]
    pub file: Option<PathBuf>,
    /// Write it to FILE instead of standard output (under a temporary name, renamed when
    /// complete)
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn sbom(a: SbomArgs, this: Option<Bundle>) -> Result<()> {
    let b = target_bundle(a.file, this)?;
    let entries = b.entries().map_err(|e| in_bundle(b.path(), e))?;
    let shown = printable(&b.path().to_string_lossy()).into_owned();
    let doc = sbom::read_sbom(&b, &entries)
        .map_err(|e| match e {
            // The payload's own error, so that a damaged bundle exits with its code.
            sbom::SbomError::Payload(p) => in_bundle(b.path(), p),
            other => anyhow::Error::new(other).context(shown.clone()),
        })?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{shown}: the bundle has no SBOM ({}); it was built by a bale without SBOMs: \
                 build it again",
                sbom::SBOM_ENTRY
            )
        })?;
    // Valid JSON holds control characters only as escapes, so the check also keeps raw
    // terminal sequences out.
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(&doc) {
        bail!(
            "{shown}: its SBOM is not JSON ({e}); `bale extract {shown} {}` gives its bytes",
            sbom::SBOM_ENTRY
        );
    }
    match a.output {
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let safe = if std::io::IsTerminal::is_terminal(&out) {
                terminal_safe_json(&doc)
            } else {
                std::borrow::Cow::Borrowed(&doc[..])
            };
            out.write_all(&safe)
                .context("writing the SBOM to standard output")?;
            out.flush().context("writing the SBOM to standard output")?;
        }
        Some(path) => write_file_atomic(&path, &doc)?,
    }
    Ok(())
}

/// Valid JSON with every character a terminal could act on (bidirectional overrides, C1
/// controls, DEL) written as a `\uXXXX` escape: outside strings JSON allows only ASCII
/// punctuation and whitespace, so such characters are inside strings, where the escape means
/// the same.
fn terminal_safe_json(doc: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let Ok(text) = std::str::from_utf8(doc) else {
        return std::borrow::Cow::Borrowed(doc);
    };
    let risky = |c: char| {
        !matches!(c, '\\' | '\n' | '\r' | '\t')
            && matches!(
                printable(c.encode_utf8(&mut [0; 4])),
                std::borrow::Cow::Owned(_)
            )
    };
    if !text.chars().any(risky) {
        return std::borrow::Cow::Borrowed(doc);
    }
    let mut out = String::with_capacity(text.len() + 64);
    for c in text.chars() {
        if risky(c) {
            for u in c.encode_utf16(&mut [0u16; 2]) {
                out.push_str(&format!("\\u{:04x}", u));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out.into_bytes())
}

/// Writes `data` to `path` through a temporary name in the same directory, synced, so that a
/// partial write never sits under the final name.
fn write_file_atomic(path: &std::path::Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".bale-sbom-")
        .tempfile_in(&dir)
        .with_context(|| format!("{}: cannot create a file there", dir.display()))?;
    // An ordinary file for its reader, not the temporary file's 0600.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("{}: cannot set its mode", tmp.path().display()))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .with_context(|| format!("{}: cannot write", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn threads(n: Option<usize>) -> usize {
    n.filter(|n| *n > 0)
        .unwrap_or_else(bale_payload::default_threads)
}

/// Name and version from --tag, --name and --version.
fn name_version(a: &BuildArgs, dir: &std::path::Path) -> (String, String) {
    let (mut name, mut version) = (None, None);
    if let Some(t) = &a.tag {
        match t.rsplit_once(':').filter(|(_, v)| !v.contains('/')) {
            Some((n, v)) => (name, version) = (Some(n.to_string()), Some(v.to_string())),
            None => name = Some(t.clone()),
        }
    }
    let name = a.name.clone().or(name).unwrap_or_else(|| {
        dir.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into())
    });
    let version = a
        .version
        .clone()
        .or(version)
        .unwrap_or_else(|| "0.0.0".into());
    (name, version)
}

pub fn build(a: BuildArgs) -> Result<()> {
    let kubefile = match &a.kubefile {
        Some(k) => Some(k.clone()),
        None => Some(a.dir.join("Kubefile")).filter(|k| k.is_file()),
    };
    if let Some(k) = kubefile {
        return build_kubefile(a, &k);
    }
    if a.list_images {
        bail!(
            "--list-images needs a Kubefile: {} has none (give one with -f)",
            a.dir.display()
        );
    }
    if !a.platform.is_empty() {
        bail!("--platform needs a Kubefile; to pack a tree for another architecture use --stub");
    }
    let started = Instant::now();
    let dir = a
        .dir
        .canonicalize()
        .with_context(|| format!("{}: cannot read the input tree", a.dir.display()))?;
    let (name, version) = name_version(&a, &dir);
    let output = a
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.bale")));
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(p) = parent.canonicalize() {
            if p.starts_with(&dir) {
                bail!(
                    "{}: the output lies inside the tree being packed ({}); write it elsewhere",
                    output.display(),
                    dir.display()
                );
            }
        }
    } else if std::env::current_dir().is_ok_and(|c| c.starts_with(&dir)) {
        bail!(
            "{}: the output lies inside the tree being packed ({}); write it elsewhere",
            output.display(),
            dir.display()
        );
    }
    let stub = a
        .stub
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
    let signing = crate::trust_cmds::build_signing(&a.signing)?;
    let baked = signing.stub_for(&stub, &output)?;
    let stub = baked.as_ref().map_or(stub, |b| b.path().to_path_buf());
    let created_at = a.timestamp.then(now_rfc3339);
    let (meta_name, meta_version) = (name.clone(), version.clone());
    let meta = BundleMeta {
        name,
        version,
        inputs: vec![format!("dir {}", a.dir.display())],
        created_at: created_at.clone(),
        ..Default::default()
    };
    let opts = WriteOptions {
        level: a.level,
        threads: threads(a.threads),
        ..Default::default()
    };
    let mut w = BundleWriter::create(&output, &stub, meta, opts)
        .with_context(|| format!("cannot start {}", output.display()))?;
    let bar = progress::bytes(tree::tree_size(&dir), "packing");
    let b = bar.clone();
    w.set_progress(Arc::new(move |n| b.inc(n)));
    let stats = tree::add_tree(&mut w, &dir, "")?;
    let input = sbom::Input {
        name: meta_name,
        version: meta_version,
        arch: w.arch().to_string(),
        timestamp: created_at.as_deref().and_then(sbom::timestamp_of),
        ..Default::default()
    };
    let sbom_started = Instant::now();
    let s = sbom::add_sbom(&mut w, &input, &|p| Some(sbom::Source::Disk(dir.join(p))))?;
    bale_bundler::build::report_sbom(&s, sbom_started.elapsed());
    let summary = w.finish()?;
    bar.finish_and_clear();
    drop(baked);
    signing.sign(&output)?;
    if let Some(tag) = &a.tag {
        crate::store_cmds::record_build(&a.store, &output, tag)?;
    }
    let h = &summary.header;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {} ({}, {}): {} files, {} dirs, {} symlinks; {} of content stored in {} \
         ({} deduplicated) in {:.1}s",
        output.display(),
        h.arch,
        human_bytes(h.sizes.file),
        stats.files,
        stats.dirs,
        stats.symlinks,
        human_bytes(h.sizes.content),
        human_bytes(h.sizes.stored),
        human_bytes(summary.deduplicated_bytes),
        secs
    );
    Ok(())
}

/// `bale build -f Kubefile`: one bundle per platform, or one for all of them.
fn build_kubefile(a: BuildArgs, kubefile: &std::path::Path) -> Result<()> {
    use bale_bundler::build::{self as kb, PrepareOptions, Target, WriteConfig};
    use bale_bundler::images::{CollectOptions, Platform};
    let started = Instant::now();
    let mut build_args = std::collections::BTreeMap::new();
    for arg in &a.build_args {
        let (k, v) = bale_bundler::kubefile::parse_build_arg(arg)?;
        build_args.insert(k, v);
    }
    if a.list_images {
        let (plan, _) = kb::parse(kubefile, &build_args)?;
        let d = kb::discover_images(&a.dir, &plan)?;
        print!("{}", bale_bundler::discover::format_listing(&d));
        return Ok(());
    }
    let context = a
        .dir
        .canonicalize()
        .with_context(|| format!("{}: cannot read the build context", a.dir.display()))?;
    let (name, version) = name_version(&a, &context);

    // Platforms and their stubs.
    let stubs: Vec<PathBuf> = a.stub.iter().cloned().collect();
    let platforms: Vec<Platform> = if a.platform.is_empty() {
        let stub = a
            .stub
            .clone()
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        vec![Platform::for_arch(&bale_payload::elf::arch_of(&stub)?)]
    } else {
        let mut v: Vec<Platform> = Vec::new();
        for p in &a.platform {
            let p = Platform::parse(p.trim())?;
            if !v.contains(&p) {
                v.push(p);
            }
        }
        v
    };
    let per_platform = a
        .output
        .as_ref()
        .is_some_and(|o| o.to_string_lossy().contains("{arch}"));
    // Several platforms and no {arch} in -o: one bundle of them all, put together from one
    // bundle per platform written beside it first.
    let merged_output = (platforms.len() > 1 && !per_platform).then(|| {
        a.output
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.bale")))
    });
    let signing = crate::trust_cmds::build_signing(&a.signing)?;
    let mut baked_stubs = Vec::new();
    let mut targets = Vec::new();
    for platform in &platforms {
        let arch = kb::kernel_arch(platform);
        let stub = kb::find_stub(&arch, &stubs, a.stub_dir.as_deref())?;
        let output = match (&a.output, &merged_output) {
            (_, Some(m)) => part_path(m, &arch),
            (Some(o), None) => PathBuf::from(
                o.to_string_lossy()
                    .replace("{arch}", &platform.architecture),
            ),
            (None, None) if a.platform.is_empty() => {
                PathBuf::from(format!("{name}-{version}.bale"))
            }
            (None, None) => {
                PathBuf::from(format!("{name}-{version}-{}.bale", platform.architecture))
            }
        };
        let stub = match signing.stub_for(&stub, &output)? {
            Some(b) => {
                let p = b.path().to_path_buf();
                baked_stubs.push(b);
                p
            }
            None => stub,
        };
        targets.push(Target {
            platform: platform.clone(),
            stub,
            output,
        });
    }

    let mut opts = PrepareOptions {
        build_args,
        exclude: targets
            .iter()
            .map(|t| t.output.clone())
            .chain(merged_output.clone())
            .collect(),
        base_pull: kb::BasePull {
            offline: a.offline,
            insecure_registries: a.insecure_registries.clone(),
            store: Some(a.store.dir()),
            arch: platforms.first().map(kb::kernel_arch),
        },
        arch: targets.first().map(|t| t.platform.architecture.clone()),
    };
    let mut prepared = kb::prepare(kubefile, &context, &opts)?;
    let mut discovery = kb::discover_images(&context, &prepared.plan)?;
    for w in &discovery.warnings {
        eprintln!("warning: {w}");
    }
    let cfg = WriteConfig {
        name,
        version,
        kubefile_shown: kubefile.display().to_string(),
        context_shown: a.dir.display().to_string(),
        created_at: a.timestamp.then(now_rfc3339),
        write: WriteOptions {
            level: a.level,
            threads: threads(a.threads),
            ..Default::default()
        },
        collect: CollectOptions {
            cache_dir: a.image_cache.clone(),
            pull: !a.offline,
            insecure_registries: a.insecure_registries.clone(),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            ..Default::default()
        },
    };
    // The per-platform bundles of a merged build go once the build ends, whatever its end.
    let mut parts = PartFiles::default();
    for (i, t) in targets.iter().enumerate() {
        // A Kubefile that uses ${ARCH}, or a base of several platforms, is another build for
        // each architecture.
        let base_per_platform = prepared
            .base
            .as_ref()
            .is_some_and(|b| b.bundle.is_multi_platform());
        if i > 0 && (prepared.plan.platform_dependent || base_per_platform) {
            opts.arch = Some(t.platform.architecture.clone());
            opts.base_pull.arch = Some(kb::kernel_arch(&t.platform));
            prepared = kb::prepare(kubefile, &context, &opts)?;
            discovery = kb::discover_images(&context, &prepared.plan)?;
            for w in &discovery.warnings {
                eprintln!("warning: {w}");
            }
        }
        let summary = kb::write(&prepared, &discovery, t, &cfg)?;
        if merged_output.is_some() {
            parts.push(t.output.clone());
            eprintln!(
                "built {} for {}: {} entries, {} images",
                t.output.display(),
                t.platform,
                summary.header.table.entries,
                summary.header.counts.images
            );
            continue;
        }
        signing.sign(&t.output)?;
        if let Some(tag) = &a.tag {
            crate::store_cmds::record_build(&a.store, &t.output, tag)?;
        }
        report_written(&t.output, &t.platform.to_string(), &summary.header, started);
    }
    if let Some(output) = &merged_output {
        let summary = kb::platforms::merge(
            &parts.0,
            output,
            &kb::platforms::MergeConfig {
                name: cfg.name.clone(),
                version: cfg.version.clone(),
                created_at: cfg.created_at.clone(),
                write: cfg.write.clone(),
            },
        )?;
        drop(parts);
        signing.sign(output)?;
        if let Some(tag) = &a.tag {
            crate::store_cmds::record_build(&a.store, output, tag)?;
        }
        let all: Vec<String> = platforms.iter().map(|p| p.to_string()).collect();
        report_written(output, &all.join(", "), &summary.header, started);
    }
    drop(baked_stubs);
    Ok(())
}

/// The line a finished Kubefile build ends with.
fn report_written(
    output: &std::path::Path,
    platforms: &str,
    h: &bale_payload::Header,
    started: Instant,
) {
    eprintln!(
        "wrote {} ({platforms}, {}): {} entries, {} images; {} of content stored in {} in {:.1}s",
        output.display(),
        human_bytes(h.sizes.file),
        h.table.entries,
        h.counts.images,
        human_bytes(h.sizes.content),
        human_bytes(h.sizes.stored),
        started.elapsed().as_secs_f64()
    );
}

/// Where the bundle of one platform is written before the platforms are put into `merged`.
fn part_path(merged: &std::path::Path, arch: &str) -> PathBuf {
    let name = merged
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    merged.with_file_name(format!(".{name}.{arch}.part"))
}

/// The per-platform bundles of a merged build, removed when dropped.
#[derive(Default)]
struct PartFiles(Vec<PathBuf>);

impl PartFiles {
    fn push(&mut self, p: PathBuf) {
        self.0.push(p);
    }
}

impl Drop for PartFiles {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("@{secs}")
}

/// What plain `./app.bale` prints.
pub fn summary(b: &Bundle) {
    let h = &b.header;
    println!(
        "{} {} ({}), a bale bundle: {} files, {} images, {} of content.",
        printable(&h.name),
        printable(&h.version),
        printable(&h.arch),
        h.counts.files + h.counts.blobs,
        h.counts.images,
        human_bytes(h.sizes.content)
    );
    println!();
    println!("Commands (run with --help for details):");
    println!("  info      what is in this bundle");
    println!("  list      every entry");
    println!("  verify    check every byte, and who signed it");
    println!("  extract   write entries to a directory (--to DIR)");
}

pub fn info(a: InfoArgs, this: Option<Bundle>) -> Result<()> {
    let b = target_bundle(a.file, this)?;
    let h = &b.header;
    if a.json {
        println!("{}", serde_json::to_string_pretty(h)?);
        return Ok(());
    }
    let ratio = if h.sizes.stored > 0 {
        h.sizes.content as f64 / h.sizes.stored as f64
    } else {
        1.0
    };
    println!("name:        {}", printable(&h.name));
    println!("version:     {}", printable(&h.version));
    println!("arch:        {}", printable(&h.arch));
    if b.is_multi_platform() {
        println!(
            "platforms:   {} (install sends each host its own; `bale variant` writes one)",
            printable(&bale_payload::platforms::carried(h))
        );
    }
    println!("format:      {}", printable(&h.format));
    println!("created by:  {}", printable(&h.created_by));
    if let Some(t) = &h.created_at {
        println!("created at:  {}", printable(t));
    }
    for (i, input) in h.inputs.iter().enumerate() {
        println!(
            "{}{}",
            if i == 0 {
                "inputs:      "
            } else {
                "             "
            },
            printable(input)
        );
    }
    println!(
        "entries:     {} ({} files, {} dirs, {} symlinks, {} blobs)",
        h.table.entries, h.counts.files, h.counts.dirs, h.counts.symlinks, h.counts.blobs
    );
    println!("images:      {}", h.counts.images);
    println!(
        "content:     {} ({} bytes)",
        human_bytes(h.sizes.content),
        h.sizes.content
    );
    println!(
        "stored:      {} in {} frames ({ratio:.2}x)",
        human_bytes(h.sizes.stored),
        h.counts.frames
    );
    println!(
        "file:        {} (program {})",
        human_bytes(b.trailer.file_len),
        human_bytes(h.stub.len)
    );
    println!("root:        sha256:{}", hex_of(&b.root()));
    for (i, line) in crate::trust_cmds::info_lines(&b).iter().enumerate() {
        println!(
            "{}{line}",
            if i == 0 {
                "signatures:  "
            } else {
                "             "
            }
        );
    }
    Ok(())
}

pub fn variant(a: VariantArgs, this: Option<Bundle>) -> Result<()> {
    let b = target_bundle(a.file, this)?;
    let arch =
        &bale_bundler::build::kernel_arch(&bale_bundler::images::Platform::for_arch(&a.arch));
    if !b.is_multi_platform() {
        bail!(
            "{} is a bundle for {} only; build it with --platform naming {arch} as well",
            b.path().display(),
            b.header.arch
        );
    }
    let out = a.output.unwrap_or_else(|| {
        // The name comes from the file: it must not lead elsewhere.
        let name = format!("{}-{}-{arch}.bale", b.header.name, b.header.version);
        PathBuf::from(name.replace(['/', '\0'], "_"))
    });
    bale_payload::platforms::write_variant(&b, arch, &out).map_err(|e| in_bundle(b.path(), e))?;
    eprintln!(
        "wrote {} ({}, starts with the {arch} program; root sha256:{})",
        out.display(),
        human_bytes(std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0)),
        hex_of(&b.root())
    );
    Ok(())
}

pub fn list(a: ListArgs, this: Option<Bundle>) -> Result<()> {
    let b = target_bundle(a.file, this)?;
    let entries = b.entries().map_err(|e| in_bundle(b.path(), e))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    use std::io::Write;
    for e in &entries {
        let stored: u64 = e.frames.iter().map(|f| f.stored_len).sum();
        let r = if a.json {
            let v = serde_json::json!({
                "path": e.path, "kind": e.kind.as_str(), "mode": format!("{:04o}", e.mode),
                "size": e.size, "stored": stored,
                "sha256": matches!(e.kind, Kind::File | Kind::Blob).then(|| hex_of(&e.sha256)),
                "target": (e.kind == Kind::Symlink).then(|| e.target.clone()),
                "file_offset": e.contiguous_raw().map(|(at, _)| b.trailer.stub_len + at),
            });
            writeln!(out, "{v}")
        } else if a.long {
            let name = if e.kind == Kind::Symlink {
                format!("{} -> {}", printable(&e.path), printable(&e.target))
            } else {
                printable(&e.path).into_owned()
            };
            let digest = if matches!(e.kind, Kind::File | Kind::Blob) {
                hex_of(&e.sha256)[..12].to_string()
            } else {
                "-".into()
            };
            writeln!(
                out,
                "{:<7} {:04o} {:>12} {:>12} {:<12} {name}",
                e.kind.as_str(),
                e.mode,
                e.size,
                stored,
                digest
            )
        } else {
            writeln!(out, "{}", printable(&e.path))
        };
        if let Err(err) = r {
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(err.into());
        }
    }
    Ok(())
}

fn hex_of(d: &[u8; 32]) -> String {
    bale_payload::format::hex(d)
}

pub fn verify(a: VerifyArgs, this: Option<Bundle>) -> Result<()> {
    // The trusted keys first: a bad --key file is reported before a long byte check.
    let policy = crate::trust_cmds::policy(&a.trust)?;
    let b = target_bundle(a.file, this)?;
    let started = Instant::now();
    let n = threads(a.threads);
    let bar = progress::bytes(b.trailer.file_len, "verifying");
    let report = verify::verify(&b, n, &|x| bar.inc(x)).map_err(|e| in_bundle(b.path(), e))?;
    bar.finish_and_clear();
    if a.content {
        let bar = progress::bytes(b.header.sizes.content, "content");
        verify::verify_content(&b, n, &|x| bar.inc(x)).map_err(|e| in_bundle(b.path(), e))?;
        bar.finish_and_clear();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: OK, {} entries, {} frames, {} checked in {:.2}s ({}/s){}",
        b.path().display(),
        report.entries,
        report.frames,
        human_bytes(report.bytes),
        secs,
        human_bytes((report.bytes as f64 / secs.max(1e-9)) as u64),
        if a.content {
            ", content digests too"
        } else {
            ""
        }
    );
    let started = Instant::now();
    let verdict = crate::trust_cmds::verify_signatures(&b, &policy)?;
    println!(
        "{}: {verdict} (signatures checked in {:.1} ms)",
        b.path().display(),
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

pub fn extract(a: ExtractArgs, this: Option<Bundle>) -> Result<()> {
    let mut args = a.args.clone();
    let named = match (a.bundle, &this) {
        (Some(p), _) => Some(p),
        (None, Some(_)) => None,
        (None, None) => {
            if args.is_empty() {
                bail!("name a bundle file: `bale extract app.bale --to DIR [PATHS...]`");
            }
            Some(PathBuf::from(args.remove(0)))
        }
    };
    let b = target_bundle(named, this)?;
    let started = Instant::now();
    let entries = b.entries().map_err(|e| in_bundle(b.path(), e))?;
    let opts = ExtractOptions {
        threads: threads(a.threads),
        paths: args,
        skip_space_check: a.skip_space_check,
        sync: a.sync,
    };
    let bar = progress::bytes(b.header.sizes.content, "extracting");
    let report = extract::extract(&b, &entries, &a.to, &opts, &|x| bar.inc(x))
        .with_context(|| format!("extracting {} into {}", b.path().display(), a.to.display()))?;
    bar.finish_and_clear();
    eprintln!(
        "extracted {} files, {} dirs, {} symlinks ({}) into {} in {:.2}s",
        report.files,
        report.dirs,
        report.symlinks,
        human_bytes(report.bytes),
        a.to.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn terminal_output_escapes_what_a_terminal_acts_on_and_stays_the_same_json() {
        let doc = "{\"name\": \"a\u{202e}b\u{9b}c\\\\n\u{7f}\",\n\t\"ok\": \"plain ünïcode\"}";
        let safe = super::terminal_safe_json(doc.as_bytes());
        let text = std::str::from_utf8(&safe).unwrap();
        assert!(text.contains("a\\u202eb\\u009bc\\\\n\\u007f"), "{text}");
        assert!(text.contains("plain ünïcode"));
        let a: serde_json::Value = serde_json::from_str(doc).unwrap();
        let b: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(a, b);
        let plain = b"{\"a\": 1}\n";
        assert!(matches!(
            super::terminal_safe_json(plain),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}

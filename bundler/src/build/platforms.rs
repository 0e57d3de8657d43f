//! One bundle for several platforms, from one bundle per platform.
//!
//! Each platform is built as usual (its program, tree and image variants), then the bundles
//! are put together as [`bale_payload::platforms`] lays them out: the first platform's program
//! starts the file, every program is also an entry, image blobs (named by their digest, so the
//! same on every platform) are kept once at their usual place, and each platform's other
//! entries go under `platforms/<arch>/`. Frames are copied as they are stored, never
//! compressed again, and content two platforms share (manifests, charts, scripts) is stored
//! once.

use super::{BuildError, Result};
use bale_payload::format::Region;
use bale_payload::platforms::{self, platform_path, program_entry, PLATFORMS_DIR, PROGRAMS_DIR};
use bale_payload::{Bundle, BundleMeta, BundleWriter, WriteOptions};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// What [`merge`] writes besides the platforms' content.
#[derive(Debug, Clone)]
pub struct MergeConfig {
    pub name: String,
    pub version: String,
    pub created_at: Option<String>,
    pub write: WriteOptions,
}

/// Writes `output` from the single-platform bundles `parts`, the first one's program at its
/// start. Refuses two parts of one architecture and a part that is itself multi-platform.
pub fn merge(
    parts: &[PathBuf],
    output: &Path,
    cfg: &MergeConfig,
) -> Result<bale_payload::writer::WriteSummary> {
    let mut opened = Vec::with_capacity(parts.len());
    for p in parts {
        let b = Bundle::open(p).map_err(|e| BuildError::at(p.display().to_string(), e))?;
        if b.is_multi_platform() {
            return Err(BuildError::refused(
                p.display().to_string(),
                "is already a bundle of several platforms; give one bundle per platform",
            ));
        }
        if opened
            .iter()
            .any(|o: &Bundle| o.header.arch == b.header.arch)
        {
            return Err(BuildError::refused(
                p.display().to_string(),
                format!("a second bundle for {}", b.header.arch),
            ));
        }
        opened.push(b);
    }
    let Some(first) = opened.first() else {
        return Err(BuildError::refused(
            output.display().to_string(),
            "no platform to put in it",
        ));
    };
    let mut inputs = Vec::new();
    let mut metadata = BTreeMap::new();
    let mut images = 0;
    for b in &opened {
        let arch = &b.header.arch;
        inputs.extend(b.header.inputs.iter().map(|i| format!("{arch}: {i}")));
        metadata.insert(arch.clone(), b.header.metadata.clone());
        images = images.max(b.header.counts.images);
    }
    let meta = BundleMeta {
        name: cfg.name.clone(),
        version: cfg.version.clone(),
        inputs,
        created_at: cfg.created_at.clone(),
        images,
        metadata: platforms::metadata_of(metadata),
    };
    let mut w = BundleWriter::create(output, first.path(), meta, cfg.write.clone())
        .map_err(|e| BuildError::at(format!("cannot start {}", output.display()), e))?;
    w.add_dir(".bale", 0o755)?;
    w.add_dir(PROGRAMS_DIR, 0o755)?;
    w.add_dir(PLATFORMS_DIR, 0o755)?;
    let mut programs = BTreeMap::new();
    for b in &opened {
        let arch = &b.header.arch;
        let mut program = Vec::with_capacity(b.trailer.stub_len as usize);
        b.stub_reader()
            .read_to_end(&mut program)
            .map_err(|e| BuildError::at(b.path().display().to_string(), e))?;
        w.add_bytes(&program_entry(arch), 0o755, &program)?;
        if b.header.arch != first.header.arch {
            programs.insert(
                arch.clone(),
                Region {
                    len: b.trailer.stub_len,
                    sha256: b.header.stub.sha256.clone(),
                },
            );
        }
        w.add_dir(&format!("{PLATFORMS_DIR}/{arch}"), 0o755)?;
        let entries = b
            .all_entries()
            .map_err(|e| BuildError::at(b.path().display().to_string(), e))?;
        for e in &entries {
            if platforms::is_shared(&e.path) {
                // Blobs are named by their digest: one of that name is the same content.
                if !w.has(&e.path) {
                    w.add_entry_from(b, e)?;
                }
            } else {
                w.add_entry_from_as(b, e, &platform_path(arch, &e.path))?;
            }
        }
    }
    w.set_programs(programs);
    Ok(w.finish()?)
}

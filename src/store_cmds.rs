//! `bale images`, `bale rmi` and `bale tag`: the local bundle store that `bale build -t`
//! records into and `FROM name:tag` reads from (see `bale_bundler::store` for its layout and
//! its rules).
//!
//! Tags and names in the index are printed through [`bale_payload::printable`]: the index is
//! a file anyone with access to the store can edit.

use anyhow::{Context, Result};
use bale_bundler::store::{self, BundleStore, Removal};
use bale_payload::error::human_bytes;
use bale_payload::printable;
use clap::Args;
use std::path::{Path, PathBuf};

/// Where the store is; shared by the commands that use it.
#[derive(Args, Clone, Default)]
pub struct StoreArg {
    /// Local bundle store, where `build -t` records bundles and `FROM name:tag` finds them
    /// [default: $BALE_STORE, else $XDG_DATA_HOME/bale/bundles, else
    /// ~/.local/share/bale/bundles]
    #[arg(long = "store", value_name = "DIR")]
    pub store: Option<PathBuf>,
}

impl StoreArg {
    pub fn dir(&self) -> PathBuf {
        self.store.clone().unwrap_or_else(BundleStore::default_dir)
    }

    fn open(&self) -> BundleStore {
        BundleStore::new(self.dir())
    }
}

#[derive(Args)]
#[command(after_help = "\
Lists the bundles `bale build -t NAME:TAG` recorded in the local bundle store, one line per
tag and architecture: a Kubefile's `FROM NAME:TAG` takes them from there. DIGEST is the
bundle's root digest (the SHA-256 of its header, which covers every byte); CREATED is when it
was stored.")]
pub struct ImagesArgs {
    #[command(flatten)]
    pub store: StoreArg,
    /// Print one JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
#[command(after_help = "\
Each argument is a tag (NAME:TAG; NAME alone means NAME:latest) or a digest (sha256:HEX, or
at least 6 leading hex digits, as `bale images` shows). A tag is removed; the bundle goes too
once no tag names it. A digest named by more than one tag is refused unless --force, which
removes every tag naming it. Nothing is removed unless every argument is found.")]
pub struct RmiArgs {
    /// Tags or digests to remove
    #[arg(value_name = "NAME:TAG|DIGEST", required = true)]
    pub refs: Vec<String>,
    /// Remove a digest even when several tags name it (they all go)
    #[arg(short, long)]
    pub force: bool,
    #[command(flatten)]
    pub store: StoreArg,
}

#[derive(Args)]
#[command(after_help = "\
Gives the bundle SOURCE names (a tag or a digest) a second tag; the bundle is stored once.
Example: bale tag kubernetes:v1.19.8 kubernetes:latest")]
pub struct TagArgs {
    /// Tag or digest of a stored bundle
    #[arg(value_name = "SOURCE")]
    pub source: String,
    /// New tag, NAME:TAG
    #[arg(value_name = "TARGET")]
    pub target: String,
    #[command(flatten)]
    pub store: StoreArg,
}

/// Records a bundle `bale build -t TAG` just wrote.
pub fn record_build(store: &StoreArg, output: &Path, tag: &str) -> Result<()> {
    let s = store.open();
    let r = s
        .add(output, tag)
        .with_context(|| format!("recording {} in the bundle store", output.display()))?;
    eprintln!(
        "stored {} as {} ({}, {}) in {}",
        output.display(),
        printable(&store::normalize(tag).unwrap_or_else(|_| tag.to_string())),
        r.short_digest(),
        r.arch,
        s.root().display()
    );
    Ok(())
}

pub fn images(a: ImagesArgs) -> Result<()> {
    let s = a.store.open();
    let rows = s.list()?;
    if a.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(tag, r)| {
                let (name, t) = store::split_tag(tag);
                serde_json::json!({
                    "name": name,
                    "tag": t,
                    "digest": r.digest,
                    "size": r.size,
                    "created": utc(r.stored),
                    "arch": r.arch,
                    "bundle": {"name": r.name, "version": r.version},
                    "pulled_as": r.pulled_as,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|(tag, r)| {
            let (name, t) = store::split_tag(tag);
            [
                printable(name).into_owned(),
                printable(t).into_owned(),
                printable(r.short_digest()).into_owned(),
                human_bytes(r.size),
                utc(r.stored),
                printable(&r.arch).into_owned(),
            ]
        })
        .collect();
    let head = ["NAME", "TAG", "DIGEST", "SIZE", "CREATED", "ARCH"].map(String::from);
    let mut widths = head.clone().map(|h| h.chars().count());
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&table) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
    Ok(())
}

pub fn rmi(a: RmiArgs) -> Result<()> {
    for r in a.store.open().remove(&a.refs, a.force)? {
        match r {
            Removal::Untagged(t) => println!("untagged: {}", printable(&t)),
            Removal::Deleted(d) => println!("deleted: {}", printable(&d)),
        }
    }
    Ok(())
}

pub fn tag(a: TagArgs) -> Result<()> {
    let t = a.store.open().tag(&a.source, &a.target)?;
    eprintln!("tagged {} as {}", printable(&a.source), printable(&t));
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
fn utc(secs: u64) -> String {
    bale_bundler::sbom::rfc3339_utc(i64::try_from(secs).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_796_468_942), "2026-12-05T11:09:02Z");
    }
}

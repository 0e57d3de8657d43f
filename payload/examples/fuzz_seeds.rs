//! Writes the seed corpus of the `reader` fuzz target (payload/fuzz): small bundles made by the
//! real writer behind a 64-byte stand-in program, in both of the target's input forms (a whole
//! file, and parts whose digests the target recomputes). Run by payload/fuzz/seed-corpus.sh.

use bale_payload::format::{self, Entry};
use bale_payload::{Bundle, BundleMeta, BundleWriter, WriteOptions};
use std::path::Path;

/// An ELF header that says x86_64, and nothing else: the writer only reads the machine field.
fn fake_stub(dir: &Path) -> std::path::PathBuf {
    let mut elf = vec![0u8; 64];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[18] = 62; // EM_X86_64
    let p = dir.join("stub");
    std::fs::write(&p, elf).expect("write the stand-in program");
    p
}

type Content<'a> = (&'a str, &'a [u8]);
/// A seed: its name, its files and its symlinks.
type Case<'a> = (&'a str, Vec<Content<'a>>, Vec<(&'a str, &'a str)>);

fn bundle(
    dir: &Path,
    stub: &Path,
    name: &str,
    files: &[Content],
    links: &[(&str, &str)],
) -> Vec<u8> {
    let dest = dir.join(name);
    let opts = WriteOptions {
        threads: 1,
        frame_size: 64,
        ..Default::default()
    };
    let mut w = BundleWriter::create(&dest, stub, BundleMeta::default(), opts).expect("create");
    w.add_dir("d", 0o755).expect("dir");
    for (p, data) in files {
        w.add_bytes(p, 0o644, data).expect("file");
    }
    for (p, t) in links {
        w.add_symlink(p, t).expect("link");
    }
    w.finish().expect("finish");
    std::fs::read(&dest).expect("read back")
}

/// The target's second form: stub length, payload length and declared entry count, then the
/// stub, the payload and the decoded (uncompressed) table.
fn parts_form(bytes: &[u8], path: &Path) -> Vec<u8> {
    let b = Bundle::open(path).expect("open");
    let entries: Vec<Entry> = b.entries().expect("entries");
    let t = &b.trailer;
    let mut out = vec![1u8];
    out.extend_from_slice(&(t.stub_len as u16).to_le_bytes());
    out.extend_from_slice(&(t.payload_len as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(&bytes[..(t.stub_len + t.payload_len) as usize]);
    out.extend_from_slice(&format::encode_table(&entries));
    out
}

fn main() {
    let out = std::env::args().nth(1).expect("usage: fuzz_seeds OUTDIR");
    let out = Path::new(&out);
    std::fs::create_dir_all(out).expect("create OUTDIR");
    let work = std::env::temp_dir().join(format!("bale-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("create a work dir");
    let stub = fake_stub(&work);
    let long: Vec<u8> = (0..200u32).map(|i| (i * 7 % 251) as u8).collect();
    let cases: Vec<Case> = vec![
        ("empty", vec![], vec![]),
        ("one", vec![("d/a", b"hello")], vec![]),
        (
            "dedup",
            vec![("a", b"same bytes"), ("b", b"same bytes"), ("c", b"")],
            vec![],
        ),
        (
            "frames",
            vec![("big", &long), ("z", b"zzzzzzzzzzzzzzzz")],
            vec![],
        ),
        (
            "links",
            vec![("d/x", b"x")],
            vec![("d/up", ".."), ("l", "d/x"), ("m", "d/up/d/x")],
        ),
    ];
    for (name, files, links) in cases {
        let path = work.join(format!("{name}.bale"));
        let bytes = bundle(&work, &stub, &format!("{name}.bale"), &files, &links);
        let mut whole = vec![0u8];
        whole.extend_from_slice(&bytes);
        std::fs::write(out.join(format!("{name}-whole")), whole).expect("write a seed");
        std::fs::write(out.join(format!("{name}-parts")), parts_form(&bytes, &path))
            .expect("write a seed");
    }
    let _ = std::fs::remove_dir_all(&work);
}

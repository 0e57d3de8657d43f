//! Reading the module build information a Go toolchain (1.18 and later) puts in every
//! binary it links: the `.go.buildinfo` ELF section, which starts with the magic
//! `"\xff Go buildinf:"`, a pointer size and flags, and (flag bit 2) the toolchain version and
//! the module list as two varint-prefixed strings right after a 32-byte header.
//!
//! Only the section is read (found through the section headers, a few small reads), so a
//! 100 MiB binary costs what a 1 KiB one does. Older binaries keep pointers instead of inline
//! strings and are reported as Go binaries without module information.

use std::fs::File;
use std::os::unix::fs::FileExt;

const MAGIC: &[u8] = b"\xff Go buildinf:";
/// Upper bound on the section bytes read: Kubernetes' largest binaries list about 200
/// modules in some 20 KiB.
pub const MAX_SECTION: u64 = 1 << 20;
/// Section headers read at most (ELF allows 65535 before the extended numbering).
const MAX_SECTIONS: u64 = 0xff00;
/// Length of the sentinels Go wraps the module text in.
const SENTINEL: usize = 16;

/// One module a binary was built from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Module {
    pub path: String,
    pub version: String,
    /// The go.sum hash (`h1:…`), when the binary records it.
    pub sum: Option<String>,
    /// What a `replace` directive put in its place.
    pub replaced_by: Option<Box<Module>>,
}

/// What a Go binary says about its making.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct BuildInfo {
    /// The toolchain, e.g. `go1.24.1`.
    pub go_version: String,
    /// The main package's import path (`k8s.io/kubernetes/cmd/kubelet`).
    pub path: Option<String>,
    pub main: Option<Module>,
    pub deps: Vec<Module>,
    /// `build` lines (`GOOS=linux`, `-ldflags=…`), in order.
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The toolchain's name alone (`go1.24.1` of `go1.24.1 X:boringcrypto`); empty when the
    /// binary names none.
    pub fn toolchain(&self) -> &str {
        self.go_version
            .split_whitespace()
            .next()
            .unwrap_or_default()
    }
}

/// Why a binary's build information could not be read; never fatal to a build.
#[derive(Debug, thiserror::Error)]
pub enum GoInfoError {
    #[error("reading the ELF file: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed ELF: {0}")]
    Elf(&'static str),
    #[error("malformed Go build information: {0}")]
    Info(&'static str),
    #[error("built by a Go toolchain older than 1.18 (no inline module information)")]
    OldToolchain,
}

/// Reads the build information of the ELF file `f`: `Ok(None)` when it is no ELF file or no
/// Go binary.
pub fn read_elf(f: &File) -> Result<Option<BuildInfo>, GoInfoError> {
    let mut ident = [0u8; 64];
    let n = read_up_to(f, &mut ident, 0)?;
    if n < 52 || &ident[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let e = Elf::new(&ident[..n])?;
    let Some((offset, size)) = e.section(f, ".go.buildinfo")? else {
        return Ok(None);
    };
    let len = size.min(MAX_SECTION) as usize;
    let mut data = vec![0u8; len];
    let got = read_up_to(f, &mut data, offset)?;
    data.truncate(got);
    parse_section(&data).map(Some)
}

/// Parses the content of a `.go.buildinfo` section.
pub fn parse_section(data: &[u8]) -> Result<BuildInfo, GoInfoError> {
    if data.len() < 32 || !data.starts_with(MAGIC) {
        return Err(GoInfoError::Info(
            "the section does not start with the Go magic",
        ));
    }
    let flags = data[15];
    if flags & 2 == 0 {
        return Err(GoInfoError::OldToolchain);
    }
    let mut rest = &data[32..];
    let version = take_string(&mut rest)?;
    let modinfo = take_string(&mut rest)?;
    let go_version = String::from_utf8_lossy(version).into_owned();
    // The module text sits between two 16-byte sentinels.
    let text = if modinfo.len() > 2 * SENTINEL && modinfo[modinfo.len() - SENTINEL - 1] == b'\n' {
        &modinfo[SENTINEL..modinfo.len() - SENTINEL]
    } else {
        // As the toolchain's own reader does: no framing, no module text.
        &[]
    };
    let mut info = parse_modinfo(&String::from_utf8_lossy(text));
    info.go_version = go_version;
    Ok(info)
}

/// Parses the module text (`path`, `mod`, `dep`, `=>`, `build` lines, tab-separated).
pub fn parse_modinfo(text: &str) -> BuildInfo {
    let mut info = BuildInfo::default();
    // Which module a `=>` line replaces: the last `mod` or `dep` line.
    enum Last {
        None,
        Main,
        Dep,
    }
    let mut last = Last::None;
    for line in text.lines() {
        let mut f = line.split('\t');
        let key = f.next().unwrap_or_default();
        let module = |f: &mut std::str::Split<'_, char>| Module {
            path: f.next().unwrap_or_default().to_string(),
            version: f.next().unwrap_or_default().to_string(),
            sum: f.next().filter(|s| !s.is_empty()).map(str::to_string),
            replaced_by: None,
        };
        match key {
            "path" => info.path = f.next().map(str::to_string),
            "mod" => {
                info.main = Some(module(&mut f));
                last = Last::Main;
            }
            "dep" => {
                info.deps.push(module(&mut f));
                last = Last::Dep;
            }
            "=>" => {
                let r = Some(Box::new(module(&mut f)));
                match last {
                    Last::Main => {
                        if let Some(m) = info.main.as_mut() {
                            m.replaced_by = r;
                        }
                    }
                    Last::Dep => {
                        if let Some(m) = info.deps.last_mut() {
                            m.replaced_by = r;
                        }
                    }
                    Last::None => {}
                }
                last = Last::None;
            }
            "build" => {
                let kv = f.collect::<Vec<_>>().join("\t");
                let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
                info.settings.push((k.to_string(), v.to_string()));
            }
            _ => {}
        }
    }
    info
}

fn take_string<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8], GoInfoError> {
    let mut len: u64 = 0;
    let mut shift = 0;
    loop {
        let Some((&b, tail)) = rest.split_first() else {
            return Err(GoInfoError::Info("a string length runs past the section"));
        };
        *rest = tail;
        len |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 35 {
            return Err(GoInfoError::Info("a string length is too long"));
        }
    }
    let len = usize::try_from(len).map_err(|_| GoInfoError::Info("a string is too long"))?;
    if len > rest.len() {
        return Err(GoInfoError::Info("a string runs past the section"));
    }
    let (s, tail) = rest.split_at(len);
    *rest = tail;
    Ok(s)
}

fn read_up_to(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The fields of an ELF header that lead to the section names.
struct Elf {
    wide: bool,
    little: bool,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
    shstrndx: u64,
}

impl Elf {
    fn new(h: &[u8]) -> Result<Elf, GoInfoError> {
        let wide = match h[4] {
            1 => false,
            2 => true,
            _ => return Err(GoInfoError::Elf("unknown class")),
        };
        let little = match h[5] {
            1 => true,
            2 => false,
            _ => return Err(GoInfoError::Elf("unknown byte order")),
        };
        if wide && h.len() < 64 {
            return Err(GoInfoError::Elf("short header"));
        }
        let mut e = Elf {
            wide,
            little,
            shoff: 0,
            shentsize: 0,
            shnum: 0,
            shstrndx: 0,
        };
        if wide {
            e.shoff = e.u64_at(h, 0x28);
            e.shentsize = e.u16_at(h, 0x3a);
            e.shnum = e.u16_at(h, 0x3c);
            e.shstrndx = e.u16_at(h, 0x3e);
        } else {
            e.shoff = e.u32_at(h, 0x20);
            e.shentsize = e.u16_at(h, 0x2e);
            e.shnum = e.u16_at(h, 0x30);
            e.shstrndx = e.u16_at(h, 0x32);
        }
        Ok(e)
    }

    fn u16_at(&self, b: &[u8], at: usize) -> u64 {
        let v = [b[at], b[at + 1]];
        u64::from(if self.little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u64 {
        let mut v = [0u8; 4];
        v.copy_from_slice(&b[at..at + 4]);
        u64::from(if self.little {
            u32::from_le_bytes(v)
        } else {
            u32::from_be_bytes(v)
        })
    }

    fn u64_at(&self, b: &[u8], at: usize) -> u64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        if self.little {
            u64::from_le_bytes(v)
        } else {
            u64::from_be_bytes(v)
        }
    }

    /// Name offset, file offset and size of a section header.
    fn header(&self, sh: &[u8]) -> (u64, u64, u64) {
        if self.wide {
            (
                self.u32_at(sh, 0),
                self.u64_at(sh, 0x18),
                self.u64_at(sh, 0x20),
            )
        } else {
            (
                self.u32_at(sh, 0),
                self.u32_at(sh, 0x10),
                self.u32_at(sh, 0x14),
            )
        }
    }

    /// File offset and size of the section called `name`.
    fn section(&self, f: &File, name: &str) -> Result<Option<(u64, u64)>, GoInfoError> {
        let need = if self.wide { 0x40 } else { 0x28 };
        if self.shoff == 0 || self.shnum == 0 {
            return Ok(None);
        }
        if self.shentsize < need || self.shnum > MAX_SECTIONS || self.shstrndx >= self.shnum {
            return Err(GoInfoError::Elf("implausible section header table"));
        }
        let mut table = vec![0u8; (self.shentsize * self.shnum) as usize];
        if read_up_to(f, &mut table, self.shoff)? != table.len() {
            return Err(GoInfoError::Elf("the section headers run past the file"));
        }
        let entry = |i: u64| &table[(i * self.shentsize) as usize..][..need as usize];
        let (_, str_off, str_size) = self.header(entry(self.shstrndx));
        let mut names = vec![0u8; str_size.min(MAX_SECTION) as usize];
        let got = read_up_to(f, &mut names, str_off)?;
        names.truncate(got);
        for i in 0..self.shnum {
            let (name_at, off, size) = self.header(entry(i));
            let Some(tail) = names.get(name_at as usize..) else {
                continue;
            };
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            if &tail[..end] == name.as_bytes() {
                return Ok(Some((off, size)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `.go.buildinfo` section as the toolchain writes it.
    pub(crate) fn section(version: &str, modinfo: &str) -> Vec<u8> {
        let mut s = MAGIC.to_vec();
        s.push(8);
        s.push(2);
        s.resize(32, 0);
        let mut wrapped = vec![b'0'; SENTINEL];
        wrapped.extend_from_slice(modinfo.as_bytes());
        wrapped.extend_from_slice(&[b'1'; SENTINEL]);
        for part in [version.as_bytes(), &wrapped[..]] {
            let mut n = part.len();
            loop {
                let b = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    s.push(b);
                    break;
                }
                s.push(b | 0x80);
            }
            s.extend_from_slice(part);
        }
        s
    }

    #[test]
    fn parses_inline_strings_and_replacements() {
        let text = "path\texample.com/cmd/tool\nmod\texample.com\tv1.2.3\th1:abc=\n\
                    dep\tgolang.org/x/sys\tv0.1.0\th1:def=\n\
                    dep\tgithub.com/a/b\tv1.0.0\n=>\tgithub.com/fork/b\tv1.0.1\th1:ghi=\n\
                    build\tGOOS=linux\nbuild\t-ldflags=-s -w\n";
        let info = parse_section(&section("go1.24.1", text)).unwrap();
        assert_eq!(info.go_version, "go1.24.1");
        assert_eq!(info.path.as_deref(), Some("example.com/cmd/tool"));
        let main = info.main.unwrap();
        assert_eq!(
            (main.path.as_str(), main.version.as_str()),
            ("example.com", "v1.2.3")
        );
        assert_eq!(info.deps.len(), 2);
        let r = info.deps[1].replaced_by.as_ref().unwrap();
        assert_eq!(r.path, "github.com/fork/b");
        assert_eq!(
            info.settings[1],
            ("-ldflags".to_string(), "-s -w".to_string())
        );
    }

    #[test]
    fn refuses_lengths_past_the_end() {
        let mut s = section("go1.22.0", "path\tx\n");
        s.truncate(40);
        assert!(parse_section(&s).is_err());
        let mut old = section("go1.17", "");
        old[15] = 0;
        assert!(matches!(
            parse_section(&old),
            Err(GoInfoError::OldToolchain)
        ));
    }

    #[test]
    fn a_non_go_elf_file_has_none() {
        // This test program is Rust: an ELF file without the section.
        let exe = std::env::current_exe().unwrap();
        let f = File::open(exe).unwrap();
        assert!(read_elf(&f).unwrap().is_none());
        let t = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(t.path(), b"#!/bin/sh\n").unwrap();
        assert!(read_elf(&File::open(t.path()).unwrap()).unwrap().is_none());
    }

    /// A real Go binary, built here, read back.
    #[test]
    fn reads_a_binary_built_by_go() {
        let go = std::process::Command::new("go").arg("version").output();
        if !go.is_ok_and(|o| o.status.success()) {
            bale_test_support::skip(&[], "go is not installed: apt-get install golang-go");
            return;
        }
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("go.mod"),
            "module example.com/hello\n\ngo 1.18\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("main.go"),
            "package main\n\nfunc main() { println(\"hi\") }\n",
        )
        .unwrap();
        let out = d.path().join("hello");
        let status = std::process::Command::new("go")
            .args(["build", "-trimpath", "-buildvcs=false", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(d.path())
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("GOPROXY", "off")
            .env("GOCACHE", d.path().join("cache"))
            .env("CGO_ENABLED", "0")
            .status()
            .unwrap();
        assert!(status.success());
        let info = read_elf(&File::open(&out).unwrap()).unwrap().unwrap();
        assert!(info.go_version.starts_with("go1."), "{info:?}");
        assert_eq!(info.path.as_deref(), Some("example.com/hello"));
        assert_eq!(info.main.unwrap().path, "example.com/hello");
        assert!(info
            .settings
            .iter()
            .any(|(k, v)| k == "GOOS" && v == "linux"));
    }
}

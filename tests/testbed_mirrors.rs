//! Which Debian mirrors `scripts/testbed.sh` builds the test node images from: the host's own,
//! read from its apt sources as apt reads them (sources.list, then sources.list.d/*.list and
//! deb822 *.sources sorted by name), unless BALE_TESTBED_MIRROR says otherwise. Checked on
//! sample apt configurations in a temp dir through `testbed.sh mirrors --apt-root DIR`, which
//! needs neither root nor the network and builds nothing.

mod common;

use common::*;
use std::path::Path;
use std::process::Output;

/// `testbed.sh mirrors` on the apt configuration under `root`, with `env` set and the
/// overrides cleared otherwise.
fn mirrors(root: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = std::process::Command::new(common::testbed::testbed_sh());
    c.args(["mirrors", "--apt-root"]).arg(root);
    for v in ["BALE_TESTBED_MIRROR", "BALE_TESTBED_SECURITY_MIRROR"] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied())
        .output()
        .expect("run testbed.sh")
}

#[track_caller]
fn found(root: &Path, env: &[(&str, &str)]) -> String {
    let o = mirrors(root, env);
    ok(&o);
    stdout(&o)
}

/// An apt configuration under a fresh temp dir: `files` as (path below etc/apt, content).
fn apt(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/apt/sources.list.d")).unwrap();
    for (path, text) in files {
        std::fs::write(d.path().join("etc/apt").join(path), text).unwrap();
    }
    d
}

/// A Debian 12 host as installed: deb822 only, comments inside the stanzas, and a third-party
/// repository and a disabled file that sort before it.
#[test]
fn deb822_sources_as_debian_installs_them() {
    let d = apt(&[
        (
            "sources.list.d/aaa-nodesource.sources",
            "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n\
             Components: main\nSigned-By: /usr/share/keyrings/nodesource.gpg\n",
        ),
        (
            "sources.list.d/aab.sources.disabled",
            "Types: deb\nURIs: http://disabled.example/debian\nSuites: bookworm\nComponents: main\n",
        ),
        (
            "sources.list.d/debian.sources",
            "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
             URIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\n# http://snapshot.debian.org/archive/debian-security/20250520T000000Z\n\
             URIs: http://security.example/debian-security\nSuites: bookworm-security\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        ),
    ]);
    assert_eq!(
        found(d.path(), &[]),
        "mirror http://mirror.example/debian\nsecurity http://security.example/debian-security\n"
    );
}

/// deb822 details: a disabled stanza, deb-src only, field names in any case, values on
/// continuation lines, and an inline key block (Signed-By) that must not be read as fields.
#[test]
fn deb822_stanzas_that_apt_would_not_use_are_passed_over() {
    let d = apt(&[(
        "sources.list.d/debian.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n\
         Enabled: no\n\n\
         Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n\n\
         types: deb deb-src\nuris:\n http://first.example/debian\n http://second.example/debian\n\
         suites: trixie\ncomponents: contrib\n main\nSigned-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n \
         .\n URIs: http://key.example/debian\n -----END PGP PUBLIC KEY BLOCK-----\n",
    )]);
    assert_eq!(
        found(d.path(), &[]),
        "mirror http://first.example/debian\nsecurity none\n"
    );
}

/// The one-line format: comments, deb-src, options in brackets (with and without spaces),
/// repositories that are not Debian's archive, and sources.list read before sources.list.d.
#[test]
fn one_line_sources_in_apts_order() {
    let d = apt(&[
        (
            "sources.list",
            "# deb http://commented.example/debian bookworm main\n\
             deb-src http://src.example/debian bookworm main\n\
             deb [arch=amd64] https://download.docker.com/linux/debian bookworm stable\n\
             deb http://archive.ubuntu.com/ubuntu jammy main\n\
             deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n\
             deb [ arch=amd64 signed-by=/usr/share/keyrings/debian.gpg ] http://one.example/debian bookworm main contrib # the mirror\n\
             deb http://old.example/debian-security buster/updates main\n",
        ),
        (
            "sources.list.d/later.list",
            "deb http://later.example/debian bookworm main\n\
             deb http://later.example/debian-security bookworm-security main\n",
        ),
    ]);
    assert_eq!(
        found(d.path(), &[]),
        "mirror http://one.example/debian\nsecurity http://old.example/debian-security\n"
    );
}

#[test]
fn the_environment_overrides_the_host() {
    let d = apt(&[(
        "sources.list",
        "deb http://host.example/debian bookworm main\n\
         deb http://host.example/debian-security bookworm-security main\n",
    )]);
    assert_eq!(
        found(
            d.path(),
            &[("BALE_TESTBED_MIRROR", "http://env.example/debian")]
        ),
        "mirror http://env.example/debian\nsecurity http://host.example/debian-security\n"
    );
    assert_eq!(
        found(
            d.path(),
            &[("BALE_TESTBED_SECURITY_MIRROR", "http://env.example/sec")]
        ),
        "mirror http://host.example/debian\nsecurity http://env.example/sec\n"
    );
}

/// No Debian archive anywhere: an error that names the override, never a built-in host name.
#[test]
fn no_debian_archive_is_an_error_naming_the_fix() {
    let d = apt(&[(
        "sources.list",
        "deb http://archive.ubuntu.com/ubuntu jammy main\n",
    )]);
    let o = mirrors(d.path(), &[]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(
        e.contains("name no Debian archive") && e.contains("BALE_TESTBED_MIRROR"),
        "{e}"
    );
    assert!(!e.contains("command failed"), "a stray ERR trap: {e}");
    assert_eq!(
        found(
            d.path(),
            &[("BALE_TESTBED_MIRROR", "http://env.example/debian")]
        ),
        "mirror http://env.example/debian\nsecurity none\n"
    );
}

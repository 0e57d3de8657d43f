//! What every test program of bale shares, whichever crate it tests: the rule for a test that
//! cannot run on this machine ([`skip`]: under `BALE_REQUIRE_ALL=1` or `CI=true` it fails
//! instead), and waits on conditions ([`poll_until`], [`poll_ok`]) instead of fixed sleeps.

/// Whether a program is on `PATH`.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `BALE_REQUIRE_ALL=1` (set by `scripts/test.sh`; CI's `CI=true` counts the same): every
/// test that cannot run on this machine fails instead of skipping.
pub const REQUIRE_ALL: &str = "BALE_REQUIRE_ALL";
/// The older switches, each for one kind of test; still honoured.
pub const REQUIRE_TESTBED: &str = "BALE_REQUIRE_TESTBED";
pub const REQUIRE_CROSS: &str = "BALE_REQUIRE_CROSS";
pub const REQUIRE_HELM: &str = "BALE_REQUIRE_HELM";

/// Why a test that cannot run here must fail instead of skipping: `BALE_REQUIRE_ALL=1`,
/// `CI=true`, or one of `switches` set (to anything but empty or `0`). None: it may skip.
pub fn skips_forbidden_by(switches: &[&str]) -> Option<String> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    if set(REQUIRE_ALL) {
        return Some(format!("{REQUIRE_ALL}=1"));
    }
    if std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1") {
        return Some("CI=true".into());
    }
    switches
        .iter()
        .find(|s| set(s))
        .map(|s| format!("{s} is set"))
}

/// Ends a test that cannot run on this machine, for the reason `why` (which names the fix).
/// Where skipping is forbidden ([`skips_forbidden_by`]) it fails the test. Otherwise it says
/// so on the process's own stderr, past the harness's capture (an `eprintln!` in a passing test
/// is never shown), and the caller returns.
#[track_caller]
pub fn skip(switches: &[&str], why: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if let Some(rule) = skips_forbidden_by(switches) {
        panic!("{test} cannot run here and must ({rule}): {why}");
    }
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {why} ({REQUIRE_ALL}=1 makes this a failure)"
    );
}

/// The rule of [`skip`], checked on this test program: the calling test runs again as a child
/// that skips. It must pass with a notice past the harness's capture where skipping is allowed,
/// and fail with the reason where it is not (`BALE_REQUIRE_ALL=1`, `CI=true`, `switch`).
pub fn check_the_skip_rule_on_this_program(switch: &str) {
    const CHILD: &str = "BALE_SKIP_RULE_CHILD";
    const WHY: &str = "the skip rule's own check (nothing is missing)";
    if std::env::var_os(CHILD).is_some() {
        return skip(&[switch], WHY);
    }
    let me = std::thread::current()
        .name()
        .expect("the harness names test threads")
        .to_string();
    let child = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(std::env::current_exe().expect("this program"));
        c.args(["--exact", &me]).env(CHILD, "1");
        for v in [REQUIRE_ALL, "CI", switch] {
            c.env_remove(v);
        }
        c.envs(env.iter().copied()).output().expect("run the child")
    };
    let o = child(&[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success() && err.contains(&format!("SKIPPED {me}: {WHY}")),
        "allowed skip: {err}"
    );
    let all = format!("{REQUIRE_ALL}=1");
    let by_switch = format!("{switch} is set");
    for (env, rule) in [
        ((REQUIRE_ALL, "1"), all.as_str()),
        (("CI", "true"), "CI=true"),
        ((switch, "1"), by_switch.as_str()),
    ] {
        let o = child(&[env]);
        let out = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            !o.status.success() && out.contains(&format!("must ({rule}): {WHY}")),
            "under {env:?}:\n{out}"
        );
    }
}

/// Whether this test runs as root (the testbed, mounts and containers need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

// ---- waiting ------------------------------------------------------------------------------

/// Polls `cond` every `every` until it holds or `limit` passes (then the test fails, naming
/// `what`); returns the time it took. Tests wait on conditions this way, never on fixed sleeps.
#[track_caller]
pub fn poll_until(
    every: std::time::Duration,
    what: &str,
    limit: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let t0 = std::time::Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(every);
    }
}

/// Like [`poll_until`] for a check that says why it does not hold yet: returns its first `Ok`,
/// and a timeout names the last reason.
#[track_caller]
pub fn poll_ok<T, E: std::fmt::Debug>(
    every: std::time::Duration,
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> Result<T, E>,
) -> T {
    let t0 = std::time::Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(e) => assert!(
                t0.elapsed() < limit,
                "timed out after {limit:?} waiting for {what}; last: {e:?}"
            ),
        }
        std::thread::sleep(every);
    }
}

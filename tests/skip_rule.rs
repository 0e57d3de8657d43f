//! The rule for a test that cannot run on this machine (`common::skip`), checked on this test
//! program itself: run again as a child that must skip, it fails under BALE_REQUIRE_ALL=1,
//! CI=true or an older per-area switch, and otherwise passes with a notice that gets past the
//! harness's output capture.

mod common;

use common::*;
use std::process::{Command, Output};

/// Set in the child run: there the test below skips instead of checking.
const CHILD: &str = "BALE_SKIP_RULE_CHILD";
const WHY: &str = "the skip rule's own check (nothing is missing)";

/// This test program, running only the test below as a child, with `env` on top of an
/// environment cleared of every switch.
fn child(env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(std::env::current_exe().expect("this test program"));
    c.args([
        "--exact",
        "a_skip_fails_where_tests_must_run_and_is_loud_elsewhere",
    ])
    .env(CHILD, "1");
    for v in [REQUIRE_ALL, "CI", REQUIRE_TESTBED, REQUIRE_CROSS] {
        c.env_remove(v);
    }
    c.envs(env.iter().copied()).output().expect("run the child")
}

#[test]
fn a_skip_fails_where_tests_must_run_and_is_loud_elsewhere() {
    if std::env::var_os(CHILD).is_some() {
        return skip(&[REQUIRE_TESTBED], WHY);
    }
    // Allowed: the test passes, and says so although the harness captured its output.
    let o = child(&[]);
    ok(&o);
    let e = stderr(&o);
    assert!(
        e.contains("SKIPPED a_skip_fails_where_tests_must_run_and_is_loud_elsewhere")
            && e.contains(WHY)
            && e.contains("BALE_REQUIRE_ALL=1 makes this a failure"),
        "{e}"
    );
    // Forbidden: the test fails, naming the reason and the rule.
    for (env, rule) in [
        (("BALE_REQUIRE_ALL", "1"), "BALE_REQUIRE_ALL=1"),
        (("CI", "true"), "CI=true"),
        (("BALE_REQUIRE_TESTBED", "1"), "BALE_REQUIRE_TESTBED is set"),
    ] {
        let o = child(&[env]);
        assert!(!o.status.success(), "passed under {env:?}: {}", stdout(&o));
        let out = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            out.contains(WHY) && out.contains(&format!("must ({rule})")),
            "under {env:?}:\n{out}"
        );
    }
    // A switch for another kind of test, or one set to 0, leaves the skip allowed.
    for env in [("BALE_REQUIRE_CROSS", "1"), ("BALE_REQUIRE_ALL", "0")] {
        ok(&child(&[env]));
    }
}

//! The Kubefile parser on arbitrary text: it must return a plan or an error, never panic, and
//! stay within its time and memory bounds (libFuzzer's -timeout and -rss_limit_mb).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = bale_bundler::kubefile::parse("Kubefile", text, &BTreeMap::new());
    // With a build argument too, so that the paths taking a given value run.
    let given = BTreeMap::from([("VERSION".to_string(), "1.0".to_string())]);
    let _ = bale_bundler::kubefile::parse("Kubefile", text, &given);
});

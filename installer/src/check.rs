//! `bale check`: connects to the hosts and reports, per node, whether what the install put
//! there is in place and healthy (runtime, registry, guard, apps); changes nothing.

use crate::run::{execute, prepare, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

pub fn check(target: &Target, this_bundle: Option<PathBuf>) -> RunResult<()> {
    let p = prepare(target, &[], this_bundle, "check", Vips::default())?;
    execute(
        p,
        vec![
            Box::new(crate::phases::connect::Connect),
            Box::new(crate::phases::health::Health),
        ],
        false,
        target.parallel,
        "check",
    )
}

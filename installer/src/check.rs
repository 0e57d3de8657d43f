//! `bale check`: connects to the hosts and reports, per node, whether what the install put
//! there is in place and healthy (runtime, registry, guard, apps); changes nothing.

use crate::run::{execute, prepare, RunResult, Target};
use crate::site::Vips;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub target: Target,
}

pub fn check(args: CheckArgs, this_bundle: Option<PathBuf>) -> RunResult<()> {
    let t = &args.target;
    let p = prepare(t, &[], this_bundle, "check", Vips::default())?;
    execute(
        p,
        vec![
            Box::new(crate::phases::connect::Connect),
            Box::new(crate::phases::health::Health),
        ],
        false,
        t.parallel,
        "check",
    )
}

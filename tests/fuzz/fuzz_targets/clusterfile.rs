//! The Clusterfile reader (the cluster document, then the Plugin and Config documents of the
//! same text) on arbitrary text: a result or an error, never a panic, within bounded time and
//! memory.
#![no_main]

use bale_installer::clusterfile::Clusterfile;
use bale_installer::hosts::SshOverrides;
use bale_installer::plugins::Documents;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cf) = Clusterfile::parse(text, Path::new("Clusterfile")) {
        let _ = cf.host_list(None, None, &SshOverrides::default());
        let _ = cf.host_list(Some("10.0.0.2"), None, &SshOverrides::default());
    }
    if let Ok(docs) = Documents::parse(text, "Clusterfile") {
        for cfg in &docs.configs {
            let _ = bale_installer::plugins::apply_config(cfg, Some("a: {b: 1}\n"));
        }
    }
});

//! The guardian's errors as a whole, and one way to print a chain of them.
//!
//! Each error says only what its own layer knows and links its cause as `source`, so a printer
//! that walks the chain (anyhow's `{:#}` in the binary, [`error_chain`] here) shows every
//! part once.

use std::error::Error as StdError;
use std::io;

use crate::backend::BackendError;
use crate::config::ConfigError;
use crate::health::HealthError;
use crate::nft::NftError;
use crate::vip::VipError;

/// Why the guardian could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("opening the {backend} data plane")]
    OpenBackend {
        backend: &'static str,
        #[source]
        source: BackendError,
    },
    #[error(transparent)]
    Health(#[from] HealthError),
    #[error("starting the runtime")]
    Runtime(#[source] io::Error),
    #[error("installing the {0} handler")]
    Signal(&'static str, #[source] io::Error),
    #[error(transparent)]
    Clean(#[from] CleanError),
}

/// `--clean` tries every part even when another fails; this names each part that failed.
#[derive(Debug, thiserror::Error)]
#[error("clean incomplete: {}", list(.failures))]
pub struct CleanError {
    failures: Vec<CleanFailure>,
}

impl CleanError {
    /// `Ok` when nothing failed.
    pub(crate) fn check(failures: Vec<CleanFailure>) -> Result<(), CleanError> {
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CleanError { failures })
        }
    }
}

/// One part of `--clean` that failed. Several can fail at once, so none is the `source` of
/// [`CleanError`]: each prints its own chain.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CleanFailure {
    #[error("ipvs: {}", error_chain(.0))]
    Ipvs(BackendError),
    #[error("link-mode masquerade: {}", error_chain(.0))]
    Masquerade(NftError),
    #[error("nftables: {}", error_chain(.0))]
    Nftables(NftError),
    #[error("route: {}", error_chain(.0))]
    Route(VipError),
    #[error("link: {}", error_chain(.0))]
    Link(VipError),
}

fn list(failures: &[CleanFailure]) -> String {
    failures
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error and its causes on one line, "outer: cause: root cause", for logs and reports that
/// keep only text.
pub fn error_chain(e: &dyn StdError) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Options};

    #[test]
    fn chain_names_every_layer_once() {
        let e = Config::resolve(&Options {
            config: Some("/nonexistent/lvscare.yaml".into()),
            ..Options::default()
        })
        .unwrap_err();
        let text = error_chain(&e);
        assert!(
            text.starts_with("reading /nonexistent/lvscare.yaml: "),
            "{text}"
        );
        assert_eq!(text.matches("lvscare.yaml").count(), 1, "{text}");
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }

    #[test]
    fn clean_error_lists_each_failed_part_with_its_cause() {
        let e = CleanError::check(vec![
            CleanFailure::Nftables(NftError::NotFound),
            CleanFailure::Route(VipError::NotIpv4("fd00::1".parse().unwrap())),
        ])
        .unwrap_err();
        let text = error_chain(&e);
        assert_eq!(
            text,
            "clean incomplete: nftables: no `nft` binary found in $PATH, /usr/sbin or /sbin; \
             install nftables or use --backend ipvs on a kernel with IP_VS; route: the VIP \
             must be IPv4 here, got fd00::1"
        );
        assert!(CleanError::check(Vec::new()).is_ok());
    }
}

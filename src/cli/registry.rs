//! `bale registry serve`: serve a bundle's images over the OCI distribution API.

use bale_registry::{RegistryOptions, DEFAULT_MAX_CONNECTIONS};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Serve this bundle's images (or another bundle's) read-only, straight from the file
    Serve(ServeArgs),
}

/// `bale registry serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Bundle whose images to serve [default: this program's own payload]
    #[arg(long, value_name = "FILE")]
    pub bundle: Option<PathBuf>,

    /// Address to listen on; repeat to add more, e.g. the node's own IP. Only the given
    /// addresses are bound [default: 127.0.0.1:5050]
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,

    /// PEM certificate chain: serve HTTPS instead of plain HTTP
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require basic auth from this file of `user:HASH` lines (bcrypt as written by
    /// `htpasswd -B`, or `sha256:HEX` of the password)
    #[arg(long, value_name = "FILE", conflicts_with = "basic_auth")]
    pub htpasswd: Option<PathBuf>,

    /// Require basic auth for the one account in this file (a line `user:password`)
    #[arg(long, value_name = "FILE")]
    pub basic_auth: Option<PathBuf>,

    /// Connections served at once
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Connections one client address may hold [default: an eighth of --max-connections]
    #[arg(long, value_name = "N")]
    pub max_connections_per_peer: Option<usize>,

    /// Log every request
    #[arg(short, long)]
    pub verbose: bool,
}

impl From<ServeArgs> for RegistryOptions {
    fn from(a: ServeArgs) -> Self {
        RegistryOptions {
            bundle: a.bundle,
            listen: a.listen,
            tls_cert: a.tls_cert,
            tls_key: a.tls_key,
            htpasswd: a.htpasswd,
            basic_auth: a.basic_auth,
            max_connections: a.max_connections,
            max_connections_per_peer: a.max_connections_per_peer,
            verbose: a.verbose,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn parse(args: &[&str]) -> Result<RegistryOptions, clap::Error> {
        Cli::try_parse_from(std::iter::once("serve").chain(args.iter().copied()))
            .map(|c| c.args.into())
    }

    #[test]
    fn arguments() {
        let a = parse(&[]).unwrap();
        assert!(a.listen.is_empty() && a.bundle.is_none() && a.tls_cert.is_none());
        assert_eq!(a.max_connections, DEFAULT_MAX_CONNECTIONS);
        let a = parse(&[
            "--bundle",
            "b.bale",
            "--listen",
            "127.0.0.1:5050",
            "--listen",
            "[::1]:5050",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--htpasswd",
            "h",
        ])
        .unwrap();
        assert_eq!(a.listen.len(), 2);
        assert_eq!(a.bundle.as_deref(), Some(std::path::Path::new("b.bale")));
        assert!(parse(&["--tls-cert", "c.pem"]).is_err());
        assert!(parse(&["--tls-key", "k.pem"]).is_err());
        assert!(parse(&["--htpasswd", "h", "--basic-auth", "b"]).is_err());
        assert!(parse(&["--listen", "localhost:5050"]).is_err());
    }
}

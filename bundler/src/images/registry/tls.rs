//! The TLS configs of a registry connection: verified against a private registry's own CA as
//! well as the built-in roots ([`with_ca`]), or, for registries the user marked insecure
//! (self-signed certificates on a private registry), without certificate checks
//! ([`unverified`], `bale_tls`'s verifier: signatures are still checked, so the handshake is
//! sound; only who the certificate belongs to is not).

use crate::images::error::{ImagesError, Result};
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

pub(crate) fn unverified() -> Result<Arc<rustls::ClientConfig>> {
    bale_tls::unverified_client_config()
        .map(Arc::new)
        .map_err(|e| ImagesError::invalid("TLS", e.to_string()))
}

/// Verified TLS that also trusts the CA certificates in the PEM file `ca_file` (a private
/// registry's own CA), besides the built-in roots.
pub(crate) fn with_ca(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(ca_file).map_err(|e| ImagesError::io(ca_file, e))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| {
            ImagesError::invalid(
                ca_file.display().to_string(),
                format!("not a PEM certificate file: {e}"),
            )
        })?;
        roots.add(cert).map_err(|e| {
            ImagesError::invalid(
                ca_file.display().to_string(),
                format!("a certificate that cannot be a CA: {e}"),
            )
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(ImagesError::invalid(
            ca_file.display().to_string(),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA's certificate",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ImagesError::invalid("TLS", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

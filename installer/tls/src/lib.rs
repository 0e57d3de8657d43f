//! TLS without certificate checks: one verifier, [`AcceptAnyServerCert`], and
//! [`unverified_client_config`], a client config built on it.
//!
//! Why it exists: some peers cannot be verified and still have to be talked to over TLS. A
//! private registry with a self-signed certificate that the user marked insecure (`bale build`
//! pulling images, `push`/`pull --insecure`), and the API servers that lvscare probes with
//! `--insecure-skip-verify` to ask only "is something answering TLS here". Both used to carry
//! a copy of this verifier; this crate is the one copy.
//!
//! When it may be used: only when the user asked for it for that peer (a flag or a setting
//! naming it insecure), or for a probe that sends no secret and trusts nothing it reads back.
//! Who the peer is stays unknown, so a man in the middle can stand in for it. The handshake
//! signatures are still checked with the provider's algorithms, so the peer does hold the key
//! of the certificate it shows, and the session itself is sound.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{self, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, SignatureScheme};

/// Accepts any server certificate (any issuer, any name, any date), and still checks the
/// handshake signatures with `provider`'s algorithms.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyServerCert {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyServerCert { provider }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config with ring's algorithms and the safe default protocol versions (TLS 1.2 and
/// 1.3) that accepts any server certificate, without client authentication. See the module
/// documentation for when it may be used.
pub fn unverified_client_config() -> Result<ClientConfig, Error> {
    let provider = Arc::new(crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(provider)))
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::{ClientHello, ResolvesServerCert};
    use rustls::sign::CertifiedKey;
    use rustls::{CertificateError, Connection, ServerConfig};

    // testdata/ was made once with openssl (rcgen is not among the dependencies): a P-256
    // leaf certificate for bale.test signed by its own key (`openssl ca -selfsign`, valid from
    // 2000 to 2100, basicConstraints CA:FALSE, extendedKeyUsage serverAuth), and a second key
    // (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`).
    const CERT: &[u8] = include_bytes!("testdata/self-signed.crt");
    const KEY: &[u8] = include_bytes!("testdata/self-signed.key");
    const OTHER_KEY: &[u8] = include_bytes!("testdata/other.key");

    /// Always the same certificate and key, even a key that is not the certificate's (which
    /// `with_single_cert` would refuse).
    #[derive(Debug)]
    struct Fixed(Arc<CertifiedKey>);

    impl ResolvesServerCert for Fixed {
        fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
            Some(Arc::clone(&self.0))
        }
    }

    /// A server showing the self-signed certificate and signing with `key`, on `version`.
    fn server(key: &[u8], version: &'static rustls::SupportedProtocolVersion) -> ServerConfig {
        let provider = Arc::new(crypto::ring::default_provider());
        let cert = CertificateDer::from_pem_slice(CERT).expect("fixture certificate");
        let key = PrivateKeyDer::from_pem_slice(key).expect("fixture key");
        let signing = provider
            .key_provider
            .load_private_key(key)
            .expect("a P-256 key");
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .expect("version supported")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(Arc::new(CertifiedKey::new(
                vec![cert],
                signing,
            )))))
    }

    /// Runs a handshake between the two in memory; the first error either side meets.
    fn handshake(client: ClientConfig, server: ServerConfig) -> Result<(), Error> {
        let name = ServerName::try_from("bale.test").expect("a DNS name");
        let mut c = Connection::from(rustls::ClientConnection::new(Arc::new(client), name)?);
        let mut s = Connection::from(rustls::ServerConnection::new(Arc::new(server))?);
        for _ in 0..16 {
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
            transfer(&mut c, &mut s)?;
            transfer(&mut s, &mut c)?;
        }
        panic!("the handshake does not finish");
    }

    fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), Error> {
        let mut wire = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut wire).expect("write to a Vec");
        }
        let mut rest = &wire[..];
        while !rest.is_empty() {
            to.read_tls(&mut rest).expect("read from a slice");
            to.process_new_packets()?;
        }
        Ok(())
    }

    fn verified_client_config() -> ClientConfig {
        ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("default versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    }

    #[test]
    fn a_self_signed_server_is_accepted_only_by_the_unverified_config() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let unverified = unverified_client_config().expect("config");
            handshake(unverified, server(KEY, version)).expect("unverified handshake");
            let e = handshake(verified_client_config(), server(KEY, version)).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::InvalidCertificate(CertificateError::UnknownIssuer)
                ),
                "{e:?}"
            );
        }
    }

    #[test]
    fn handshake_signatures_are_still_checked() {
        // The server shows the certificate but signs with another key: it does not hold the
        // certificate's key, so even the unverified config refuses it.
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let unverified = unverified_client_config().expect("config");
            let e = handshake(unverified, server(OTHER_KEY, version)).unwrap_err();
            assert!(
                matches!(e, Error::InvalidCertificate(CertificateError::BadSignature)),
                "{e:?}"
            );
        }
    }
}

//! The signature block: JSON inside the bundle holding SSHSIG signatures over its root.
//!
//! ```json
//! {"format":"bale-signatures/1","signatures":[{"public_key":"ssh-ed25519 AAAA... c",
//!  "signature":"-----BEGIN SSH SIGNATURE-----\n...\n-----END SSH SIGNATURE-----\n"}]}
//! ```
//!
//! Each signature is OpenSSH's SSHSIG over the 32 raw bytes of the root, namespace
//! [`NAMESPACE`], hash sha512: exactly what `ssh-keygen -Y sign -n bale-bundle` makes of a
//! file holding those bytes, so a stock `ssh-keygen -Y verify` checks it.

use crate::error::{Error, Result};
use crate::keys::{fingerprint, parse_public_key};
use serde::{Deserialize, Serialize};
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey, SshSig};
use std::path::Path;

/// The SSHSIG namespace of a bale bundle signature: a signature made for anything else (a git
/// commit, a file) never passes for one.
pub const NAMESPACE: &str = "bale-bundle";
/// The block's `format` field.
pub const BLOCK_FORMAT: &str = "bale-signatures/1";
/// Key rotation and a few publishers need a handful; more is damage or hostility.
pub const MAX_SIGNATURES: usize = 32;
/// One public key line or armoured signature is a few hundred bytes.
const MAX_FIELD_LEN: usize = 8 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureBlock {
    pub format: String,
    pub signatures: Vec<SignatureEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    /// The signer's key, `ssh-ed25519 AAAA... comment`.
    pub public_key: String,
    /// The armoured SSHSIG, `-----BEGIN SSH SIGNATURE-----...`.
    pub signature: String,
}

/// One signature of a block, parsed and checked against the root.
#[derive(Debug, Clone)]
pub struct Signer {
    pub key: PublicKey,
    pub fingerprint: String,
    pub signature: SshSig,
}

impl Default for SignatureBlock {
    fn default() -> Self {
        SignatureBlock {
            format: BLOCK_FORMAT.into(),
            signatures: Vec::new(),
        }
    }
}

impl SignatureBlock {
    /// Decodes a block as read from a bundle (already bounded to 1 MiB by the payload reader).
    pub fn decode(bytes: &[u8]) -> Result<SignatureBlock> {
        let b: SignatureBlock = serde_json::from_slice(bytes)
            .map_err(|e| Error::BadBlock(format!("not the JSON bale writes ({e})")))?;
        if b.format != BLOCK_FORMAT {
            return Err(Error::BadBlock(format!(
                "format {:?}, expected {BLOCK_FORMAT:?}",
                b.format
            )));
        }
        if b.signatures.len() > MAX_SIGNATURES {
            return Err(Error::BadBlock(format!(
                "{} signatures, at most {MAX_SIGNATURES} are allowed",
                b.signatures.len()
            )));
        }
        if let Some(i) = b
            .signatures
            .iter()
            .position(|s| s.public_key.len() > MAX_FIELD_LEN || s.signature.len() > MAX_FIELD_LEN)
        {
            return Err(Error::BadBlock(format!(
                "signature {} is longer than {MAX_FIELD_LEN} bytes",
                i + 1
            )));
        }
        Ok(b)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain strings cannot fail; an empty block would only mean "unsigned".
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses every signature and checks it over `root`. The first one that does not verify
    /// is an error: the bundle was changed after it was signed (or the block was).
    pub fn verify_all(&self, root: &[u8; 32]) -> Result<Vec<Signer>> {
        let mut out = Vec::with_capacity(self.signatures.len());
        for (i, s) in self.signatures.iter().enumerate() {
            let at = Path::new("signature block");
            let key = parse_public_key(&s.public_key, at).map_err(|e| {
                Error::BadBlock(format!("signature {}: its public key: {e}", i + 1))
            })?;
            let fp = fingerprint(&key);
            let sig =
                SshSig::from_pem(s.signature.as_bytes()).map_err(|e| Error::BadSignature {
                    key: fp.clone(),
                    why: format!("the signature is not a readable SSHSIG ({e})"),
                })?;
            check_one(&key, &sig, root).map_err(|fault| Error::BadSignature {
                key: fp.clone(),
                why: fault.to_string(),
            })?;
            out.push(Signer {
                key,
                fingerprint: fp,
                signature: sig,
            });
        }
        Ok(out)
    }

    /// Adds a signature by `key` over `root`, replacing one by the same key.
    pub fn add(&mut self, key: &PrivateKey, root: &[u8; 32]) -> Result<()> {
        let sig = key
            .sign(NAMESPACE, HashAlg::Sha512, root)
            .map_err(|e| Error::Crypto(format!("cannot sign: {e}")))?;
        let armoured = sig
            .to_pem(LineEnding::LF)
            .map_err(|e| Error::Crypto(format!("cannot encode the signature: {e}")))?;
        let public_key = key
            .public_key()
            .to_openssh()
            .map_err(|e| Error::Crypto(format!("cannot encode the public key: {e}")))?;
        let same_key = |line: &str| {
            ssh_key::PublicKey::from_openssh(line.trim())
                .is_ok_and(|k| k.key_data() == key.public_key().key_data())
        };
        self.signatures.retain(|s| !same_key(&s.public_key));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(Error::TooManySignatures(self.signatures.len()));
        }
        self.signatures.push(SignatureEntry {
            public_key,
            signature: armoured,
        });
        Ok(())
    }
}

/// Why a signature is not its key's bale signature over a bundle's root.
#[derive(Debug, thiserror::Error)]
enum SignatureFault {
    #[error("it was made by another key than the one it names")]
    OtherKey,
    #[error("namespace {found:?}, not {NAMESPACE:?}")]
    Namespace { found: String },
    #[error("it does not verify over the bundle's root ({0})")]
    Verify(ssh_key::Error),
}

/// Why `sig` is not `key`'s bale signature over `root`, if it is not.
fn check_one(
    key: &PublicKey,
    sig: &SshSig,
    root: &[u8; 32],
) -> std::result::Result<(), SignatureFault> {
    if sig.public_key() != key.key_data() {
        return Err(SignatureFault::OtherKey);
    }
    if sig.namespace() != NAMESPACE {
        return Err(SignatureFault::Namespace {
            found: sig.namespace().to_string(),
        });
    }
    key.verify(NAMESPACE, root, sig)
        .map_err(SignatureFault::Verify)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519).unwrap()
    }

    #[test]
    fn signatures_verify_over_their_root_only() {
        let (a, b) = (key(), key());
        let root = [7u8; 32];
        let mut block = SignatureBlock::default();
        block.add(&a, &root).unwrap();
        block.add(&b, &root).unwrap();
        // Signing again with the same key replaces its signature.
        block.add(&a, &root).unwrap();
        assert_eq!(block.signatures.len(), 2);
        let back = SignatureBlock::decode(&block.encode()).unwrap();
        let signers = back.verify_all(&root).unwrap();
        assert_eq!(signers.len(), 2);
        assert_eq!(signers[0].fingerprint, fingerprint(b.public_key()));
        assert_eq!(signers[1].fingerprint, fingerprint(a.public_key()));

        let err = back.verify_all(&[8u8; 32]).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
        assert!(err.is_corruption());
    }

    #[test]
    fn a_signature_claiming_another_key_fails() {
        let (a, b) = (key(), key());
        let root = [1u8; 32];
        let mut block = SignatureBlock::default();
        block.add(&a, &root).unwrap();
        block.signatures[0].public_key = b.public_key().to_openssh().unwrap();
        let err = block.verify_all(&root).unwrap_err();
        assert!(err.to_string().contains("another key"), "{err}");
    }

    #[test]
    fn truncated_and_malformed_blocks_are_refused() {
        let a = key();
        let root = [1u8; 32];
        let mut block = SignatureBlock::default();
        block.add(&a, &root).unwrap();
        let bytes = block.encode();
        for n in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            let err = SignatureBlock::decode(&bytes[..n]).unwrap_err();
            assert!(matches!(err, Error::BadBlock(_)), "{n}: {err}");
        }
        // A signature cut short inside valid JSON.
        let mut cut = block.clone();
        let s = &mut cut.signatures[0].signature;
        let mid = s.len() / 2;
        s.replace_range(mid..s.len() - 30, "");
        let err = cut.verify_all(&root).unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");

        let mut many = SignatureBlock::default();
        for _ in 0..=MAX_SIGNATURES {
            many.signatures.push(block.signatures[0].clone());
        }
        let err = SignatureBlock::decode(&many.encode()).unwrap_err();
        assert!(err.to_string().contains("at most 32"), "{err}");
        let err = SignatureBlock::decode(br#"{"format":"other/1","signatures":[]}"#).unwrap_err();
        assert!(err.to_string().contains("other/1"), "{err}");
    }

    #[test]
    fn a_signature_in_another_namespace_is_refused() {
        let a = key();
        let root = [1u8; 32];
        let sig = a.sign("git", HashAlg::Sha512, &root).unwrap();
        let block = SignatureBlock {
            format: BLOCK_FORMAT.into(),
            signatures: vec![SignatureEntry {
                public_key: a.public_key().to_openssh().unwrap(),
                signature: sig.to_pem(LineEnding::LF).unwrap(),
            }],
        };
        let err = block.verify_all(&root).unwrap_err();
        assert!(err.to_string().contains("namespace"), "{err}");
    }
}

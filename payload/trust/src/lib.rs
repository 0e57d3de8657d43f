//! Signed bale bundles, checked offline against pinned keys.
//!
//! A bundle is signed by signing its root (the SHA-256 of its header, which the digest chain
//! extends to every byte) with an ed25519 key, as an OpenSSH SSHSIG in namespace
//! [`NAMESPACE`]. The signatures travel in the bundle's signature block (format 1.1), so
//! signing never changes the payload or its digests, and a stock `ssh-keygen -Y verify` can
//! check a signature on a host with nothing else installed.
//!
//! - [`keys`]: key files (make, load, permissions, passphrases).
//! - [`block`]: the signature block and signing.
//! - [`policy`]: which keys are trusted, and the verdict on a bundle ([`enforce`]).
//! - [`baked`]: trusted keys baked into the program part of a bundle.

pub mod baked;
pub mod block;
pub mod error;
pub mod keys;
pub mod policy;

pub use block::{SignatureBlock, NAMESPACE};
pub use error::{Error, Result};
pub use policy::{check, enforce, Report, TrustFlags, TrustPolicy, Verdict};
/// The key and signature types, for callers that hold a loaded key.
pub use ssh_key;

use bale_payload::Bundle;
use std::path::Path;

/// Adds a signature by `key` to the bundle and writes the result to `dest` (temporary name,
/// renamed when complete). The existing signatures must all verify over the bundle's root,
/// unless `replace` drops them.
pub fn sign_bundle(
    bundle: &Bundle,
    key: &ssh_key::PrivateKey,
    replace: bool,
    dest: &Path,
) -> Result<()> {
    let mut block = match (replace, bundle.signature_block()?) {
        (false, Some(bytes)) => {
            let b = SignatureBlock::decode(&bytes)?;
            b.verify_all(&bundle.root())?;
            b
        }
        _ => SignatureBlock::default(),
    };
    block.add(key, &bundle.root())?;
    bale_payload::sigblock::write_with_signature_block(bundle, &block.encode(), dest)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bale_payload::{BundleMeta, BundleWriter, WriteOptions};
    use std::path::PathBuf;

    fn bundle(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let out = dir.join(name);
        let exe = std::env::current_exe().unwrap();
        let mut w =
            BundleWriter::create(&out, &exe, BundleMeta::default(), WriteOptions::default())
                .unwrap();
        w.add_bytes("a", 0o644, content).unwrap();
        w.finish().unwrap();
        out
    }

    fn key(dir: &Path, name: &str) -> (ssh_key::PrivateKey, PathBuf, String) {
        let k = keys::keygen(&dir.join(name), name, None).unwrap();
        let private = keys::load_private_key(&k.private, None).unwrap();
        (private, k.public, k.fingerprint)
    }

    fn policy(keys: &[&Path]) -> TrustPolicy {
        let mut p = TrustPolicy::default();
        for k in keys {
            p.add_key_file(k).unwrap();
        }
        p
    }

    #[test]
    fn verdicts_for_unsigned_trusted_unknown_and_two_signers() {
        let d = tempfile::tempdir().unwrap();
        let path = bundle(d.path(), "app.bale", b"one");
        let (a, a_pub, a_fp) = key(d.path(), "a");
        let (b, b_pub, b_fp) = key(d.path(), "b");

        let open = || Bundle::open(&path).unwrap();
        assert_eq!(
            check(&open(), &policy(&[])).unwrap().verdict,
            Verdict::Unsigned
        );
        let err = enforce(&open(), &policy(&[&a_pub])).unwrap_err();
        assert!(err.is_untrusted(), "{err}");
        assert!(err.to_string().contains("unsigned") && err.to_string().contains(&a_fp));

        sign_bundle(&open(), &a, false, &path).unwrap();
        let r = enforce(&open(), &policy(&[&a_pub])).unwrap();
        assert_eq!(
            r.verdict,
            Verdict::Trusted {
                by: vec![a_fp.clone()]
            }
        );
        let err = enforce(&open(), &policy(&[&b_pub])).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
        // Without a policy the verdict is stated, not enforced.
        let r = enforce(&open(), &policy(&[])).unwrap();
        assert_eq!(r.describe(), format!("signed by unknown key {a_fp}"));

        // Key rotation: a second signature; either key is enough.
        sign_bundle(&open(), &b, false, &path).unwrap();
        assert_eq!(
            check(&open(), &policy(&[])).unwrap().signers,
            vec![a_fp.clone(), b_fp.clone()]
        );
        assert!(enforce(&open(), &policy(&[&b_pub])).unwrap().is_trusted());
        assert!(enforce(&open(), &policy(&[&a_pub])).unwrap().is_trusted());
        bale_payload::verify::verify(&open(), 2, &|_| {}).unwrap();
    }

    #[test]
    fn revoked_keys_never_count() {
        let d = tempfile::tempdir().unwrap();
        let path = bundle(d.path(), "app.bale", b"one");
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let (a, _, a_fp) = key(d.path(), "keys/a");
        let (b, _, b_fp) = key(d.path(), "keys/b");
        std::fs::write(d.path().join("keys/revoked"), format!("# gone\n{a_fp}\n")).unwrap();
        let mut p = TrustPolicy::default();
        p.add_dir(&d.path().join("keys")).unwrap();
        assert!(p.is_configured());

        sign_bundle(&Bundle::open(&path).unwrap(), &a, false, &path).unwrap();
        let err = enforce(&Bundle::open(&path).unwrap(), &p).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("signed only by revoked key {a_fp}")),
            "{err}"
        );

        sign_bundle(&Bundle::open(&path).unwrap(), &b, false, &path).unwrap();
        let r = enforce(&Bundle::open(&path).unwrap(), &p).unwrap();
        assert_eq!(r.verdict, Verdict::Trusted { by: vec![b_fp] });
        assert!(r.describe().contains("revoked"), "{}", r.describe());
    }

    #[test]
    fn a_signature_over_another_bundle_is_tampering() {
        let d = tempfile::tempdir().unwrap();
        let one = bundle(d.path(), "one.bale", b"one");
        let two = bundle(d.path(), "two.bale", b"two");
        let (a, a_pub, _) = key(d.path(), "a");
        sign_bundle(&Bundle::open(&one).unwrap(), &a, false, &one).unwrap();
        // Move one's block onto two: well-formed, but over another root.
        let block = Bundle::open(&one)
            .unwrap()
            .signature_block()
            .unwrap()
            .unwrap();
        let b2 = Bundle::open(&two).unwrap();
        bale_payload::sigblock::write_with_signature_block(&b2, &block, &two).unwrap();
        let err = enforce(&Bundle::open(&two).unwrap(), &policy(&[&a_pub])).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        assert!(err.to_string().contains("does not verify"), "{err}");
        // Signing on top of a bad signature is refused; --replace starts over.
        let err = sign_bundle(&Bundle::open(&two).unwrap(), &a, false, &two).unwrap_err();
        assert!(err.is_corruption(), "{err}");
        sign_bundle(&Bundle::open(&two).unwrap(), &a, true, &two).unwrap();
        assert!(enforce(&Bundle::open(&two).unwrap(), &policy(&[&a_pub]))
            .unwrap()
            .is_trusted());
    }

    #[test]
    fn a_truncated_block_is_damage() {
        let d = tempfile::tempdir().unwrap();
        let path = bundle(d.path(), "app.bale", b"one");
        let (a, _, _) = key(d.path(), "a");
        sign_bundle(&Bundle::open(&path).unwrap(), &a, false, &path).unwrap();
        let b = Bundle::open(&path).unwrap();
        let block = b.signature_block().unwrap().unwrap();
        bale_payload::sigblock::write_with_signature_block(&b, &block[..block.len() - 40], &path)
            .unwrap();
        let err = check(&Bundle::open(&path).unwrap(), &policy(&[])).unwrap_err();
        assert!(matches!(err, Error::BadBlock(_)), "{err}");
        assert!(err.is_corruption());
    }
}

//! Envoy's `verify_signature` foreign function, natively, so plugins that use the host's
//! crypto behave here as they do in Envoy.
//!
//! Same contract as Envoy's (`source/extensions/common/wasm/foreign.cc`): the argument is a
//! protobuf `VerifySignatureArguments` (`hash_function` = 1, `public_key` DER
//! SubjectPublicKeyInfo = 2, `signature` = 3, `text` = 4, `public_key_pem` = 5); the answer
//! a `VerifySignatureResult` (`result` = 1, `error` = 2). A key that cannot be imported (or
//! both or neither key forms given) is `BadArgument`; an unknown hash or a signature that
//! does not verify is a `result: false` answer. RSA keys verify PKCS#1 v1.5 signatures and
//! EC keys (P-256, P-384) DER-encoded ECDSA signatures, which is what BoringSSL's
//! `EVP_DigestVerify` does with a key and no padding settings.

use base64::Engine as _;
use p256::pkcs8::DecodePublicKey as _;
use rsa::pkcs8::DecodePublicKey as _;
use sha2::Digest as _;

use crate::types::Status;

/// The name plugins call.
pub const VERIFY_SIGNATURE: &str = "verify_signature";

#[derive(Default)]
struct Arguments<'a> {
    hash: &'a [u8],
    der: &'a [u8],
    signature: &'a [u8],
    text: &'a [u8],
    pem: &'a [u8],
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn parse(bytes: &[u8]) -> Option<Arguments<'_>> {
    let mut args = Arguments::default();
    let mut at = 0;
    while at < bytes.len() {
        let key = varint(bytes, &mut at)?;
        match key & 7 {
            0 => {
                varint(bytes, &mut at)?;
            }
            1 => at = at.checked_add(8)?,
            5 => at = at.checked_add(4)?,
            2 => {
                let len = usize::try_from(varint(bytes, &mut at)?).ok()?;
                let end = at.checked_add(len)?;
                let value = bytes.get(at..end)?;
                at = end;
                match key >> 3 {
                    1 => args.hash = value,
                    2 => args.der = value,
                    3 => args.signature = value,
                    4 => args.text = value,
                    5 => args.pem = value,
                    _ => {}
                }
            }
            _ => return None,
        }
        if at > bytes.len() {
            return None;
        }
    }
    Some(args)
}

enum PublicKey {
    Rsa(rsa::RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

fn pem_to_der(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("-----BEGIN PUBLIC KEY-----"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn import(der: &[u8]) -> Option<PublicKey> {
    if let Ok(k) = rsa::RsaPublicKey::from_public_key_der(der) {
        return Some(PublicKey::Rsa(k));
    }
    if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::P256(k));
    }
    p384::ecdsa::VerifyingKey::from_public_key_der(der)
        .ok()
        .map(PublicKey::P384)
}

fn digest(hash: &str, text: &[u8]) -> Option<(Vec<u8>, rsa::Pkcs1v15Sign)> {
    Some(match hash {
        "sha256" => (
            sha2::Sha256::digest(text).to_vec(),
            rsa::Pkcs1v15Sign::new::<sha2::Sha256>(),
        ),
        "sha384" => (
            sha2::Sha384::digest(text).to_vec(),
            rsa::Pkcs1v15Sign::new::<sha2::Sha384>(),
        ),
        "sha512" => (
            sha2::Sha512::digest(text).to_vec(),
            rsa::Pkcs1v15Sign::new::<sha2::Sha512>(),
        ),
        _ => return None,
    })
}

fn answer(result: bool, error: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if result {
        out.extend_from_slice(&[0x08, 0x01]);
    }
    if !error.is_empty() {
        out.push(0x12);
        // Errors here are short constant texts, under 128 bytes.
        out.push(error.len() as u8);
        out.extend_from_slice(error.as_bytes());
    }
    out
}

/// The same check with ring (assembly bignum and curve arithmetic: RSA-2048 is several times faster
/// than the pure-Rust `rsa` crate, which a live host such as the HAProxy agent pays on every
/// uncached token); `None` where ring has no such algorithm or key size, and the RustCrypto path
/// above decides.
fn verify_with_ring(key: &PublicKey, hash: &str, text: &[u8], signature: &[u8]) -> Option<bool> {
    use ring::signature as rs;
    match key {
        PublicKey::Rsa(k) => {
            use rsa::traits::PublicKeyParts as _;
            let bits = k.n().bits();
            let alg: &'static rs::RsaParameters = match hash {
                "sha256" if (1024..=8192).contains(&bits) => {
                    &rs::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
                }
                "sha384" if (2048..=8192).contains(&bits) => &rs::RSA_PKCS1_2048_8192_SHA384,
                "sha512" if (1024..=8192).contains(&bits) => {
                    &rs::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY
                }
                _ => return None,
            };
            let components = rs::RsaPublicKeyComponents {
                n: k.n().to_bytes_be(),
                e: k.e().to_bytes_be(),
            };
            Some(components.verify(alg, text, signature).is_ok())
        }
        PublicKey::P256(k) => {
            let alg = match hash {
                "sha256" => &rs::ECDSA_P256_SHA256_ASN1,
                "sha384" => &rs::ECDSA_P256_SHA384_ASN1,
                _ => return None,
            };
            let point = k.to_sec1_point(false);
            Some(
                rs::UnparsedPublicKey::new(alg, point.as_bytes())
                    .verify(text, signature)
                    .is_ok(),
            )
        }
        PublicKey::P384(k) => {
            let alg = match hash {
                "sha256" => &rs::ECDSA_P384_SHA256_ASN1,
                "sha384" => &rs::ECDSA_P384_SHA384_ASN1,
                _ => return None,
            };
            let point = k.to_sec1_point(false);
            Some(
                rs::UnparsedPublicKey::new(alg, point.as_bytes())
                    .verify(text, signature)
                    .is_ok(),
            )
        }
    }
}

/// The foreign function: protobuf arguments in, protobuf result out.
pub fn verify_signature(arguments: &[u8]) -> Result<Vec<u8>, Status> {
    let args = parse(arguments).ok_or(Status::BadArgument)?;
    let der = match (args.der.is_empty(), args.pem.is_empty()) {
        (false, true) => args.der.to_vec(),
        (true, false) => pem_to_der(args.pem).ok_or(Status::BadArgument)?,
        _ => return Err(Status::BadArgument),
    };
    let key = import(&der).ok_or(Status::BadArgument)?;
    let hash = String::from_utf8_lossy(args.hash).to_ascii_lowercase();
    let Some((hashed, padding)) = digest(&hash, args.text) else {
        return Ok(answer(false, &format!("{hash} is not supported.")));
    };
    if let Some(ok) = verify_with_ring(&key, &hash, args.text, args.signature) {
        return Ok(if ok {
            answer(true, "")
        } else {
            answer(false, "Failed to verify digest.")
        });
    }
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let ok = match key {
        PublicKey::Rsa(k) => k.verify(padding, &hashed, args.signature).is_ok(),
        PublicKey::P256(k) => p256::ecdsa::Signature::from_der(args.signature)
            .is_ok_and(|s| k.verify_prehash(&hashed, &s).is_ok()),
        PublicKey::P384(k) => p384::ecdsa::Signature::from_der(args.signature)
            .is_ok_and(|s| k.verify_prehash(&hashed, &s).is_ok()),
    };
    Ok(if ok {
        answer(true, "")
    } else {
        answer(false, "Failed to verify digest.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    fn field(out: &mut Vec<u8>, number: u8, value: &[u8]) {
        out.push(number << 3 | 2);
        let mut len = value.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(value);
    }

    fn call(hash: &str, der: &[u8], signature: &[u8], text: &[u8]) -> bool {
        let mut args = Vec::new();
        field(&mut args, 1, hash.as_bytes());
        field(&mut args, 2, der);
        field(&mut args, 3, signature);
        field(&mut args, 4, text);
        verify_signature(&args).unwrap() == [0x08, 0x01]
    }

    /// A JWT's signing input and signature.
    fn split(token: &str) -> (Vec<u8>, Vec<u8>) {
        let (input, sig) = token.rsplit_once('.').unwrap();
        let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(sig)
            .unwrap();
        (input.as_bytes().to_vec(), sig)
    }

    fn check(hash: &str, der: &[u8], token: &str) {
        let (text, sig) = split(token);
        // JWS carries ECDSA signatures as r || s; Envoy takes them DER-encoded, as plugins send them.
        let sig = match sig.len() {
            64 => p256::ecdsa::Signature::from_slice(&sig)
                .unwrap()
                .to_der()
                .as_bytes()
                .to_vec(),
            96 => p384::ecdsa::Signature::from_slice(&sig)
                .unwrap()
                .to_der()
                .as_bytes()
                .to_vec(),
            _ => sig,
        };
        assert!(call(hash, der, &sig, &text), "{hash}: a good signature");
        assert!(
            !call(hash, der, &sig, b"other.text"),
            "{hash}: another text"
        );
        let mut bad = sig;
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(!call(hash, der, &bad, &text), "{hash}: a flipped bit");
    }

    #[test]
    fn rsa_and_ecdsa_signatures_verify_and_forgeries_do_not() {
        let claims = || Claims::create(Duration::from_mins(5));
        let rs256 = RS256KeyPair::generate(2048).unwrap();
        let der = rs256.public_key().to_der().unwrap();
        check("sha256", &der, &rs256.sign(claims()).unwrap());
        let rs384 = RS384KeyPair::from_der(&rs256.to_der().unwrap()).unwrap();
        check("sha384", &der, &rs384.sign(claims()).unwrap());
        let rs512 = RS512KeyPair::from_der(&rs256.to_der().unwrap()).unwrap();
        check("sha512", &der, &rs512.sign(claims()).unwrap());
        let es256 = ES256KeyPair::generate();
        check(
            "sha256",
            &es256.public_key().to_der().unwrap(),
            &es256.sign(claims()).unwrap(),
        );
        let es384 = ES384KeyPair::generate();
        check(
            "sha384",
            &es384.public_key().to_der().unwrap(),
            &es384.sign(claims()).unwrap(),
        );
    }

    /// Where ring has no such algorithm (P-256 with SHA-512), RustCrypto answers the same way.
    #[test]
    fn combinations_ring_lacks_are_checked_too() {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        use p256::pkcs8::EncodePublicKey as _;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).unwrap();
        let key = p256::ecdsa::SigningKey::from_slice(&secret).unwrap();
        let der = key.verifying_key().to_public_key_der().unwrap();
        let text = b"header.payload";
        let sig: p256::ecdsa::Signature = key.sign_prehash(&sha2::Sha512::digest(text)).unwrap();
        let parsed = import(der.as_bytes()).unwrap();
        assert_eq!(
            verify_with_ring(&parsed, "sha512", text, sig.to_der().as_bytes()),
            None
        );
        assert!(call(
            "sha512",
            der.as_bytes(),
            sig.to_der().as_bytes(),
            text
        ));
        assert!(!call(
            "sha512",
            der.as_bytes(),
            sig.to_der().as_bytes(),
            b"other"
        ));
    }
}

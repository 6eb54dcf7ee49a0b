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

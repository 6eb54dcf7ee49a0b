//! Signature checks done by the host's native crypto instead of inside the VM.
//!
//! Envoy offers wasm plugins a foreign function, `verify_signature`, that checks a
//! signature with BoringSSL: its argument is a protobuf `VerifySignatureArguments`
//! (`hash_function` = 1, `public_key` DER = 2, `signature` = 3, `text` = 4) and its answer a
//! `VerifySignatureResult` (`result` = 1, `error` = 2). RSA PKCS#1 v1.5 and ECDSA (with a
//! DER signature) are what it can do; RSA-PSS and Ed25519 are not, so those stay in wasm.
//!
//! This module holds the message encoding and the rule for trusting the host; the adapter
//! provides the transport ([`NativeVerifier`]). Nothing here knows proxy-wasm.

use crate::alg::Alg;

/// The name of the host's foreign function.
pub const FOREIGN_FUNCTION: &str = "verify_signature";

/// What the host said about one signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeVerdict {
    /// The signature verifies.
    Valid,
    /// The host checked it and it does not verify (or the host could not use the input).
    Invalid,
    /// The host has no such function, or the call failed: ask the wasm fallback.
    Unavailable,
}

/// A host that can check signatures natively.
pub trait NativeVerifier {
    /// Calls the host's `verify_signature` with an encoded `VerifySignatureArguments`;
    /// `None` when the host has no such function or the call failed.
    fn call(&self, arguments: &[u8]) -> Option<Vec<u8>>;
}

/// A key in the form the host imports, for the algorithms the host can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeKey {
    /// `sha256`, `sha384` or `sha512`.
    pub hash: &'static str,
    /// SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
    /// For ECDSA, the size in bytes of each of `r` and `s` in the JWS signature.
    pub ecdsa_scalar_len: Option<usize>,
}

impl NativeKey {
    /// The native form of a key for `alg`, or `None` when the host cannot check `alg`.
    pub fn for_alg(alg: Alg, spki_der: Vec<u8>) -> Option<NativeKey> {
        let (hash, ecdsa_scalar_len) = match alg {
            Alg::RS256 => ("sha256", None),
            Alg::RS384 => ("sha384", None),
            Alg::RS512 => ("sha512", None),
            Alg::ES256 => ("sha256", Some(32)),
            Alg::ES384 => ("sha384", Some(48)),
            _ => return None,
        };
        Some(NativeKey {
            hash,
            spki_der,
            ecdsa_scalar_len,
        })
    }

    /// Asks the host about `signature` over `signing_input` (the JWS signature bytes).
    pub fn verify(
        &self,
        host: &dyn NativeVerifier,
        signing_input: &[u8],
        signature: &[u8],
    ) -> NativeVerdict {
        let der;
        let signature = match self.ecdsa_scalar_len {
            // JWS carries r || s (RFC 7518 §3.4); BoringSSL wants the DER SEQUENCE.
            Some(n) => match ecdsa_der(signature, n) {
                Some(d) => {
                    der = d;
                    der.as_slice()
                }
                None => return NativeVerdict::Invalid,
            },
            None => signature,
        };
        let arguments = encode_arguments(self.hash, &self.spki_der, signature, signing_input);
        match host.call(&arguments) {
            None => NativeVerdict::Unavailable,
            Some(answer) => match decode_result(&answer) {
                Some(true) => NativeVerdict::Valid,
                Some(false) => NativeVerdict::Invalid,
                None => NativeVerdict::Unavailable,
            },
        }
    }
}

/// How far the host's answers are trusted, per algorithm, in one VM.
///
/// A host `true` is final. A host `false` is final only once the host has said `true`
/// for that algorithm before: a host that has accepted a genuine signature understands the
/// key and signature formats, so its refusals mean a bad signature. Until then a refusal is
/// checked again in wasm, and if wasm accepts, the host is not asked about that algorithm
/// again: a host that misreads a format must never turn valid tokens away.
#[derive(Debug, Clone, Default)]
pub struct HostTrust {
    confirmed: Vec<Alg>,
    distrusted: Vec<Alg>,
}

impl HostTrust {
    /// Whether the host should be asked about `alg`.
    pub fn ask(&self, alg: Alg) -> bool {
        !self.distrusted.contains(&alg)
    }

    /// Whether a host refusal for `alg` is final.
    pub fn refusal_is_final(&self, alg: Alg) -> bool {
        self.confirmed.contains(&alg)
    }

    /// The host accepted a signature for `alg`.
    pub fn confirm(&mut self, alg: Alg) {
        if !self.confirmed.contains(&alg) {
            self.confirmed.push(alg);
        }
    }

    /// The host refused a signature that the wasm fallback accepted.
    pub fn distrust(&mut self, alg: Alg) {
        self.confirmed.retain(|a| *a != alg);
        if !self.distrusted.contains(&alg) {
            self.distrusted.push(alg);
        }
    }
}

/// Encodes an ECDSA `r || s` signature as DER (`SEQUENCE { INTEGER r, INTEGER s }`);
/// `None` when the length is not `2 * scalar_len`.
pub fn ecdsa_der(raw: &[u8], scalar_len: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * scalar_len {
        return None;
    }
    let (r, s) = raw.split_at(scalar_len);
    let (r, s) = (der_integer(r), der_integer(s));
    // At most 2 * (2 + 1 + 48) content bytes: the short length form always fits.
    let len = r.len() + s.len();
    let mut out = Vec::with_capacity(2 + len);
    out.push(0x30);
    out.push(len as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

fn der_integer(magnitude: &[u8]) -> Vec<u8> {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let pad = digits.first().is_none_or(|b| b & 0x80 != 0);
    let len = digits.len() + usize::from(pad);
    let mut out = Vec::with_capacity(2 + len);
    out.push(0x02);
    out.push(len as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(digits);
    out
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Encodes `VerifySignatureArguments`.
pub fn encode_arguments(hash: &str, spki_der: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(hash.len() + spki_der.len() + signature.len() + text.len() + 16);
    put_bytes(&mut out, 1, hash.as_bytes());
    put_bytes(&mut out, 2, spki_der);
    put_bytes(&mut out, 3, signature);
    put_bytes(&mut out, 4, text);
    out
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut v: u64 = 0;
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

/// Decodes `VerifySignatureResult` to its `result`; `None` when it is not one.
pub fn decode_result(bytes: &[u8]) -> Option<bool> {
    // proto3 leaves `false` out, so an empty message means "does not verify".
    let mut result = false;
    let mut at = 0;
    while at < bytes.len() {
        let key = get_varint(bytes, &mut at)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                let v = get_varint(bytes, &mut at)?;
                if field == 1 {
                    result = v != 0;
                }
            }
            1 => at = at.checked_add(8)?,
            2 => {
                let len = usize::try_from(get_varint(bytes, &mut at)?).ok()?;
                at = at.checked_add(len)?;
            }
            5 => at = at.checked_add(4)?,
            _ => return None,
        }
        if at > bytes.len() {
            return None;
        }
    }
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_protobuf_fields_one_to_four() {
        let m = encode_arguments("sha256", &[1, 2], &[3], b"ab");
        assert_eq!(
            m,
            [
                0x0a, 6, b's', b'h', b'a', b'2', b'5', b'6', 0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 2,
                b'a', b'b'
            ]
        );
        let long = encode_arguments("sha256", &[0; 300], &[], &[]);
        // 300 = 0b10_0101100: two varint bytes, 0xac 0x02.
        assert_eq!(&long[8..11], &[0x12, 0xac, 0x02]);
    }

    #[test]
    fn results_decode_with_unknown_fields_and_defaults() {
        assert_eq!(decode_result(&[0x08, 1]), Some(true));
        assert_eq!(decode_result(&[0x08, 0]), Some(false));
        assert_eq!(decode_result(&[]), Some(false));
        let with_error = [0x12, 3, b'b', b'a', b'd', 0x08, 1];
        assert_eq!(decode_result(&with_error), Some(true));
        assert_eq!(decode_result(&[0x12, 9, b'x']), None, "length past the end");
        assert_eq!(decode_result(&[0x08]), None, "truncated varint");
        assert_eq!(decode_result(&[0x0b]), None, "group wire type");
        assert_eq!(
            decode_result(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            None
        );
    }

    #[test]
    fn ecdsa_signatures_become_minimal_der_integers() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a leading zero
        raw[63] = 0x05; // s is 5
        let der = ecdsa_der(&raw, 32).unwrap_or_default();
        assert_eq!(der[0], 0x30);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 0x05]);
        let zero = ecdsa_der(&[0u8; 96], 48).unwrap_or_default();
        assert_eq!(zero, [0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
        assert_eq!(ecdsa_der(&[1u8; 63], 32), None);
    }

    struct Scripted(Option<Vec<u8>>);
    impl NativeVerifier for Scripted {
        fn call(&self, arguments: &[u8]) -> Option<Vec<u8>> {
            assert!(arguments.starts_with(&[0x0a, 6]));
            self.0.clone()
        }
    }

    #[test]
    fn verdicts_follow_the_host_answer() {
        let key = NativeKey::for_alg(Alg::RS256, vec![0x30]).unwrap_or_else(|| unreachable!());
        let yes = Scripted(Some(vec![0x08, 1]));
        let no = Scripted(Some(vec![0x12, 1, b'x']));
        assert_eq!(key.verify(&yes, b"a.b", b"sig"), NativeVerdict::Valid);
        assert_eq!(key.verify(&no, b"a.b", b"sig"), NativeVerdict::Invalid);
        assert_eq!(
            key.verify(&Scripted(None), b"a.b", b"s"),
            NativeVerdict::Unavailable
        );
        assert_eq!(
            key.verify(&Scripted(Some(vec![0x0b])), b"a", b"s"),
            NativeVerdict::Unavailable
        );
        let ec = NativeKey::for_alg(Alg::ES256, vec![0x30]).unwrap_or_else(|| unreachable!());
        assert_eq!(
            ec.verify(&yes, b"a.b", &[1; 10]),
            NativeVerdict::Invalid,
            "wrong length never reaches the host"
        );
        assert_eq!(NativeKey::for_alg(Alg::PS256, vec![]), None);
        assert_eq!(NativeKey::for_alg(Alg::EdDSA, vec![]), None);
    }

    #[test]
    fn host_refusals_are_final_only_after_a_confirmation() {
        let mut t = HostTrust::default();
        assert!(t.ask(Alg::RS256) && !t.refusal_is_final(Alg::RS256));
        t.confirm(Alg::RS256);
        assert!(t.refusal_is_final(Alg::RS256) && !t.refusal_is_final(Alg::ES256));
        t.distrust(Alg::RS256);
        assert!(!t.ask(Alg::RS256) && !t.refusal_is_final(Alg::RS256));
        assert!(t.ask(Alg::ES256));
    }
}

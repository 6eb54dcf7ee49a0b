//! Target `jwks`: JWKS documents into verification keys, [`portcullis::keys::KeySet::from_jwks`].
//!
//! Input: a `u16` mask of allowed algorithms (bit i is `Alg::ALL[i]`; none set means the
//! default asymmetric list), one length-prefixed signature, then the document.
//! Properties: no panic; the error says what is wrong with the document as a whole; a key
//! set is never empty and holds keys of allowed algorithms only; a key is only ever offered
//! for its own algorithm and kid (no algorithm confusion); a JWK that publishes private
//! members or is not for signatures yields no key; a made-up signature never verifies.

use super::input::Input;
use base64::Engine as _;
use jwt_simple::prelude::VerificationOptions;
use portcullis::alg::Alg;
use portcullis::jwt;
use portcullis::keys::{JwksError, KeySet};
use serde_json::{json, Value};

/// The algorithms a mask allows.
pub fn allowed(mask: u16) -> Vec<Alg> {
    let chosen: Vec<Alg> = Alg::ALL
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect();
    if chosen.is_empty() {
        Alg::ASYMMETRIC.to_vec()
    } else {
        chosen
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks one input.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let allowed = allowed(input.u16());
    let signature = input.bytes().to_vec();
    let document = input.rest();
    let parsed: Option<Value> = serde_json::from_slice(document).ok();
    let keys = parsed
        .as_ref()
        .and_then(|d| d.as_object())
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array);
    let (set, issues) = match KeySet::from_jwks(document, &allowed) {
        Ok(r) => r,
        Err(JwksError::NotJson(_)) => {
            assert!(parsed.is_none(), "valid JSON refused as not JSON");
            return;
        }
        Err(JwksError::NoKeysArray) => {
            assert!(
                parsed.is_some() && keys.is_none(),
                "a keys array was missed"
            );
            return;
        }
        Err(JwksError::NoUsableKeys(issues)) => {
            let Some(keys) = keys else {
                panic!("NoUsableKeys for a document without keys");
            };
            assert_eq!(issues.len(), keys.len(), "every skipped key has an issue");
            return;
        }
    };
    let Some(keys) = keys else {
        panic!("a key set from a document without a keys array");
    };
    assert!(!set.is_empty());
    assert!(set.is_kept_by(&set));
    let mut last = None;
    for issue in &issues {
        assert!(issue.index < keys.len());
        assert!(last < Some(issue.index), "issues in order, one per key");
        last = Some(issue.index);
    }
    let mut total = 0;
    for alg in Alg::ALL {
        let Ok(entries) = set.candidates(alg, None) else {
            continue;
        };
        assert!(allowed.contains(&alg), "{alg} key although not allowed");
        assert!(!entries.is_empty());
        total += entries.len();
        for entry in entries {
            assert_eq!(entry.alg, alg, "a {} key offered for {alg}", entry.alg);
            check_kid_lookup(&set, alg, entry.kid.as_deref());
            check_forged_signature(entry, &signature);
        }
    }
    assert_eq!(total, set.len(), "every entry has one algorithm");
    check_refused_members(&set, keys);
}

fn check_kid_lookup(set: &KeySet, alg: Alg, kid: Option<&str>) {
    let Some(kid) = kid else {
        return;
    };
    let Ok(found) = set.candidates(alg, Some(kid)) else {
        panic!("key with kid {kid:?} not found for {alg}");
    };
    for e in found {
        assert_eq!(e.alg, alg);
        assert_eq!(e.kid.as_deref(), Some(kid));
    }
    for other in Alg::ALL {
        if let Ok(found) = set.candidates(other, Some(kid)) {
            assert!(found
                .iter()
                .all(|e| e.alg == other && e.kid.as_deref() == Some(kid)));
        }
    }
}

/// A JWK with private members (other than a symmetric key) or a `use` other than `sig`
/// yields no key; checked through kids that only such a JWK has.
fn check_refused_members(set: &KeySet, keys: &[Value]) {
    const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];
    for jwk in keys {
        let Some(obj) = jwk.as_object() else {
            continue;
        };
        let Some(kid) = obj.get("kid").and_then(Value::as_str) else {
            continue;
        };
        let shared = keys
            .iter()
            .filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid))
            .count();
        if shared != 1 {
            continue;
        }
        let private = obj.get("kty").and_then(Value::as_str) != Some("oct")
            && PRIVATE.iter().any(|m| obj.contains_key(*m));
        let not_sig = obj.get("use").is_some_and(|u| u.as_str() != Some("sig"));
        if private || not_sig {
            for alg in Alg::ALL {
                assert!(
                    set.candidates(alg, Some(kid)).is_err(),
                    "key {kid:?} loaded although private={private} not_sig={not_sig}"
                );
            }
        }
    }
}

/// A signature the fuzzer made up must not verify: it cannot know a valid one.
fn check_forged_signature(entry: &portcullis::keys::KeyEntry, signature: &[u8]) {
    if signature.is_empty() {
        return;
    }
    let mut header = json!({"alg": entry.alg.name()});
    if let Some(kid) = &entry.kid {
        header["kid"] = json!(kid);
    }
    let payload = json!({"iss": "https://idp.test", "aud": "api", "exp": 4_000_000_000_u64});
    let token = format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes()),
        b64(signature)
    );
    let Ok(parsed) = jwt::parse(&token, usize::MAX) else {
        panic!("a well-formed token did not parse: {token}");
    };
    let verdict = entry.verify(&parsed, VerificationOptions::default());
    assert!(
        verdict.is_err(),
        "a made-up signature verified under {entry:?}: {token}"
    );
}

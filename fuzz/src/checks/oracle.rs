//! The keys of the `decide` target and a signature check independent of the engine.
//!
//! Every key is generated when the target starts (by `portcullis-testkit`); the engine
//! gets their public JWKs in its policy, and the oracle keeps the same keys to verify
//! tokens on its own: RSA with the `rsa` crate (the engine uses its own `rsa_pkcs1`),
//! HMAC over `sha2` by hand, ECDSA and EdDSA with jwt-simple's public keys called
//! directly on the token (so the engine's parser, key selection and caches are not in the
//! way). Tokens are signed here too, with any header, so the fuzzer's headers get real
//! signatures.

use base64::Engine as _;
use jwt_simple::prelude::*;
use portcullis_testkit::{self as testkit, Signer};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::sha2::{Sha256, Sha384};
use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey, RsaPublicKey};
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;

/// Issuer of the provider `idp` (inline RSA, PS256, ES256 and HS256 keys).
pub const IDP: &str = "https://idp.test";
/// Issuer of the provider `other` (an inline Ed25519 key).
pub const OTHER: &str = "https://other.test";
/// Issuer of the provider `remote` (an ES384 key, fetched).
pub const REMOTE: &str = "https://remote.test";

/// Which of the reference keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyName {
    /// RSA 2048, kid `rsa-1`, provider `idp`, published without `alg`.
    Rsa,
    /// RSA 2048 for PS256, kid `ps-1`, provider `idp`.
    Ps256,
    /// P-256, kid `ec-1`, provider `idp`.
    Es256,
    /// HMAC secret, kid `hs-1`, provider `idp`.
    Hs256,
    /// Ed25519, kid `ed-1`, provider `other`.
    EdDsa,
    /// P-384, kid `ec384-1`, provider `remote` (its JWKS is served by the fuzzed fetches).
    Es384,
    /// RSA 2048 with kid `rsa-1` too, never published: its signatures must fail.
    RsaOther,
}

impl KeyName {
    /// The keys whose signatures are genuine, with their provider's name and issuer.
    pub const PUBLISHED: [(KeyName, &'static str, &'static str); 6] = [
        (KeyName::Rsa, "idp", IDP),
        (KeyName::Ps256, "idp", IDP),
        (KeyName::Es256, "idp", IDP),
        (KeyName::Hs256, "idp", IDP),
        (KeyName::EdDsa, "other", OTHER),
        (KeyName::Es384, "remote", REMOTE),
    ];
}

/// The reference keys: testkit signers, and the RSA private keys for raw signing.
pub struct Keys {
    rsa: Signer,
    ps256: Signer,
    rsa_other: Signer,
    es256: Signer,
    es384: Signer,
    eddsa: Signer,
    hs256: Signer,
    rsa_private: HashMap<KeyName, RsaPrivateKey>,
    rsa_public: HashMap<KeyName, RsaPublicKey>,
    signatures: RefCell<HashMap<(KeyName, String, String), Vec<u8>>>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

fn rsa_private(signer: &Signer) -> RsaPrivateKey {
    let der = match signer {
        Signer::Rs256(k) => k.to_der(),
        Signer::Ps256(k) => k.to_der(),
        _ => unreachable!("only RSA signers are converted"),
    };
    let Ok(der) = der else {
        panic!("RSA key export failed");
    };
    match RsaPrivateKey::from_pkcs1_der(&der).or_else(|_| RsaPrivateKey::from_pkcs8_der(&der)) {
        Ok(k) => k,
        Err(e) => panic!("RSA key import failed: {e}"),
    }
}

fn rsa_public(jwk: &Value) -> RsaPublicKey {
    let member = |name: &str| {
        let Some(bytes) = jwk.get(name).and_then(Value::as_str).and_then(unb64) else {
            panic!("RSA JWK without {name}: {jwk}");
        };
        BigUint::from_bytes_be(&bytes)
    };
    match RsaPublicKey::new(member("n"), member("e")) {
        Ok(k) => k,
        Err(e) => panic!("RSA JWK refused: {e}"),
    }
}

/// An RSA 2048 signer with kid `name` (the other RSA key also has kid `rsa-1`), loaded from
/// `cache` when it is there, else generated (and saved there).
fn rsa_key(cache: Option<&std::path::Path>, name: &str, pss: bool) -> Signer {
    let kid = if name == "rsa-other" { "rsa-1" } else { name };
    let file = cache.map(|dir| dir.join(format!("{name}.der")));
    let load = |der: &[u8]| -> Option<Signer> {
        Some(if pss {
            Signer::Ps256(PS256KeyPair::from_der(der).ok()?.with_key_id(kid))
        } else {
            Signer::Rs256(RS256KeyPair::from_der(der).ok()?.with_key_id(kid))
        })
    };
    if let Some(signer) = file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|der| load(&der))
    {
        return signer;
    }
    let generated = if pss {
        PS256KeyPair::generate(2048).map(|k| Signer::Ps256(k.with_key_id(kid)))
    } else {
        RS256KeyPair::generate(2048).map(|k| Signer::Rs256(k.with_key_id(kid)))
    };
    let signer = match generated {
        Ok(s) => s,
        Err(e) => panic!("RSA key generation failed: {e}"),
    };
    if let Some(f) = file {
        let der = match &signer {
            Signer::Rs256(k) => k.to_der(),
            Signer::Ps256(k) => k.to_der(),
            _ => unreachable!("an RSA signer"),
        };
        // A cache that cannot be written only costs the next run the generation again.
        if let (Ok(der), Some(dir)) = (der, f.parent()) {
            let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&f, der));
        }
    }
    signer
}

/// A deterministic byte stream for PSS salts, so signing is reproducible.
struct Counter(u64);

impl RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        u32::try_from(self.0 >> 32).unwrap_or(0)
    }
    fn next_u64(&mut self) -> u64 {
        (u64::from(self.next_u32()) << 32) | u64::from(self.next_u32())
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.next_u32().to_le_bytes()[0];
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Counter {}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    use sha2::Digest as _;
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

fn permissive(now: u64) -> VerificationOptions {
    VerificationOptions {
        accept_future: true,
        time_tolerance: Some(Duration::from_secs(1 << 30)),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        max_validity: None,
        max_token_length: Some(1 << 20),
        max_header_length: Some(1 << 20),
        ..VerificationOptions::default()
    }
}

impl Keys {
    /// Generates every key (a few seconds: three RSA keys).
    ///
    /// RSA key generation is what makes a target start slowly (seconds natively, tens of
    /// seconds under a sanitizer's instrumentation), so when `PORTCULLIS_FUZZ_KEYS` names a
    /// directory the RSA keys are kept there (DER, never committed: `scripts/fuzz` uses
    /// `out/fuzz/keys`) and the next run loads them.
    pub fn generate() -> Keys {
        let cache = std::env::var_os("PORTCULLIS_FUZZ_KEYS").map(std::path::PathBuf::from);
        let rsa = rsa_key(cache.as_deref(), "rsa-1", false);
        let ps256 = rsa_key(cache.as_deref(), "ps-1", true);
        let rsa_other = rsa_key(cache.as_deref(), "rsa-other", false);
        let mut rsa_private_keys = HashMap::new();
        let mut rsa_public_keys = HashMap::new();
        for (name, signer) in [
            (KeyName::Rsa, &rsa),
            (KeyName::Ps256, &ps256),
            (KeyName::RsaOther, &rsa_other),
        ] {
            rsa_private_keys.insert(name, rsa_private(signer));
            rsa_public_keys.insert(name, rsa_public(&signer.jwk()));
        }
        Keys {
            rsa,
            ps256,
            rsa_other,
            es256: testkit::es256(),
            es384: testkit::es384(),
            eddsa: testkit::eddsa(),
            hs256: testkit::hs256(),
            rsa_private: rsa_private_keys,
            rsa_public: rsa_public_keys,
            signatures: RefCell::new(HashMap::new()),
        }
    }

    /// The testkit signer of a key.
    pub fn signer(&self, name: KeyName) -> &Signer {
        match name {
            KeyName::Rsa => &self.rsa,
            KeyName::Ps256 => &self.ps256,
            KeyName::RsaOther => &self.rsa_other,
            KeyName::Es256 => &self.es256,
            KeyName::Es384 => &self.es384,
            KeyName::EdDsa => &self.eddsa,
            KeyName::Hs256 => &self.hs256,
        }
    }

    /// The public JWK the policy publishes (the RSA key without `alg`, so that it
    /// serves every RSA algorithm the provider allows).
    pub fn jwk(&self, name: KeyName) -> Value {
        let mut jwk = self.signer(name).jwk();
        if name == KeyName::Rsa {
            if let Some(o) = jwk.as_object_mut() {
                o.remove("alg");
            }
        }
        jwk
    }

    fn hmac_secret(&self) -> &[u8] {
        match &self.hs256 {
            Signer::Hs256(secret, _) => secret,
            _ => unreachable!("hs256 is an HMAC signer"),
        }
    }

    /// Signs `header` and `payload` (any bytes) with an RSA or HMAC key, under the
    /// algorithm `alg` names (RS256 when it names none of the key's), so the header is
    /// exactly the fuzzer's. `None` for keys that jwt-simple alone can sign with.
    pub fn sign_raw(
        &self,
        name: KeyName,
        alg: &str,
        header: &[u8],
        payload: &[u8],
    ) -> Option<String> {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = match name {
            KeyName::Hs256 => hmac_sha256(self.hmac_secret(), input.as_bytes()),
            KeyName::Rsa | KeyName::Ps256 | KeyName::RsaOther => {
                let key = (name, alg.to_string(), input.clone());
                if let Some(s) = self.signatures.borrow().get(&key) {
                    return Some(format!("{input}.{}", b64(s)));
                }
                let private = self.rsa_private.get(&name)?;
                let signed = match alg {
                    "RS384" => private.sign(Pkcs1v15Sign::new::<Sha384>(), &digest384(&input)),
                    "PS256" => private.sign_with_rng(
                        &mut Counter(7),
                        Pss::new::<Sha256>(),
                        &digest256(&input),
                    ),
                    "PS384" => private.sign_with_rng(
                        &mut Counter(7),
                        Pss::new::<Sha384>(),
                        &digest384(&input),
                    ),
                    _ => private.sign(Pkcs1v15Sign::new::<Sha256>(), &digest256(&input)),
                };
                let Ok(signature) = signed else {
                    panic!("RSA signing failed");
                };
                let mut memo = self.signatures.borrow_mut();
                if memo.len() >= 4096 {
                    memo.clear();
                }
                memo.insert(key, signature.clone());
                signature
            }
            _ => return None,
        };
        Some(format!("{input}.{}", b64(&signature)))
    }

    /// Signs a payload with jwt-simple (its own header: `alg`, `kid`, `typ`).
    pub fn sign_payload(
        &self,
        name: KeyName,
        payload: Map<String, Value>,
        typ: Option<String>,
    ) -> String {
        let claims = JWTClaims {
            issued_at: None,
            expires_at: None,
            invalid_before: None,
            issuer: None,
            subject: None,
            audiences: None,
            jwt_id: None,
            nonce: None,
            custom: payload,
        };
        let options = HeaderOptions {
            signature_type: typ,
            ..HeaderOptions::default()
        };
        let signed = match self.signer(name) {
            Signer::Rs256(k) => k.sign_with_options(claims, &options),
            Signer::Ps256(k) => k.sign_with_options(claims, &options),
            Signer::Es256(k) => k.sign_with_options(claims, &options),
            Signer::Es384(k) => k.sign_with_options(claims, &options),
            Signer::EdDsa(k) => k.sign_with_options(claims, &options),
            Signer::Hs256(..) => {
                let header = serde_json::json!({"alg": "HS256", "kid": "hs-1", "typ": options.signature_type});
                return self
                    .sign_raw(
                        name,
                        "HS256",
                        header.to_string().as_bytes(),
                        Value::Object(claims.custom).to_string().as_bytes(),
                    )
                    .unwrap_or_default();
            }
        };
        match signed {
            Ok(t) => t,
            Err(e) => panic!("signing failed: {e}"),
        }
    }

    /// Whether `token`'s signature is `name`'s over its signing input, under the
    /// algorithm its header names: checked here, not by the engine.
    pub fn verifies(&self, name: KeyName, token: &str, now: u64) -> bool {
        let Some((input, signature)) = token.rsplit_once('.') else {
            return false;
        };
        let Some((header, _)) = input.split_once('.') else {
            return false;
        };
        let (Some(header), Some(signature)) = (unb64(header), unb64(signature)) else {
            return false;
        };
        let Ok(Value::Object(header)) = serde_json::from_slice::<Value>(&header) else {
            return false;
        };
        let Some(alg) = header.get("alg").and_then(Value::as_str) else {
            return false;
        };
        let ec = |ok: bool| ok;
        match (name, alg) {
            (KeyName::Hs256, "HS256") => {
                hmac_sha256(self.hmac_secret(), input.as_bytes()) == signature
            }
            (KeyName::Rsa | KeyName::Ps256 | KeyName::RsaOther, _) => {
                let Some(key) = self.rsa_public.get(&name) else {
                    return false;
                };
                match alg {
                    "RS256" => key
                        .verify(Pkcs1v15Sign::new::<Sha256>(), &digest256(input), &signature)
                        .is_ok(),
                    "RS384" => key
                        .verify(Pkcs1v15Sign::new::<Sha384>(), &digest384(input), &signature)
                        .is_ok(),
                    "PS256" => key
                        .verify(Pss::new::<Sha256>(), &digest256(input), &signature)
                        .is_ok(),
                    "PS384" => key
                        .verify(Pss::new::<Sha384>(), &digest384(input), &signature)
                        .is_ok(),
                    _ => false,
                }
            }
            (KeyName::Es256, "ES256") => match &self.es256 {
                Signer::Es256(k) => ec(k
                    .public_key()
                    .verify_token::<NoCustomClaims>(token, Some(permissive(now)))
                    .is_ok()),
                _ => false,
            },
            (KeyName::Es384, "ES384") => match &self.es384 {
                Signer::Es384(k) => ec(k
                    .public_key()
                    .verify_token::<NoCustomClaims>(token, Some(permissive(now)))
                    .is_ok()),
                _ => false,
            },
            (KeyName::EdDsa, "EdDSA") => match &self.eddsa {
                Signer::EdDsa(k) => k
                    .public_key()
                    .verify_token::<NoCustomClaims>(token, Some(permissive(now)))
                    .is_ok(),
                _ => false,
            },
            _ => false,
        }
    }
}

fn digest256(input: &str) -> Vec<u8> {
    use rsa::sha2::Digest as _;
    Sha256::digest(input.as_bytes()).to_vec()
}

fn digest384(input: &str) -> Vec<u8> {
    use rsa::sha2::Digest as _;
    Sha384::digest(input.as_bytes()).to_vec()
}

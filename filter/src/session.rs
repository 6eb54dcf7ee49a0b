//! Sealed login cookies: AES-256-GCM under a key ring (the first key seals, every key
//! opens, so a key rotates without logging anyone out), bound to the cookie's name, and
//! split across numbered cookies when one would pass what browsers keep.

use crate::request::Request;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The format byte in front of every sealed value; another value is not ours.
const FORMAT: u8 = 1;
/// Bytes of a key's fingerprint in a sealed value: which key sealed it.
const KEY_ID_BYTES: usize = 4;
const NONCE_BYTES: usize = 12;
/// Largest cookie value written in one piece. RFC 6265 §6.1 makes 4096 bytes (name, value
/// and attributes) the least a browser keeps; this leaves room for the rest.
pub const MAX_PIECE: usize = 3800;
/// Most pieces one sealed value is split into: a session that needs more is refused rather
/// than sent in headers upstream servers reject.
pub const MAX_PIECES: usize = 4;

/// Why a sealing key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64 or base64url.
    #[error("is not base64 (standard or URL-safe)")]
    NotBase64,
    /// The wrong length.
    #[error("decodes to {0} bytes; a cookie key is exactly 32 random bytes (e.g. `openssl rand -base64 32`)")]
    WrongLength(usize),
}

/// The host could not give random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the host gave no random bytes")]
pub struct NoRandomness;

/// Fills `buf` from the host's CSPRNG (WASI `random_get` inside the proxy).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), NoRandomness> {
    getrandom::fill(buf).map_err(|_| NoRandomness)
}

/// `n` random bytes, base64url without padding.
pub fn random_token(n: usize) -> Result<String, NoRandomness> {
    let mut buf = vec![0u8; n];
    random_bytes(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

#[derive(Clone)]
struct SealingKey {
    id: [u8; KEY_ID_BYTES],
    cipher: Aes256Gcm,
}

/// The cookie keys, in the order configured.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<SealingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        write!(f, "KeyRing({} keys)", self.keys.len())
    }
}

impl KeyRing {
    /// Reads one configured key: base64 (or base64url) of 32 bytes.
    pub fn decode_key(text: &str) -> Result<[u8; 32], KeyError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| KeyError::NotBase64)?;
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))
    }

    /// A ring of these keys; the first seals.
    pub fn new(keys: &[[u8; 32]]) -> KeyRing {
        KeyRing {
            keys: keys
                .iter()
                .map(|k| {
                    let digest = Sha256::digest(k);
                    let mut id = [0u8; KEY_ID_BYTES];
                    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
                    SealingKey {
                        id,
                        cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(*k)),
                    }
                })
                .collect(),
        }
    }

    /// Seals `plain` for the cookie `name`: only a cookie of that name opens it.
    pub fn seal(&self, name: &str, plain: &[u8]) -> Result<String, NoRandomness> {
        let key = self.keys.first().ok_or(NoRandomness)?;
        let mut nonce = [0u8; NONCE_BYTES];
        random_bytes(&mut nonce)?;
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| NoRandomness)?;
        let mut out = Vec::with_capacity(1 + KEY_ID_BYTES + NONCE_BYTES + sealed.len());
        out.push(FORMAT);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed for `name`; `None` for anything tampered, truncated, sealed
    /// for another name or under a key not in the ring.
    pub fn open(&self, name: &str, value: &str) -> Option<Vec<u8>> {
        let raw = URL_SAFE_NO_PAD.decode(value).ok()?;
        let (&format, rest) = raw.split_first()?;
        if format != FORMAT || rest.len() < KEY_ID_BYTES + NONCE_BYTES + 16 {
            return None;
        }
        let (id, rest) = rest.split_at(KEY_ID_BYTES);
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().ok()?;
        let key = self.keys.iter().find(|k| k.id == id)?;
        key.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .ok()
    }
}

/// The name of piece `i` of the cookie `name`: `name`, `name-1`, `name-2`, ...
pub fn piece_name(name: &str, i: usize) -> String {
    if i == 0 {
        name.to_string()
    } else {
        format!("{name}-{i}")
    }
}

/// A sealed value as cookie pieces. The first piece says how many there are (`3.` in
/// front) when there is more than one. `None` when it needs more than [`MAX_PIECES`].
pub fn split(name: &str, value: &str) -> Option<Vec<(String, String)>> {
    if value.len() <= MAX_PIECE {
        return Some(vec![(name.to_string(), value.to_string())]);
    }
    // base64url is ASCII, so byte chunks are char chunks.
    let chunks: Vec<&str> = value
        .as_bytes()
        .chunks(MAX_PIECE)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    if chunks.len() > MAX_PIECES {
        return None;
    }
    Some(
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = if i == 0 {
                    format!("{}.{c}", chunks.len())
                } else {
                    (*c).to_string()
                };
                (piece_name(name, i), v)
            })
            .collect(),
    )
}

/// The sealed value the request's pieces of `name` make up; `None` when a piece is
/// missing or a name is sent twice (a cookie tossed in by a sibling domain, say).
pub fn join(req: &Request<'_>, name: &str) -> Option<String> {
    let first = single(req, name)?;
    let Some((count, head)) = first.split_once('.') else {
        return Some(first.to_string());
    };
    let count: usize = count.parse().ok()?;
    if !(2..=MAX_PIECES).contains(&count) {
        return None;
    }
    let mut value = head.to_string();
    for i in 1..count {
        value.push_str(single(req, &piece_name(name, i))?);
    }
    Some(value)
}

fn single<'a>(req: &Request<'a>, name: &str) -> Option<&'a str> {
    match req.cookies(name).as_slice() {
        [one] => Some(one),
        _ => None,
    }
}

/// How the plugin's cookies are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieAttributes {
    /// `Secure` (required for a `__Host-` name).
    pub secure: bool,
    /// `Domain`, if any (never with `__Host-`).
    pub domain: Option<String>,
}

impl CookieAttributes {
    /// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/ always.
    pub fn set_cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        let mut v = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.secure {
            v.push_str("; Secure");
        }
        if let Some(d) = &self.domain {
            v.push_str("; Domain=");
            v.push_str(d);
        }
        v
    }

    /// A `Set-Cookie` value that deletes `name`.
    pub fn clear_cookie(&self, name: &str) -> String {
        self.set_cookie(name, "", 0)
    }
}

/// The `Cookie` header edit that removes every cookie `drop` says is the plugin's:
/// `(cookie, None)` when nothing is left, `None` when there is nothing to remove.
pub fn strip_cookies(
    req: &Request<'_>,
    drop: impl Fn(&str) -> bool,
) -> Option<(String, Option<String>)> {
    let mut removed = false;
    let kept: Vec<&str> = req
        .headers_named("cookie")
        .flat_map(|h| h.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| {
            let name = c.split_once('=').map_or(*c, |(k, _)| k).trim();
            let mine = drop(name);
            removed |= mine;
            !mine
        })
        .collect();
    if !removed {
        return None;
    }
    Some(("cookie".into(), (!kept.is_empty()).then(|| kept.join("; "))))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ring(seeds: &[u8]) -> KeyRing {
        let keys: Vec<[u8; 32]> = seeds.iter().map(|s| [*s; 32]).collect();
        KeyRing::new(&keys)
    }

    fn hdrs(cookie: &str) -> Vec<(String, String)> {
        vec![("cookie".to_string(), cookie.to_string())]
    }

    #[test]
    fn sealed_values_open_under_any_key_of_the_ring_and_nothing_else() {
        let old = ring(&[1]);
        let sealed = old.seal("s", b"hello").unwrap();
        assert_eq!(old.open("s", &sealed).unwrap(), b"hello");
        // Rotated: the new key seals, the old one still opens.
        let rotated = ring(&[2, 1]);
        assert_eq!(rotated.open("s", &sealed).unwrap(), b"hello");
        assert!(ring(&[2])
            .open("s", &rotated.seal("s", b"x").unwrap())
            .is_some());
        assert!(ring(&[3]).open("s", &sealed).is_none(), "foreign key set");
        assert!(old.open("t", &sealed).is_none(), "sealed for another name");
        // Every single-character change and every truncation is refused.
        for i in 0..sealed.len() {
            let mut b = sealed.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            assert!(old.open("s", std::str::from_utf8(&b).unwrap()).is_none());
            assert!(old.open("s", &sealed[..i]).is_none());
        }
        assert_ne!(
            old.seal("s", b"hello").unwrap(),
            sealed,
            "fresh nonce each time"
        );
    }

    #[test]
    fn keys_are_32_bytes_of_base64() {
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(KeyRing::decode_key(&k).unwrap(), [7u8; 32]);
        let url = URL_SAFE_NO_PAD.encode([7u8; 32]);
        assert_eq!(KeyRing::decode_key(&url).unwrap(), [7u8; 32]);
        assert_eq!(
            KeyRing::decode_key(&URL_SAFE_NO_PAD.encode([7u8; 16])),
            Err(KeyError::WrongLength(16))
        );
        assert_eq!(KeyRing::decode_key("not base64!"), Err(KeyError::NotBase64));
    }

    #[test]
    fn large_values_split_and_join() {
        let value = "a".repeat(MAX_PIECE * 2 + 10);
        let pieces = split("c", &value).unwrap();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[1].0, "c-1");
        let cookie: Vec<String> = pieces.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let h = hdrs(&format!("other=1; {}", cookie.join("; ")));
        assert_eq!(join(&Request::new(&h), "c").unwrap(), value);
        // A missing piece, or a piece twice, is no value.
        let h = hdrs(&format!("{}; {}", cookie[0], cookie[2]));
        assert!(join(&Request::new(&h), "c").is_none());
        let h = hdrs(&format!("{}; {}", cookie.join("; "), cookie[1]));
        assert!(join(&Request::new(&h), "c").is_none());
        assert!(split("c", &"a".repeat(MAX_PIECE * MAX_PIECES + 1)).is_none());
        let h = hdrs("c=short");
        assert_eq!(join(&Request::new(&h), "c").unwrap(), "short");
    }

    #[test]
    fn stripping_keeps_the_other_cookies() {
        let h = hdrs("a=1; s=2; s-1=3; b=4");
        let mine = |n: &str| n == "s" || n.starts_with("s-");
        assert_eq!(
            strip_cookies(&Request::new(&h), mine),
            Some(("cookie".into(), Some("a=1; b=4".into())))
        );
        let h = hdrs("s=2");
        assert_eq!(
            strip_cookies(&Request::new(&h), mine),
            Some(("cookie".into(), None))
        );
        let h = hdrs("a=1");
        assert_eq!(strip_cookies(&Request::new(&h), mine), None);
    }

    #[test]
    fn cookie_attributes() {
        let a = CookieAttributes {
            secure: true,
            domain: None,
        };
        assert_eq!(
            a.set_cookie("__Host-s", "v", 60),
            "__Host-s=v; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(a.clear_cookie("x").contains("Max-Age=0"));
    }
}

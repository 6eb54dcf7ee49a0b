//! RSA signature verification (RFC 8017: RSASSA-PKCS1-v1_5 and RSASSA-PSS) with Montgomery
//! arithmetic on u32 limbs. The `rsa` crate's 64-bit digits are emulated slowly on wasm32;
//! u32 × u32 → u64 is native there.

use std::cmp::Ordering;
use std::fmt;

/// Digest used inside the PKCS#1 v1.5 encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsaHash {
    /// SHA-256 (RS256, PS256).
    Sha256,
    /// SHA-384 (RS384, PS384).
    Sha384,
    /// SHA-512 (RS512, PS512).
    Sha512,
}

impl RsaHash {
    /// The hash of the parts, concatenated.
    pub fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Vec<u8> {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            d.finalize().to_vec()
        }
        match self {
            RsaHash::Sha256 => run::<sha2::Sha256>(parts),
            RsaHash::Sha384 => run::<sha2::Sha384>(parts),
            RsaHash::Sha512 => run::<sha2::Sha512>(parts),
        }
    }

    /// DER DigestInfo prefix (RFC 8017 §9.2, note 1) and digest length.
    fn prefix(self) -> (&'static [u8], usize) {
        match self {
            RsaHash::Sha256 => (
                &[
                    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x01, 0x05, 0x00, 0x04, 0x20,
                ],
                32,
            ),
            RsaHash::Sha384 => (
                &[
                    0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x02, 0x05, 0x00, 0x04, 0x30,
                ],
                48,
            ),
            RsaHash::Sha512 => (
                &[
                    0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
                    0x02, 0x03, 0x05, 0x00, 0x04, 0x40,
                ],
                64,
            ),
        }
    }
}

/// Why a public key cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RsaKeyError {
    /// The modulus has this many bits, outside the accepted range.
    ModulusSize(usize),
    /// An even modulus is not an RSA modulus (and breaks Montgomery arithmetic).
    EvenModulus,
    /// The public exponent is even, 1, or too large.
    BadExponent,
}

impl fmt::Display for RsaKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RsaKeyError::ModulusSize(bits) => write!(
                f,
                "RSA modulus is {bits} bits; {MIN_BITS} to {MAX_BITS} are accepted"
            ),
            RsaKeyError::EvenModulus => write!(f, "RSA modulus is even, so the key is not valid"),
            RsaKeyError::BadExponent => write!(
                f,
                "RSA public exponent must be odd, at least 3 and at most {MAX_EXP_BYTES} bytes"
            ),
        }
    }
}

impl std::error::Error for RsaKeyError {}

const MIN_BITS: usize = 2048;
const MAX_BITS: usize = 8192;
const MAX_EXP_BYTES: usize = 64;

/// An RSA public key prepared for repeated verification (Montgomery constants precomputed).
#[derive(Clone, Debug)]
pub struct RsaPublicKey {
    /// Modulus, little-endian limbs.
    n: Vec<u32>,
    /// -n^-1 mod 2^32.
    n0inv: u32,
    /// R^2 mod n with R = 2^(32·len(n)): one multiplication moves a value into Montgomery form.
    rr: Vec<u32>,
    /// Exponent, big-endian without leading zeros.
    e: Vec<u8>,
    bits: usize,
}

fn strip(b: &[u8]) -> &[u8] {
    let z = b.iter().take_while(|&&x| x == 0).count();
    &b[z..]
}

fn limbs_from_be(bytes: &[u8], len: usize) -> Vec<u32> {
    let mut out = vec![0u32; len];
    for (i, &b) in bytes.iter().rev().enumerate() {
        out[i / 4] |= u32::from(b) << (8 * (i % 4));
    }
    out
}

fn cmp_limbs(a: &[u32], b: &[u32]) -> Ordering {
    a.iter().rev().cmp(b.iter().rev())
}

/// a -= b, ignoring the final borrow (callers know the true result is non-negative).
fn sub_in_place(a: &mut [u32], b: &[u32]) {
    let mut borrow = false;
    for (x, &y) in a.iter_mut().zip(b) {
        let (d, b1) = x.overflowing_sub(y);
        let (d, b2) = d.overflowing_sub(u32::from(borrow));
        *x = d;
        borrow = b1 || b2;
    }
}

impl RsaPublicKey {
    /// From the big-endian modulus and exponent bytes (JWK `n` and `e` decoded); leading zero bytes allowed.
    pub fn new(n: &[u8], e: &[u8]) -> Result<Self, RsaKeyError> {
        let n = strip(n);
        let bits = n
            .first()
            .map_or(0, |&b| 8 * n.len() - b.leading_zeros() as usize);
        if !(MIN_BITS..=MAX_BITS).contains(&bits) {
            return Err(RsaKeyError::ModulusSize(bits));
        }
        if n[n.len() - 1] & 1 == 0 {
            return Err(RsaKeyError::EvenModulus);
        }
        let e = strip(e);
        if e.is_empty() || e.len() > MAX_EXP_BYTES || e[e.len() - 1] & 1 == 0 || e == [1] {
            return Err(RsaKeyError::BadExponent);
        }
        let len = bits.div_ceil(32);
        let n = limbs_from_be(n, len);
        // Newton's iteration doubles the correct low bits each step; odd n is its own inverse mod 8.
        let mut inv = n[0];
        for _ in 0..4 {
            inv = inv.wrapping_mul(2u32.wrapping_sub(n[0].wrapping_mul(inv)));
        }
        let mut key = RsaPublicKey {
            n,
            n0inv: inv.wrapping_neg(),
            rr: Vec::new(),
            e: e.to_vec(),
            bits,
        };
        // Doubling from 2^(bits-1) < n reaches 2^32·R mod n, i.e. 2^32 in Montgomery form, in at most
        // 64 cheap steps; raising that to the power len then yields R in Montgomery form = R^2 mod n.
        let mut x = vec![0u32; len];
        x[(bits - 1) / 32] = 1 << ((bits - 1) % 32);
        for _ in 0..(32 * len - bits + 1 + 32) {
            let top = x[len - 1] >> 31;
            for i in (1..len).rev() {
                x[i] = (x[i] << 1) | (x[i - 1] >> 31);
            }
            x[0] <<= 1;
            if top != 0 || cmp_limbs(&x, &key.n) != Ordering::Less {
                sub_in_place(&mut x, &key.n);
            }
        }
        key.rr = key.mont_pow(&x, &(len as u32).to_be_bytes());
        Ok(key)
    }

    /// Modulus length in bits.
    pub fn bits(&self) -> usize {
        self.bits
    }

    /// t[..len] = a·b/R mod n. `t` needs len+1 limbs; a and b must be < n.
    fn mont_mul(&self, a: &[u32], b: &[u32], t: &mut [u32]) {
        let l = self.n.len();
        let (n, a, t) = (&self.n[..], &a[..l], &mut t[..=l]);
        t.fill(0);
        // Fused CIOS: two carries keep each u64 sum from overflowing.
        for &bi in &b[..l] {
            let bi = u64::from(bi);
            let x = u64::from(t[0]) + u64::from(a[0]) * bi;
            let m = u64::from((x as u32).wrapping_mul(self.n0inv));
            let mut c1 = x >> 32;
            let mut c2 = (u64::from(x as u32) + m * u64::from(n[0])) >> 32;
            for j in 1..l {
                let x = u64::from(t[j]) + u64::from(a[j]) * bi + c1;
                c1 = x >> 32;
                let y = u64::from(x as u32) + m * u64::from(n[j]) + c2;
                c2 = y >> 32;
                t[j - 1] = y as u32;
            }
            let x = u64::from(t[l]) + c1 + c2;
            t[l - 1] = x as u32;
            t[l] = (x >> 32) as u32;
        }
        if t[l] != 0 || cmp_limbs(&t[..l], n) != Ordering::Less {
            sub_in_place(&mut t[..l], n);
        }
    }

    /// base^exp with base and result in Montgomery form; variable time, as everything here is public.
    fn mont_pow(&self, base: &[u32], exp: &[u8]) -> Vec<u32> {
        let l = self.n.len();
        let mut acc = base.to_vec();
        acc.push(0);
        let mut t = vec![0u32; l + 1];
        let mut started = false;
        for byte in exp {
            for bit in (0..8).rev() {
                let set = (byte >> bit) & 1 == 1;
                if started {
                    self.mont_mul(&acc, &acc, &mut t);
                    std::mem::swap(&mut acc, &mut t);
                    if set {
                        self.mont_mul(&acc, base, &mut t);
                        std::mem::swap(&mut acc, &mut t);
                    }
                }
                started |= set;
            }
        }
        acc.truncate(l);
        acc
    }

    /// s^e mod n for s < n.
    fn public_op(&self, s: &[u32]) -> Vec<u32> {
        let l = self.n.len();
        let mut t = vec![0u32; l + 1];
        self.mont_mul(s, &self.rr, &mut t);
        let mut x = self.mont_pow(&t[..l], &self.e);
        let mut one = vec![0u32; l];
        one[0] = 1;
        self.mont_mul(&x, &one, &mut t);
        x.copy_from_slice(&t[..l]);
        x
    }

    /// s^e mod n as k big-endian bytes (k: the modulus length); `None` when the signature
    /// is not k bytes or not below n.
    fn open(&self, signature: &[u8]) -> Option<Vec<u8>> {
        let k = self.bits.div_ceil(8);
        let l = self.n.len();
        if signature.len() != k {
            return None;
        }
        let s = limbs_from_be(signature, l);
        if cmp_limbs(&s, &self.n) != Ordering::Less {
            return None;
        }
        let x = self.public_op(&s);
        Some(
            (0..k)
                .rev()
                .map(|i| (x[i / 4] >> (8 * (i % 4))) as u8)
                .collect(),
        )
    }

    /// True when `signature` is a valid RSASSA-PKCS1-v1_5 signature of `digest` (already hashed with `hash`).
    pub fn verify_digest(&self, hash: RsaHash, digest: &[u8], signature: &[u8]) -> bool {
        let (prefix, dlen) = hash.prefix();
        if digest.len() != dlen {
            return false;
        }
        let Some(em) = self.open(signature) else {
            return false;
        };
        // Re-encoding and comparing the whole block sidesteps ASN.1 parsing pitfalls (BERserk-style).
        let k = em.len();
        let mut expected = vec![0xffu8; k];
        expected[0] = 0;
        expected[1] = 1;
        let tail = k - dlen;
        expected[tail - prefix.len() - 1] = 0;
        expected[tail - prefix.len()..tail].copy_from_slice(prefix);
        expected[tail..].copy_from_slice(digest);
        em == expected
    }

    /// True when `signature` is a valid RSASSA-PSS signature of `digest` (already hashed with
    /// `hash`), with MGF1 over the same hash and a salt as long as the hash, as JWA's PS256/384/512
    /// require (RFC 7518 §3.5).
    pub fn verify_pss_digest(&self, hash: RsaHash, digest: &[u8], signature: &[u8]) -> bool {
        let h_len = hash.prefix().1;
        let s_len = h_len;
        if digest.len() != h_len {
            return false;
        }
        let Some(full) = self.open(signature) else {
            return false;
        };
        // RFC 8017 §8.1.2 and §9.1.2: EM has emBits = modBits - 1 bits in ceil(emBits/8) bytes.
        let em_bits = self.bits - 1;
        let em_len = em_bits.div_ceil(8);
        let (lead, em) = full.split_at(full.len() - em_len);
        if lead.iter().any(|&b| b != 0) || em_len < h_len + s_len + 2 || em[em_len - 1] != 0xbc {
            return false;
        }
        let (masked_db, rest) = em.split_at(em_len - h_len - 1);
        let h = &rest[..h_len];
        let top_mask = 0xffu8 >> (8 * em_len - em_bits);
        if masked_db[0] & !top_mask != 0 {
            return false;
        }
        let mut db = masked_db.to_vec();
        let mut counter: u32 = 0;
        let mut at = 0;
        while at < db.len() {
            let block = hash.digest(&[h, &counter.to_be_bytes()]);
            db[at..].iter_mut().zip(&block).for_each(|(d, m)| *d ^= m);
            at += block.len();
            counter += 1;
        }
        db[0] &= top_mask;
        let zeros = em_len - h_len - s_len - 2;
        if db[..zeros].iter().any(|&b| b != 0) || db[zeros] != 0x01 {
            return false;
        }
        let salt = &db[zeros + 1..];
        hash.digest(&[&[0u8; 8], digest, salt]) == h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, RngCore, SeedableRng};
    use rsa::traits::PublicKeyParts;
    use rsa::{BigUint, Pkcs1v15Sign, Pss, RsaPrivateKey};
    use sha2::{Digest, Sha256, Sha384, Sha512};

    fn rng() -> StdRng {
        StdRng::seed_from_u64(0x5eed)
    }

    fn ours(k: &RsaPrivateKey) -> RsaPublicKey {
        RsaPublicKey::new(&k.n().to_bytes_be(), &k.e().to_bytes_be()).unwrap()
    }

    fn scheme(h: RsaHash) -> Pkcs1v15Sign {
        match h {
            RsaHash::Sha256 => Pkcs1v15Sign::new::<Sha256>(),
            RsaHash::Sha384 => Pkcs1v15Sign::new::<Sha384>(),
            RsaHash::Sha512 => Pkcs1v15Sign::new::<Sha512>(),
        }
    }

    fn hash(h: RsaHash, msg: &[u8]) -> Vec<u8> {
        match h {
            RsaHash::Sha256 => Sha256::digest(msg).to_vec(),
            RsaHash::Sha384 => Sha384::digest(msg).to_vec(),
            RsaHash::Sha512 => Sha512::digest(msg).to_vec(),
        }
    }

    const HASHES: [RsaHash; 3] = [RsaHash::Sha256, RsaHash::Sha384, RsaHash::Sha512];

    fn check_key(priv_key: &RsaPrivateKey) {
        let key = ours(priv_key);
        assert_eq!(key.bits(), priv_key.n().bits());
        let k = priv_key.size();
        let n = priv_key.n().to_bytes_be();
        for h in HASHES {
            let d = hash(h, b"hello world");
            let sig = priv_key.sign(scheme(h), &d).unwrap();
            assert!(key.verify_digest(h, &d, &sig), "{h:?} {}", key.bits());
            for bit in [0, 1, 7, 8, 100, 8 * k / 2, 8 * k - 9, 8 * k - 1] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!key.verify_digest(h, &d, &bad), "bit {bit}");
            }
            assert!(!key.verify_digest(h, &hash(h, b"hello worle"), &sig));
            for other in HASHES.into_iter().filter(|&o| o != h) {
                let mut d2 = d.clone();
                d2.resize(hash(other, b"").len(), 0);
                assert!(!key.verify_digest(other, &d2, &sig));
                assert!(!key.verify_digest(other, &d, &sig));
            }
            assert!(!key.verify_digest(h, &d, &sig[1..]));
            let mut long = sig.clone();
            long.push(0);
            assert!(!key.verify_digest(h, &d, &long));
            let mut padded = vec![0];
            padded.extend_from_slice(&sig);
            assert!(!key.verify_digest(h, &d, &padded));
            assert!(!key.verify_digest(h, &d, &n));
            let nm1 = (priv_key.n() - 1u32).to_bytes_be();
            assert!(!key.verify_digest(h, &d, &nm1));
            assert!(!key.verify_digest(h, &d, &vec![0u8; k]));
            assert!(!key.verify_digest(h, &d, &vec![0xffu8; k]));
            check_pss(priv_key, &key, h);
        }
    }

    fn pss(h: RsaHash, salt_len: Option<usize>) -> Pss {
        match (h, salt_len) {
            (RsaHash::Sha256, None) => Pss::new::<Sha256>(),
            (RsaHash::Sha384, None) => Pss::new::<Sha384>(),
            (RsaHash::Sha512, None) => Pss::new::<Sha512>(),
            (RsaHash::Sha256, Some(n)) => Pss::new_with_salt::<Sha256>(n),
            (RsaHash::Sha384, Some(n)) => Pss::new_with_salt::<Sha384>(n),
            (RsaHash::Sha512, Some(n)) => Pss::new_with_salt::<Sha512>(n),
        }
    }

    fn check_pss(priv_key: &RsaPrivateKey, key: &RsaPublicKey, h: RsaHash) {
        let mut r = rng();
        let d = hash(h, b"hello pss");
        let k = priv_key.size();
        for _ in 0..3 {
            let sig = priv_key.sign_with_rng(&mut r, pss(h, None), &d).unwrap();
            assert!(key.verify_pss_digest(h, &d, &sig), "{h:?} {}", key.bits());
            assert!(!key.verify_digest(h, &d, &sig), "PSS is not PKCS#1 v1.5");
            for bit in [0, 9, 8 * k / 2, 8 * k - 1] {
                let mut bad = sig.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                assert!(!key.verify_pss_digest(h, &d, &bad), "bit {bit}");
            }
            assert!(!key.verify_pss_digest(h, &hash(h, b"hello psr"), &sig));
            assert!(!key.verify_pss_digest(h, &d, &sig[1..]));
        }
        let pkcs1 = priv_key.sign(scheme(h), &d).unwrap();
        assert!(!key.verify_pss_digest(h, &d, &pkcs1));
        // JWA fixes the salt at the hash's length; other lengths are refused.
        for salt in [0, 20, d.len() + 1] {
            let other = priv_key
                .sign_with_rng(&mut r, pss(h, Some(salt)), &d)
                .unwrap();
            assert!(!key.verify_pss_digest(h, &d, &other), "salt {salt}");
        }
        for other in HASHES.into_iter().filter(|&o| o != h) {
            let sig = priv_key.sign_with_rng(&mut r, pss(h, None), &d).unwrap();
            assert!(!key.verify_pss_digest(other, &hash(other, b"hello pss"), &sig));
        }
    }

    #[test]
    fn rsa_crate_signatures() {
        let mut r = rng();
        for bits in [2048, 2048, 3072, 4096] {
            check_key(&RsaPrivateKey::new(&mut r, bits).unwrap());
        }
    }

    #[test]
    fn exponent_three() {
        let k = RsaPrivateKey::new_with_exp(&mut rng(), 2048, &BigUint::from(3u32)).unwrap();
        assert_eq!(k.e(), &BigUint::from(3u32));
        check_key(&k);
    }

    #[test]
    fn key_validation() {
        let mut r = rng();
        let k = RsaPrivateKey::new(&mut r, 2048).unwrap();
        let n = k.n().to_bytes_be();
        let e = k.e().to_bytes_be();
        let small = RsaPrivateKey::new(&mut r, 1024).unwrap().n().to_bytes_be();
        assert_eq!(
            RsaPublicKey::new(&small, &e).unwrap_err(),
            RsaKeyError::ModulusSize(1024)
        );
        let msg = RsaKeyError::ModulusSize(1024).to_string();
        assert_eq!(msg, "RSA modulus is 1024 bits; 2048 to 8192 are accepted");
        assert_eq!(
            RsaPublicKey::new(&[], &e).unwrap_err(),
            RsaKeyError::ModulusSize(0)
        );
        let mut big = vec![0xff; 1025];
        assert_eq!(
            RsaPublicKey::new(&big, &e).unwrap_err(),
            RsaKeyError::ModulusSize(8200)
        );
        big.truncate(1024);
        assert!(RsaPublicKey::new(&big, &e).is_ok());
        let mut even = n.clone();
        *even.last_mut().unwrap() &= 0xfe;
        assert_eq!(
            RsaPublicKey::new(&even, &e).unwrap_err(),
            RsaKeyError::EvenModulus
        );
        for bad_e in [&[][..], &[0, 0], &[1], &[0, 1], &[2], &[1, 0, 0]] {
            assert_eq!(
                RsaPublicKey::new(&n, bad_e).unwrap_err(),
                RsaKeyError::BadExponent
            );
        }
        assert!(RsaPublicKey::new(&n, &[0xff; 65]).is_err());
        assert!(RsaPublicKey::new(&n, &[0xff; 64]).is_ok());
        let mut n0 = vec![0, 0, 0];
        n0.extend_from_slice(&n);
        let key = RsaPublicKey::new(&n0, &[0, 0, 1, 0, 1]).unwrap();
        assert_eq!(key.bits(), 2048);
        let d = Sha256::digest(b"x");
        let sig = k.sign(Pkcs1v15Sign::new::<Sha256>(), &d).unwrap();
        assert!(key.verify_digest(RsaHash::Sha256, &d, &sig));
    }

    /// Odd bit lengths exercise a partially used top limb and k < 4·limbs.
    #[test]
    fn odd_sizes() {
        let mut r = rng();
        // 2049: PSS's encoded message is one byte shorter than the modulus; 2052, 2056: its
        // top byte has unused bits.
        for bits in [2049, 2052, 2056, 2072, 2088] {
            let k = RsaPrivateKey::new(&mut r, bits).unwrap();
            let key = ours(&k);
            assert_eq!(key.bits(), bits);
            let d = Sha256::digest(b"odd");
            let sig = k.sign(Pkcs1v15Sign::new::<Sha256>(), &d).unwrap();
            assert!(key.verify_digest(RsaHash::Sha256, &d, &sig));
            check_pss(&k, &key, RsaHash::Sha256);
        }
    }

    /// Arbitrary odd moduli (up to 8192 bits, too slow to generate as real keys) against BigUint.
    #[test]
    fn public_op_matches_biguint() {
        let mut r = rng();
        for bytes in [256, 257, 300, 384, 512, 777, 1024] {
            for _ in 0..3 {
                let mut n = vec![0u8; bytes];
                r.fill_bytes(&mut n);
                n[0] |= 0x80;
                n[bytes - 1] |= 1;
                let mut e = vec![0u8; 1 + r.next_u32() as usize % 64];
                r.fill_bytes(&mut e);
                *e.last_mut().unwrap() |= 1;
                for e in [e, vec![3], vec![1, 0, 1]] {
                    let key = RsaPublicKey::new(&n, &e).unwrap();
                    let nb = BigUint::from_bytes_be(&n);
                    let mut s = vec![0u8; bytes];
                    r.fill_bytes(&mut s);
                    for s in [&s[..], &[0], &[1], &[2], &(&nb - 1u32).to_bytes_be()] {
                        let sb = BigUint::from_bytes_be(s) % &nb;
                        let limbs = limbs_from_be(&sb.to_bytes_be(), key.n.len());
                        let want = sb.modpow(&BigUint::from_bytes_be(&e), &nb);
                        let got = key.public_op(&limbs);
                        assert_eq!(got, limbs_from_be(&want.to_bytes_be(), key.n.len()));
                    }
                }
            }
        }
    }

    #[test]
    fn differential() {
        let mut r = rng();
        let k = RsaPrivateKey::new(&mut r, 2048).unwrap();
        let key = ours(&k);
        let pk = k.to_public_key();
        let pad = Pkcs1v15Sign::new::<Sha256>;
        for _ in 0..200 {
            let (mut d, mut other) = ([0u8; 32], [0u8; 32]);
            r.fill_bytes(&mut d);
            r.fill_bytes(&mut other);
            let sig = k.sign(pad(), &d).unwrap();
            let wrong = k.sign(pad(), &other).unwrap();
            for s in [&sig, &wrong] {
                let theirs = pk.verify(pad(), &d, s).is_ok();
                assert_eq!(key.verify_digest(RsaHash::Sha256, &d, s), theirs);
            }
            assert!(key.verify_digest(RsaHash::Sha256, &d, &sig));
            assert!(!key.verify_digest(RsaHash::Sha256, &d, &wrong));
        }
    }
}

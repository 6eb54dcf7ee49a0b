//! The JWS algorithms Portcullis knows, by their registered names (RFC 7518 §3.1).

use std::fmt;
use std::str::FromStr;

/// A JWS signature or MAC algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alg {
    /// HMAC with SHA-256.
    HS256,
    /// HMAC with SHA-384.
    HS384,
    /// HMAC with SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// EdDSA (Ed25519).
    EdDSA,
}

/// Why an `alg` name was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgError {
    /// `none`, in any case: unsigned tokens are never accepted.
    #[error("algorithm \"none\" is never accepted")]
    None,
    /// A name Portcullis does not implement.
    #[error("unsupported algorithm \"{0}\"")]
    Unsupported(String),
}

impl Alg {
    /// Every algorithm, symmetric ones included.
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The default allow-list: asymmetric algorithms only, so a public key can never be
    /// mistaken for an HMAC secret.
    pub const ASYMMETRIC: [Alg; 9] = [
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    /// The registered name, as it appears in a JOSE header.
    pub fn name(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
        }
    }

    /// True for the HMAC algorithms, which need a shared secret.
    pub fn is_symmetric(self) -> bool {
        matches!(self, Alg::HS256 | Alg::HS384 | Alg::HS512)
    }

    /// The JWK `kty` a key for this algorithm must have.
    pub fn key_type(self) -> &'static str {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => "oct",
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => "RSA",
            Alg::ES256 | Alg::ES384 => "EC",
            Alg::EdDSA => "OKP",
        }
    }
}

impl FromStr for Alg {
    type Err = AlgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("none") {
            return Err(AlgError::None);
        }
        Alg::ALL
            .iter()
            .copied()
            .find(|a| a.name() == s)
            .ok_or_else(|| AlgError::Unsupported(s.chars().take(32).collect()))
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Alg::ALL {
            assert_eq!(a.name().parse::<Alg>(), Ok(a));
        }
    }

    #[test]
    fn none_in_any_case_is_refused() {
        for n in ["none", "None", "NONE", "nOnE"] {
            assert_eq!(n.parse::<Alg>(), Err(AlgError::None));
        }
    }

    #[test]
    fn names_are_case_sensitive() {
        assert!(matches!(
            "rs256".parse::<Alg>(),
            Err(AlgError::Unsupported(_))
        ));
        assert!(matches!(
            "ES512".parse::<Alg>(),
            Err(AlgError::Unsupported(_))
        ));
    }
}

//! Randomness for WASI `random_get`. The OS CSPRNG unless a test asks for a seeded generator: a plugin that
//! mints OIDC state, nonces or PKCE verifiers on this host must not be predictable, and only a test wants to
//! replay the same bytes.

/// Where a VM's random bytes come from.
pub trait RandomSource: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError>;
}

/// The OS could not give random bytes.
#[derive(Debug, thiserror::Error)]
#[error("the OS random number generator failed: {0}")]
pub struct RandomError(String);

/// The operating system's CSPRNG (`getrandom`): the default.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsRandom;

impl RandomSource for OsRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        getrandom::fill(buf).map_err(|e| RandomError(e.to_string()))
    }
}

/// A deterministic generator (splitmix64) for tests that need the same bytes on every run. INSECURE: anyone
/// who knows the seed knows every byte; never use it where the plugin's randomness protects something.
#[derive(Debug, Clone)]
pub struct InsecureSeededRandom {
    state: u64,
}

impl InsecureSeededRandom {
    /// A generator that starts from `seed`.
    pub fn new(seed: u64) -> InsecureSeededRandom {
        InsecureSeededRandom { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl RandomSource for InsecureSeededRandom {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), RandomError> {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        Ok(())
    }
}

/// What the builder was asked for; each VM gets its own generator from it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) enum RandomChoice {
    #[default]
    Os,
    InsecureSeeded(u64),
}

impl RandomChoice {
    /// The generator for VM `worker`: seeded ones differ per worker (as before the split) so two VMs do not
    /// mint the same values.
    pub(crate) fn for_worker(self, worker: usize) -> Box<dyn RandomSource> {
        match self {
            RandomChoice::Os => Box::new(OsRandom),
            RandomChoice::InsecureSeeded(seed) => Box::new(InsecureSeededRandom::new(
                seed ^ (worker as u64).wrapping_mul(0x9E37_79B9),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic_and_os_is_not_constant() {
        let (mut a, mut b) = (InsecureSeededRandom::new(7), InsecureSeededRandom::new(7));
        let (mut x, mut y) = ([0u8; 13], [0u8; 13]);
        a.fill(&mut x).unwrap();
        b.fill(&mut y).unwrap();
        assert_eq!(x, y);
        let (mut p, mut q) = ([0u8; 32], [0u8; 32]);
        OsRandom.fill(&mut p).unwrap();
        OsRandom.fill(&mut q).unwrap();
        assert_ne!(
            p, q,
            "two 32-byte draws from the OS are equal only with probability 2^-256"
        );
    }
}

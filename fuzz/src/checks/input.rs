//! A small structured-input format: fuzz bytes read as choices, numbers and
//! length-prefixed strings, and the writer the seed generator encodes seeds with.
//!
//! Reading never fails: past the end every read is zero or empty, so any byte string is a
//! valid input and the fuzzer's mutations always mean something.

/// Reads choices out of fuzz bytes.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte, or 0.
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// A number below `n` (`n` > 0), from one byte.
    pub fn below(&mut self, n: usize) -> usize {
        usize::from(self.byte()) % n.max(1)
    }

    /// One of `items` (not empty).
    pub fn choose<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        let i = self.below(items.len());
        &items[i]
    }

    /// A length-prefixed byte string: one length byte, or 255 and a `u16` length.
    pub fn bytes(&mut self) -> &'a [u8] {
        let len = match self.byte() {
            255 => usize::from(self.u16()),
            n => usize::from(n),
        };
        let (taken, rest) = self.data.split_at(len.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A length-prefixed string (invalid UTF-8 replaced).
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes what [`Input`] reads.
#[derive(Debug, Clone, Default)]
pub struct Output {
    data: Vec<u8>,
}

impl Output {
    /// An empty output.
    pub fn new() -> Output {
        Output::default()
    }

    /// A byte.
    pub fn byte(&mut self, b: u8) -> &mut Output {
        self.data.push(b);
        self
    }

    /// Several bytes, each one choice.
    pub fn choices(&mut self, bytes: &[u8]) -> &mut Output {
        self.data.extend_from_slice(bytes);
        self
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, v: u16) -> &mut Output {
        self.data.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A length-prefixed byte string (at most 65535 bytes).
    pub fn bytes(&mut self, b: &[u8]) -> &mut Output {
        let b = &b[..b.len().min(usize::from(u16::MAX))];
        match u8::try_from(b.len()) {
            Ok(n) if n < 255 => self.data.push(n),
            _ => {
                self.data.push(255);
                // At most u16::MAX, cut above.
                self.data
                    .extend_from_slice(&u16::try_from(b.len()).unwrap_or(u16::MAX).to_le_bytes());
            }
        }
        self.data.extend_from_slice(b);
        self
    }

    /// Raw bytes with no length (for the rest of an input).
    pub fn raw(&mut self, b: &[u8]) -> &mut Output {
        self.data.extend_from_slice(b);
        self
    }

    /// The encoded input.
    pub fn finish(&self) -> Vec<u8> {
        self.data.clone()
    }
}

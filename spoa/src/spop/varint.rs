//! The "peers" varint (haproxy include/haproxy/intops.h) and the byte readers built on it.

use super::SpopError;

/// 4 bits in the first byte plus 7 in each of 9 more cover 64 bits.
const MAX_VARINT_LEN: usize = 10;

/// Appends `v` in haproxy's varint encoding.
pub fn encode_varint(mut v: u64, out: &mut Vec<u8>) {
    if v < 240 {
        out.push(v as u8);
        return;
    }
    out.push(v as u8 | 0xF0);
    v = (v - 240) >> 4;
    while v >= 128 {
        out.push(v as u8 | 0x80);
        v = (v - 128) >> 7;
    }
    out.push(v as u8);
}

/// Reads one varint from the front of `buf` and advances it.
pub fn decode_varint(buf: &mut &[u8]) -> Result<u64, SpopError> {
    let [first] = take_array(buf, "a varint")?;
    if first < 240 {
        return Ok(u64::from(first));
    }
    // u128 holds 10 bytes' worth without wrapping, so overflow is a plain comparison.
    let mut v = u128::from(first);
    let mut shift = 4;
    for _ in 1..MAX_VARINT_LEN {
        let [b] = take_array(buf, "a varint")?;
        v += u128::from(b) << shift;
        if b < 128 {
            return u64::try_from(v).map_err(|_| SpopError::VarintOverflow);
        }
        shift += 7;
    }
    Err(SpopError::VarintOverflow)
}

/// Splits `n` bytes off the front of `buf`.
pub(crate) fn take<'a>(
    buf: &mut &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<&'a [u8], SpopError> {
    let (head, tail) = buf.split_at_checked(n).ok_or(SpopError::Truncated(what))?;
    *buf = tail;
    Ok(head)
}

/// Splits a fixed-size array off the front of `buf`.
pub(crate) fn take_array<const N: usize>(
    buf: &mut &[u8],
    what: &'static str,
) -> Result<[u8; N], SpopError> {
    let mut a = [0; N];
    a.copy_from_slice(take(buf, N, what)?);
    Ok(a)
}

/// Reads a varint length and that many bytes; the length is checked against the input
/// before anything is allocated.
pub(crate) fn get_bytes<'a>(buf: &mut &'a [u8], what: &'static str) -> Result<&'a [u8], SpopError> {
    let n = decode_varint(buf)?;
    take(
        buf,
        usize::try_from(n).map_err(|_| SpopError::Truncated(what))?,
        what,
    )
}

/// Appends a varint length and the bytes.
pub(crate) fn put_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        encode_varint(v, &mut out);
        out
    }

    fn dec(mut bytes: &[u8]) -> Result<u64, SpopError> {
        let v = decode_varint(&mut bytes)?;
        assert!(bytes.is_empty(), "varint left bytes behind");
        Ok(v)
    }

    #[test]
    fn worked_example_and_boundaries() {
        assert_eq!(enc(16380), [0xFC, 0xF0, 0x06]);
        assert_eq!(dec(&[0xFC, 0xF0, 0x06]), Ok(16380));
        for v in 0..240 {
            assert_eq!(enc(v), [v as u8]);
        }
        assert_eq!(enc(240), [0xF0, 0x00]);
        assert_eq!(enc(u64::MAX).len(), MAX_VARINT_LEN);
        let mut values = vec![240, 2287, 2288, 2289, u64::MAX, u64::MAX - 1];
        values.extend((0..64).map(|s| 1u64 << s));
        values.extend((1..64).map(|s| (1u64 << s) - 1));
        for v in values {
            assert_eq!(dec(&enc(v)), Ok(v), "{v}");
        }
    }

    #[test]
    fn refuses_overlong_overflowing_and_truncated() {
        assert_eq!(dec(&[0xFF; 11]), Err(SpopError::VarintOverflow));
        let mut too_big = vec![0xFF; 9];
        too_big.push(0x7F);
        assert_eq!(dec(&too_big), Err(SpopError::VarintOverflow));
        assert_eq!(dec(&[0xF0]), Err(SpopError::Truncated("a varint")));
        assert_eq!(dec(&[]), Err(SpopError::Truncated("a varint")));
    }

    #[test]
    fn huge_length_errors_without_allocating() {
        let mut bytes = enc(1 << 60);
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            get_bytes(&mut bytes.as_slice(), "a name"),
            Err(SpopError::Truncated("a name"))
        );
    }
}

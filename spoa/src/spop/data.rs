//! Typed data (SPOE.txt §3.1): the type in the low 4 bits, flags in the high 4 bits.

use super::varint::{decode_varint, encode_varint, get_bytes, put_bytes, take_array};
use super::SpopError;
use std::net::{Ipv4Addr, Ipv6Addr};

/// BOOL carries its value in this flag rather than in a data byte.
const FLAG_TRUE: u8 = 0x10;

/// One SPOP value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedData {
    /// Type 0; haproxy sends it for a missing or unencodable sample.
    Null,
    /// Type 1.
    Bool(bool),
    /// Type 2.
    Int32(i32),
    /// Type 3.
    Uint32(u32),
    /// Type 4; haproxy sends every integer sample as this.
    Int64(i64),
    /// Type 5.
    Uint64(u64),
    /// Type 6.
    Ipv4(Ipv4Addr),
    /// Type 7.
    Ipv6(Ipv6Addr),
    /// Type 8; raw bytes because haproxy strings need not be UTF-8.
    String(Vec<u8>),
    /// Type 9.
    Binary(Vec<u8>),
}

impl TypedData {
    /// The bytes of a STRING or BINARY.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Self::String(b) | Self::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// Any of the four integer types, if non-negative.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::Int32(v) => u64::try_from(v).ok(),
            Self::Uint32(v) => Some(v.into()),
            Self::Int64(v) => u64::try_from(v).ok(),
            Self::Uint64(v) => Some(v),
            _ => None,
        }
    }

    /// Appends the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Signed values travel as their two's complement u64, as haproxy's encode_varint
        // of a long long does.
        match self {
            Self::Null => out.push(0),
            Self::Bool(b) => out.push(if *b { 1 | FLAG_TRUE } else { 1 }),
            Self::Int32(v) => int(2, i64::from(*v) as u64, out),
            Self::Uint32(v) => int(3, u64::from(*v), out),
            Self::Int64(v) => int(4, *v as u64, out),
            Self::Uint64(v) => int(5, *v, out),
            Self::Ipv4(a) => raw(6, &a.octets(), out),
            Self::Ipv6(a) => raw(7, &a.octets(), out),
            Self::String(b) => prefixed(8, b, out),
            Self::Binary(b) => prefixed(9, b, out),
        }
    }

    /// Reads one value from the front of `buf` and advances it.
    pub fn decode(buf: &mut &[u8]) -> Result<Self, SpopError> {
        let [tag] = take_array(buf, "a typed-data type")?;
        Ok(match tag & 0x0F {
            0 => Self::Null,
            1 => Self::Bool(tag & FLAG_TRUE != 0),
            2 => {
                let raw = decode_varint(buf)?;
                Self::Int32(
                    i32::try_from(raw as i64)
                        .map_err(|_| SpopError::IntOutOfRange("INT32", raw))?,
                )
            }
            3 => {
                let raw = decode_varint(buf)?;
                Self::Uint32(
                    u32::try_from(raw).map_err(|_| SpopError::IntOutOfRange("UINT32", raw))?,
                )
            }
            4 => Self::Int64(decode_varint(buf)? as i64),
            5 => Self::Uint64(decode_varint(buf)?),
            6 => Self::Ipv4(take_array::<4>(buf, "an IPv4 address")?.into()),
            7 => Self::Ipv6(take_array::<16>(buf, "an IPv6 address")?.into()),
            8 => Self::String(get_bytes(buf, "a string value")?.to_vec()),
            9 => Self::Binary(get_bytes(buf, "a binary value")?.to_vec()),
            other => return Err(SpopError::UnknownDataType(other)),
        })
    }
}

fn int(ty: u8, v: u64, out: &mut Vec<u8>) {
    out.push(ty);
    encode_varint(v, out);
}

fn raw(ty: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(ty);
    out.extend_from_slice(bytes);
}

fn prefixed(ty: u8, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(ty);
    put_bytes(bytes, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(d: &TypedData) -> Vec<u8> {
        let mut out = Vec::new();
        d.encode(&mut out);
        out
    }

    fn dec(mut bytes: &[u8]) -> Result<TypedData, SpopError> {
        TypedData::decode(&mut bytes)
    }

    #[test]
    fn every_type_round_trips() {
        let all = [
            TypedData::Null,
            TypedData::Bool(true),
            TypedData::Bool(false),
            TypedData::Int32(i32::MIN),
            TypedData::Int32(-1),
            TypedData::Uint32(u32::MAX),
            TypedData::Int64(i64::MIN),
            TypedData::Uint64(u64::MAX),
            TypedData::Ipv4(Ipv4Addr::new(10, 1, 2, 3)),
            TypedData::Ipv6(Ipv6Addr::LOCALHOST),
            TypedData::String(vec![0xFF, b'a']),
            TypedData::Binary(Vec::new()),
        ];
        for d in all {
            assert_eq!(dec(&enc(&d)), Ok(d.clone()), "{d:?}");
        }
    }

    #[test]
    fn wire_forms() {
        assert_eq!(enc(&TypedData::Bool(true)), [0x11]);
        assert_eq!(enc(&TypedData::Bool(false)), [0x01]);
        // -1 is the 10-byte varint of u64::MAX.
        assert_eq!(enc(&TypedData::Int64(-1)).len(), 11);
        assert_eq!(
            enc(&TypedData::Ipv4(Ipv4Addr::new(1, 2, 3, 4))),
            [6, 1, 2, 3, 4]
        );
        assert_eq!(
            enc(&TypedData::String(b"2.0".to_vec())),
            [8, 3, b'2', b'.', b'0']
        );
    }

    #[test]
    fn refuses_out_of_range_and_unknown() {
        let mut big = vec![2];
        encode_varint(1 << 31, &mut big);
        assert!(matches!(
            dec(&big),
            Err(SpopError::IntOutOfRange("INT32", _))
        ));
        big[0] = 3;
        assert_eq!(dec(&big), Ok(TypedData::Uint32(1 << 31)));
        let mut huge = vec![3];
        encode_varint(1 << 32, &mut huge);
        assert!(matches!(
            dec(&huge),
            Err(SpopError::IntOutOfRange("UINT32", _))
        ));
        assert_eq!(dec(&[0x0A]), Err(SpopError::UnknownDataType(10)));
        assert_eq!(
            dec(&[6, 1, 2]),
            Err(SpopError::Truncated("an IPv4 address"))
        );
    }
}

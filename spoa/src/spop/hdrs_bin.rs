//! The `req.hdrs_bin` sample (haproxy src/http_fetch.c smp_fetch_hdrs_bin).

use super::varint::get_bytes;
use super::SpopError;

/// One header as raw bytes: haproxy lower-cases the name, the value is verbatim.
pub type Header = (Vec<u8>, Vec<u8>);

/// Decodes `req.hdrs_bin`: `<varint len><name><varint len><value>` per header, in order and
/// with duplicates, ended by an empty name and value (`00 00`).
///
/// The end marker is required and nothing may follow it: haproxy always writes it and sends
/// NULL instead when the headers do not fit, so a value without it was cut or forged.
pub fn decode_hdrs_bin(bytes: &[u8]) -> Result<Vec<Header>, SpopError> {
    let mut buf = bytes;
    let mut headers = Vec::new();
    loop {
        if buf.is_empty() {
            return Err(SpopError::BadHdrsBin("no 00 00 end marker"));
        }
        let cut = |e| match e {
            SpopError::Truncated(_) => SpopError::BadHdrsBin("a length runs past the end"),
            e => e,
        };
        let name = get_bytes(&mut buf, "a header name").map_err(cut)?;
        let value = get_bytes(&mut buf, "a header value").map_err(cut)?;
        if name.is_empty() && value.is_empty() {
            break;
        }
        headers.push((name.to_vec(), value.to_vec()));
    }
    if !buf.is_empty() {
        return Err(SpopError::BadHdrsBin("bytes after the 00 00 end marker"));
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_in_order_with_duplicates() {
        let wire = b"\x04host\x09a.example\x06cookie\x01a\x06cookie\x01b\x00\x00";
        let h = |n: &str, v: &str| (n.as_bytes().to_vec(), v.as_bytes().to_vec());
        assert_eq!(
            decode_hdrs_bin(wire),
            Ok(vec![
                h("host", "a.example"),
                h("cookie", "a"),
                h("cookie", "b")
            ])
        );
        assert_eq!(decode_hdrs_bin(b"\x00\x00"), Ok(Vec::new()));
        // An empty value is a header; only empty name AND value end the list.
        assert_eq!(decode_hdrs_bin(b"\x01x\x00\x00\x00"), Ok(vec![h("x", "")]));
    }

    #[test]
    fn refuses_missing_marker_garbage_and_overruns() {
        let missing = Err(SpopError::BadHdrsBin("no 00 00 end marker"));
        assert_eq!(decode_hdrs_bin(b""), missing);
        assert_eq!(decode_hdrs_bin(b"\x01x\x01y"), missing);
        assert_eq!(
            decode_hdrs_bin(b"\x00\x00\x01"),
            Err(SpopError::BadHdrsBin("bytes after the 00 00 end marker"))
        );
        assert_eq!(
            decode_hdrs_bin(b"\x05x"),
            Err(SpopError::BadHdrsBin("a length runs past the end"))
        );
        assert_eq!(
            decode_hdrs_bin(b"\x00"),
            Err(SpopError::BadHdrsBin("a length runs past the end"))
        );
    }
}

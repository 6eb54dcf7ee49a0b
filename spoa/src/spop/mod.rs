//! The SPOP wire protocol (HAProxy's SPOE, protocol version 2.0), sans-IO.
//!
//! A connection reads a 4-byte length with [`frame_length`], then exactly that many bytes,
//! and hands them to [`decode_frame`]; replies come from [`encode_frame`] as one buffer to
//! write in one call (haproxy 3.2.22 resets connections whose AGENT-HELLO arrives split).
//! Fragmentation is not supported: fragments are refused with
//! [`SpopError::FragmentationNotSupported`], so never announce the "fragmentation"
//! capability.
//!
//! - `varint`: the "peers" variable-length integer and length-prefixed bytes.
//! - `data`: typed data (the 10 value types).
//! - `frame`: frames, their payloads and the handshake helpers.
//! - `hdrs_bin`: the `req.hdrs_bin` sample's encoding.
//! - `error`: [`SpopError`] and the [`SpopStatus`] codes sent in DISCONNECT.

mod varint;
mod data;
mod frame;
mod hdrs_bin;
mod error;

pub use data::TypedData;
pub use error::{SpopError, SpopStatus};
pub use frame::{
    agent_hello, decode_frame, disconnect, encode_frame, frame_length, Action, Frame, HaproxyHello,
    KvList, Message, VarScope,
};
pub use hdrs_bin::{decode_hdrs_bin, Header};
pub use varint::{decode_varint, encode_varint};

/// The only SPOP version this codec speaks (haproxy 2.6 to 3.x announce only this one).
pub const SPOP_VERSION: &str = "2.0";

/// The smallest max-frame-size SPOP allows either peer to announce.
pub const MIN_FRAME_SIZE: u32 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn samples() -> Vec<Vec<u8>> {
        let notify = Frame::Notify {
            stream_id: 7,
            frame_id: 1,
            messages: vec![Message {
                name: b"pc-msg".to_vec(),
                args: vec![
                    (b"method".to_vec(), TypedData::String(b"GET".to_vec())),
                    (
                        b"src".to_vec(),
                        TypedData::Ipv6(std::net::Ipv6Addr::LOCALHOST),
                    ),
                    (Vec::new(), TypedData::Int64(-5)),
                ],
            }],
        };
        let ack = Frame::Ack {
            stream_id: 7,
            frame_id: 1,
            actions: vec![Action::SetVar {
                scope: VarScope::Transaction,
                name: "allow".into(),
                value: TypedData::Bool(true),
            }],
        };
        let frames = [
            agent_hello(16380, &["pipelining"]),
            disconnect(SpopStatus::Timeout, "bye"),
            notify,
            ack,
        ];
        frames
            .iter()
            .map(|f| encode_frame(f, 16380).unwrap()[4..].to_vec())
            .collect()
    }

    #[test]
    fn no_input_panics() {
        for body in samples() {
            assert!(decode_frame(&body).is_ok());
            for cut in 0..body.len() {
                // Whatever a cut-off frame decodes to, it must come back as a value.
                let _ = decode_frame(&body[..cut]);
                let _ = decode_hdrs_bin(&body[..cut]);
            }
        }
        let mut state = 0x9E37_79B9_7F4A_7C15;
        for i in 0..20_000 {
            let len = (xorshift(&mut state) % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            // Half the inputs get a valid type and FIN so the payload decoders are reached.
            if i % 2 == 0 && bytes.len() > 5 {
                bytes[0] = [1, 2, 3, 101, 102, 103][i % 6];
                bytes[1..5].copy_from_slice(&1u32.to_be_bytes());
            }
            let _ = decode_frame(&bytes);
            let _ = decode_hdrs_bin(&bytes);
            let _ = decode_varint(&mut bytes.as_slice());
        }
    }
}

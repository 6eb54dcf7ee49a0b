//! Frames (SPOE.txt §3.2): `<TYPE:1><FLAGS:4 BE><STREAM-ID:varint><FRAME-ID:varint><PAYLOAD>`.

use super::varint::{decode_varint, encode_varint, get_bytes, put_bytes, take_array};
use super::{SpopError, SpopStatus, TypedData, MIN_FRAME_SIZE, SPOP_VERSION};

const FLAG_FIN: u32 = 1;
const FLAG_ABORT: u32 = 2;
/// haproxy 2.6 gives the 2nd..Nth fragment of a payload this type.
const TYPE_UNSET: u8 = 0;
const ACTION_SET_VAR: u8 = 1;
const ACTION_UNSET_VAR: u8 = 2;

/// The payload of HELLO and DISCONNECT frames: names (no type byte) and typed values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvList(pub Vec<(String, TypedData)>);

impl KvList {
    /// The first value stored under `name`.
    pub fn get(&self, name: &str) -> Option<&TypedData> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    fn decode(mut buf: &[u8]) -> Result<Self, SpopError> {
        let mut kv = Vec::new();
        while !buf.is_empty() {
            // Lossy: every key SPOE defines is ASCII, so an invalid one is never looked up.
            let key = String::from_utf8_lossy(get_bytes(&mut buf, "a KV name")?).into_owned();
            kv.push((key, TypedData::decode(&mut buf)?));
        }
        Ok(Self(kv))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for (k, v) in &self.0 {
            put_bytes(k.as_bytes(), out);
            v.encode(out);
        }
    }
}

/// One SPOE message of a NOTIFY; arg names may be empty (unnamed args) or repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The `spoe-message` name.
    pub name: Vec<u8>,
    /// The arguments in the order haproxy sent them.
    pub args: Vec<(Vec<u8>, TypedData)>,
}

impl Message {
    /// The first argument called `name`.
    pub fn arg(&self, name: &str) -> Option<&TypedData> {
        self.args
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

/// The scope of a variable an ACK sets (haproxy prefixes it to the var name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VarScope {
    /// `proc.`
    Process = 0,
    /// `sess.`
    Session = 1,
    /// `txn.`
    Transaction = 2,
    /// `req.`
    Request = 3,
    /// `res.`
    Response = 4,
}

impl VarScope {
    fn from_byte(b: u8) -> Result<Self, SpopError> {
        let all = [
            Self::Process,
            Self::Session,
            Self::Transaction,
            Self::Request,
            Self::Response,
        ];
        all.get(usize::from(b))
            .copied()
            .ok_or(SpopError::UnknownVarScope(b))
    }
}

/// One ACK action: the only two SPOP has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sets `<scope>.<var-prefix>.<name>`; haproxy truncates the whole name at 63 bytes.
    SetVar {
        /// The variable's scope.
        scope: VarScope,
        /// The name after the var-prefix.
        name: String,
        /// The value; NULL makes haproxy unset the variable.
        value: TypedData,
    },
    /// Unsets `<scope>.<var-prefix>.<name>`.
    UnsetVar {
        /// The variable's scope.
        scope: VarScope,
        /// The name after the var-prefix.
        name: String,
    },
}

impl Action {
    fn decode(buf: &mut &[u8]) -> Result<Self, SpopError> {
        let [action, got] = take_array(buf, "an action header")?;
        let expected = match action {
            ACTION_SET_VAR => 3,
            ACTION_UNSET_VAR => 2,
            other => return Err(SpopError::UnknownActionType(other)),
        };
        if got != expected {
            return Err(SpopError::BadActionArgs(action, got));
        }
        let [scope] = take_array(buf, "a variable scope")?;
        let scope = VarScope::from_byte(scope)?;
        let name = String::from_utf8_lossy(get_bytes(buf, "a variable name")?).into_owned();
        Ok(if action == ACTION_SET_VAR {
            Self::SetVar {
                scope,
                name,
                value: TypedData::decode(buf)?,
            }
        } else {
            Self::UnsetVar { scope, name }
        })
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (scope, name) = match self {
            Self::SetVar { scope, name, .. } => {
                out.extend_from_slice(&[ACTION_SET_VAR, 3]);
                (scope, name)
            }
            Self::UnsetVar { scope, name } => {
                out.extend_from_slice(&[ACTION_UNSET_VAR, 2]);
                (scope, name)
            }
        };
        out.push(*scope as u8);
        put_bytes(name.as_bytes(), out);
        if let Self::SetVar { value, .. } = self {
            value.encode(out);
        }
    }
}

/// A complete (FIN) SPOP frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Type 1: haproxy opens the handshake.
    HaproxyHello {
        /// See [`HaproxyHello::from_kv`].
        kv: KvList,
    },
    /// Type 2: haproxy closes; answer with an AGENT-DISCONNECT, then close.
    HaproxyDisconnect {
        /// "status-code" and "message".
        kv: KvList,
    },
    /// Type 3: messages to process; every message of one event or group is in one frame.
    Notify {
        /// Echoed in the ACK.
        stream_id: u64,
        /// Echoed in the ACK.
        frame_id: u64,
        /// The messages, in order.
        messages: Vec<Message>,
    },
    /// Type 101: the agent's handshake reply; build it with [`agent_hello`].
    AgentHello {
        /// "version", "max-frame-size", "capabilities".
        kv: KvList,
    },
    /// Type 102: the agent closes; build it with [`disconnect`].
    AgentDisconnect {
        /// "status-code" and "message".
        kv: KvList,
    },
    /// Type 103: the reply to a NOTIFY.
    Ack {
        /// The NOTIFY's stream id.
        stream_id: u64,
        /// The NOTIFY's frame id.
        frame_id: u64,
        /// Applied in order; haproxy drops the rest after a malformed one.
        actions: Vec<Action>,
    },
}

/// Checks a frame's 4-byte big-endian length prefix and returns how many bytes to read next.
pub fn frame_length(prefix: [u8; 4], max_frame_size: u32) -> Result<usize, SpopError> {
    match u32::from_be_bytes(prefix) {
        0 => Err(SpopError::EmptyFrame),
        n if n > max_frame_size => Err(SpopError::FrameTooBig {
            size: n.into(),
            max: max_frame_size,
        }),
        n => Ok(n as usize),
    }
}

/// Decodes one frame body (the bytes after the length prefix).
pub fn decode_frame(body: &[u8]) -> Result<Frame, SpopError> {
    let mut buf = body;
    let [ty] = take_array(&mut buf, "the frame type")?;
    let flags = u32::from_be_bytes(take_array(&mut buf, "the frame flags")?);
    let stream_id = decode_varint(&mut buf)?;
    let frame_id = decode_varint(&mut buf)?;
    if flags & FLAG_ABORT != 0 {
        return Err(SpopError::Aborted {
            stream_id,
            frame_id,
        });
    }
    if ty == TYPE_UNSET || flags & FLAG_FIN == 0 {
        return Err(SpopError::FragmentationNotSupported);
    }
    Ok(match ty {
        1 => Frame::HaproxyHello {
            kv: KvList::decode(buf)?,
        },
        2 => Frame::HaproxyDisconnect {
            kv: KvList::decode(buf)?,
        },
        3 => {
            let mut messages = Vec::new();
            while !buf.is_empty() {
                let name = get_bytes(&mut buf, "a message name")?.to_vec();
                let [nb_args] = take_array(&mut buf, "NB-ARGS")?;
                let mut args = Vec::new();
                for _ in 0..nb_args {
                    let arg = get_bytes(&mut buf, "an argument name")?.to_vec();
                    args.push((arg, TypedData::decode(&mut buf)?));
                }
                messages.push(Message { name, args });
            }
            Frame::Notify {
                stream_id,
                frame_id,
                messages,
            }
        }
        101 => Frame::AgentHello {
            kv: KvList::decode(buf)?,
        },
        102 => Frame::AgentDisconnect {
            kv: KvList::decode(buf)?,
        },
        103 => {
            let mut actions = Vec::new();
            while !buf.is_empty() {
                actions.push(Action::decode(&mut buf)?);
            }
            Frame::Ack {
                stream_id,
                frame_id,
                actions,
            }
        }
        other => return Err(SpopError::UnknownFrameType(other)),
    })
}

/// Encodes a frame with FIN set and its length prefix, ready for one `write_all`; refuses a
/// body over `max_frame_size`.
pub fn encode_frame(frame: &Frame, max_frame_size: u32) -> Result<Vec<u8>, SpopError> {
    let (ty, stream_id, frame_id) = match frame {
        Frame::HaproxyHello { .. } => (1, 0, 0),
        Frame::HaproxyDisconnect { .. } => (2, 0, 0),
        Frame::Notify {
            stream_id,
            frame_id,
            ..
        } => (3, *stream_id, *frame_id),
        Frame::AgentHello { .. } => (101, 0, 0),
        Frame::AgentDisconnect { .. } => (102, 0, 0),
        Frame::Ack {
            stream_id,
            frame_id,
            ..
        } => (103, *stream_id, *frame_id),
    };
    let mut out = vec![0, 0, 0, 0, ty];
    out.extend_from_slice(&FLAG_FIN.to_be_bytes());
    encode_varint(stream_id, &mut out);
    encode_varint(frame_id, &mut out);
    match frame {
        Frame::HaproxyHello { kv }
        | Frame::HaproxyDisconnect { kv }
        | Frame::AgentHello { kv }
        | Frame::AgentDisconnect { kv } => kv.encode(&mut out),
        Frame::Notify { messages, .. } => {
            for m in messages {
                put_bytes(&m.name, &mut out);
                out.push(
                    u8::try_from(m.args.len()).map_err(|_| SpopError::TooManyArgs(m.args.len()))?,
                );
                for (name, value) in &m.args {
                    put_bytes(name, &mut out);
                    value.encode(&mut out);
                }
            }
        }
        Frame::Ack { actions, .. } => actions.iter().for_each(|a| a.encode(&mut out)),
    }
    let size = out.len() - 4;
    let len = u32::try_from(size)
        .ok()
        .filter(|n| *n <= max_frame_size)
        .ok_or(SpopError::FrameTooBig {
            size: size as u64,
            max: max_frame_size,
        })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// The fields of a HAPROXY-HELLO (SPOE.txt §3.2.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyHello {
    /// The versions haproxy offers; [`HaproxyHello::from_kv`] ensures "2.0" is among them.
    pub supported_versions: Vec<String>,
    /// haproxy's limit; the agent announces at most this.
    pub max_frame_size: u32,
    /// haproxy's capabilities, possibly none.
    pub capabilities: Vec<String>,
    /// A health check: reply AGENT-HELLO, then the connection may be closed.
    pub healthcheck: bool,
    /// Groups the connections of one haproxy engine.
    pub engine_id: Option<String>,
}

impl HaproxyHello {
    /// Reads the hello's keys; missing or unusable ones give the error whose status SPOE
    /// says to disconnect with.
    pub fn from_kv(kv: &KvList) -> Result<Self, SpopError> {
        let supported_versions =
            list(&string(kv, "supported-versions")?.ok_or(SpopError::NoVersion)?);
        if !supported_versions.iter().any(|v| v == SPOP_VERSION) {
            return Err(SpopError::UnsupportedVersion(supported_versions.join(",")));
        }
        let max_frame_size = kv.get("max-frame-size").ok_or(SpopError::NoMaxFrameSize)?;
        let max_frame_size = max_frame_size
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(SpopError::HelloValueType("max-frame-size", "UINT32"))?;
        if max_frame_size < MIN_FRAME_SIZE {
            return Err(SpopError::BadMaxFrameSize(max_frame_size));
        }
        let capabilities = list(&string(kv, "capabilities")?.ok_or(SpopError::NoCapabilities)?);
        let healthcheck = match kv.get("healthcheck") {
            None => false,
            Some(TypedData::Bool(b)) => *b,
            Some(_) => return Err(SpopError::HelloValueType("healthcheck", "BOOL")),
        };
        let engine_id = string(kv, "engine-id")?;
        Ok(Self {
            supported_versions,
            max_frame_size,
            capabilities,
            healthcheck,
            engine_id,
        })
    }

    /// Whether haproxy announced `name`.
    pub fn has_capability(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }
}

fn string(kv: &KvList, key: &'static str) -> Result<Option<String>, SpopError> {
    match kv.get(key) {
        None => Ok(None),
        Some(TypedData::String(b)) => Ok(Some(String::from_utf8_lossy(b).into_owned())),
        Some(_) => Err(SpopError::HelloValueType(key, "STRING")),
    }
}

/// SPOE lists are comma-separated and "spaces must be ignored".
fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// The AGENT-HELLO announcing version 2.0, `max_frame_size` and `capabilities`.
pub fn agent_hello(max_frame_size: u32, capabilities: &[&str]) -> Frame {
    Frame::AgentHello {
        kv: KvList(vec![
            ("version".into(), TypedData::String(SPOP_VERSION.into())),
            ("max-frame-size".into(), TypedData::Uint32(max_frame_size)),
            (
                "capabilities".into(),
                TypedData::String(capabilities.join(",").into_bytes()),
            ),
        ]),
    }
}

/// The AGENT-DISCONNECT carrying `status` and a human-readable `message`.
pub fn disconnect(status: SpopStatus, message: &str) -> Frame {
    Frame::AgentDisconnect {
        kv: KvList(vec![
            ("status-code".into(), TypedData::Uint32(status.code())),
            ("message".into(), TypedData::String(message.into())),
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings are written `"text"`, everything else is hex.
    fn bytes(spec: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, part) in spec.split('"').enumerate() {
            if i % 2 == 1 {
                out.extend_from_slice(part.as_bytes());
            } else {
                let hex: String = part.split_whitespace().collect();
                out.extend(
                    (0..hex.len())
                        .step_by(2)
                        .map(|j| u8::from_str_radix(&hex[j..j + 2], 16).unwrap()),
                );
            }
        }
        out
    }

    fn round_trip(frame: &Frame) {
        let wire = encode_frame(frame, 16380).unwrap();
        let len = frame_length(wire[..4].try_into().unwrap(), 16380).unwrap();
        assert_eq!(len, wire.len() - 4);
        assert_eq!(&decode_frame(&wire[4..]).unwrap(), frame);
    }

    #[test]
    fn minimal_agent_hello_is_byte_exact() {
        let expected = bytes(
            r#"00000036 65 00000001 0000 07"version" 08 03"2.0" 0E"max-frame-size" 03 FCF0 06
               0C"capabilities" 08 00"#,
        );
        assert_eq!(
            encode_frame(&agent_hello(16380, &[]), 16380).unwrap(),
            expected
        );
        round_trip(&agent_hello(16380, &["pipelining", "async"]));
    }

    #[test]
    fn healthcheck_hello_decodes() {
        // The 82-byte hello of `option spop-check`.
        let wire = bytes(
            r#"0000004E 01 00000001 0000 12"supported-versions" 08 03"2.0" 0E"max-frame-size"
               03 FCF0 06 0C"capabilities" 08 00 0B"healthcheck" 11"#,
        );
        assert_eq!(wire.len(), 82);
        let Frame::HaproxyHello { kv } = decode_frame(&wire[4..]).unwrap() else {
            panic!("not a hello")
        };
        let hello = HaproxyHello::from_kv(&kv).unwrap();
        assert!(hello.healthcheck);
        assert_eq!(hello.max_frame_size, 16380);
        assert!(hello.capabilities.is_empty());
        assert_eq!(hello.supported_versions, ["2.0"]);
        assert_eq!(hello.engine_id, None);
    }

    #[test]
    fn hello_errors_carry_spop_statuses() {
        let s = |v: &str| TypedData::String(v.as_bytes().to_vec());
        let keys = [
            "supported-versions",
            "max-frame-size",
            "capabilities",
            "engine-id",
        ];
        let values = [
            s(" 2.0 , 1.0"),
            TypedData::Uint32(16380),
            s("pipelining,async"),
            s("e1"),
        ];
        let full = KvList(keys.map(String::from).into_iter().zip(values).collect());
        let hello = HaproxyHello::from_kv(&full).unwrap();
        assert!(hello.has_capability("async") && !hello.healthcheck);
        assert_eq!(hello.engine_id.as_deref(), Some("e1"));
        // Replaces key `i`'s value, or removes the key when given none.
        let status = |i: usize, value: Option<TypedData>| {
            let mut kv = full.clone();
            match value {
                Some(v) => kv.0[i].1 = v,
                None => drop(kv.0.remove(i)),
            }
            HaproxyHello::from_kv(&kv).unwrap_err().status().code()
        };
        assert_eq!(status(0, None), 5);
        assert_eq!(status(1, None), 6);
        assert_eq!(status(2, None), 7);
        assert_eq!(status(0, Some(s("1.0"))), 8);
        assert_eq!(status(1, Some(TypedData::Uint32(255))), 9);
        assert_eq!(status(1, Some(TypedData::Null)), 4);
    }

    #[test]
    fn notify_with_two_messages_and_unnamed_args_round_trips() {
        round_trip(&Frame::Notify {
            stream_id: 3,
            frame_id: 1,
            messages: vec![
                Message {
                    name: b"pc-msg".to_vec(),
                    args: vec![
                        (Vec::new(), TypedData::String(b"GET".to_vec())),
                        (Vec::new(), TypedData::Null),
                        (b"hdrs".to_vec(), TypedData::Binary(vec![0, 0])),
                    ],
                },
                Message {
                    name: b"other".to_vec(),
                    args: Vec::new(),
                },
            ],
        });
    }

    #[test]
    fn ack_with_set_and_unset_round_trips() {
        let ack = Frame::Ack {
            stream_id: 3,
            frame_id: 1,
            actions: vec![
                Action::SetVar {
                    scope: VarScope::Transaction,
                    name: "allow".into(),
                    value: TypedData::Bool(true),
                },
                Action::UnsetVar {
                    scope: VarScope::Request,
                    name: "err".into(),
                },
            ],
        };
        let wire = encode_frame(&ack, 16380).unwrap();
        assert_eq!(
            wire[4..],
            bytes(r#"67 00000001 03 01 01 03 02 05"allow" 11 02 02 03 03"err""#)
        );
        round_trip(&ack);
    }

    #[test]
    fn disconnect_carries_status_and_message() {
        let Frame::AgentDisconnect { kv } = disconnect(SpopStatus::FrameTooBig, "too big") else {
            panic!()
        };
        assert_eq!(kv.get("status-code"), Some(&TypedData::Uint32(3)));
        round_trip(&Frame::HaproxyDisconnect { kv });
    }

    #[test]
    fn sizes_are_enforced() {
        let big = disconnect(SpopStatus::Normal, &"x".repeat(300));
        assert!(matches!(
            encode_frame(&big, 256),
            Err(SpopError::FrameTooBig { max: 256, .. })
        ));
        let exact = encode_frame(&agent_hello(16380, &[]), 0x36).unwrap();
        assert_eq!(exact.len(), 0x36 + 4);
        assert!(encode_frame(&agent_hello(16380, &[]), 0x35).is_err());
        assert_eq!(
            frame_length([0, 0, 0, 0], 16380),
            Err(SpopError::EmptyFrame)
        );
        assert_eq!(
            frame_length([0, 0, 0x40, 0], 16380)
                .unwrap_err()
                .status()
                .code(),
            3
        );
        assert_eq!(frame_length([0, 0, 0x3F, 0xFC], 16380), Ok(16380));
        let args = vec![(Vec::new(), TypedData::Null); 256];
        let notify = Frame::Notify {
            stream_id: 1,
            frame_id: 1,
            messages: vec![Message {
                name: Vec::new(),
                args,
            }],
        };
        assert_eq!(
            encode_frame(&notify, 16380),
            Err(SpopError::TooManyArgs(256))
        );
    }

    #[test]
    fn fragments_aborts_and_unknown_types() {
        assert_eq!(
            decode_frame(&bytes("03 00000000 01 01")),
            Err(SpopError::FragmentationNotSupported)
        );
        assert_eq!(
            decode_frame(&bytes("00 00000001 01 01")),
            Err(SpopError::FragmentationNotSupported)
        );
        assert_eq!(
            decode_frame(&bytes("03 00000003 05 02")),
            Err(SpopError::Aborted {
                stream_id: 5,
                frame_id: 2
            })
        );
        assert_eq!(
            decode_frame(&bytes("32 00000001 00 00")),
            Err(SpopError::UnknownFrameType(0x32))
        );
        assert_eq!(
            decode_frame(&bytes("67 00000001 01 01 07 03")),
            Err(SpopError::UnknownActionType(7))
        );
        assert!(matches!(
            decode_frame(&bytes("67 00000001 01 01 01 02")),
            Err(SpopError::BadActionArgs(1, 2))
        ));
        assert_eq!(
            decode_frame(&bytes("67 00000001 01 01 02 02 09")),
            Err(SpopError::UnknownVarScope(9))
        );
        // A message name claiming 2^60 bytes fails on the length check, before allocating.
        let mut notify = bytes("03 00000001 01 01");
        encode_varint(1 << 60, &mut notify);
        assert_eq!(
            decode_frame(&notify),
            Err(SpopError::Truncated("a message name"))
        );
    }
}

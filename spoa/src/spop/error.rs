//! Codec errors and the SPOP status codes (SPOE.txt §3.5) they map to.

/// Defines [`SpopStatus`] from one table so code, doc and reason cannot drift apart.
macro_rules! statuses {
    ($($name:ident = $code:literal, $reason:literal;)*) => {
        /// A SPOP status code, sent as "status-code" in a DISCONNECT frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SpopStatus {
            $(#[doc = $reason] $name = $code,)*
        }

        impl SpopStatus {
            /// The status for a received code; codes an agent defines itself have none.
            pub fn from_code(code: u32) -> Option<Self> {
                match code {
                    $($code => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// SPOE.txt's wording for the code, fit for DISCONNECT's "message".
            pub fn reason(self) -> &'static str {
                match self {
                    $(Self::$name => $reason,)*
                }
            }
        }
    };
}

statuses! {
    Normal = 0, "normal";
    Io = 1, "I/O error";
    Timeout = 2, "a timeout occurred";
    FrameTooBig = 3, "frame is too big";
    InvalidFrame = 4, "invalid frame received";
    NoVersion = 5, "version value not found";
    NoMaxFrameSize = 6, "max-frame-size value not found";
    NoCapabilities = 7, "capabilities value not found";
    UnsupportedVersion = 8, "unsupported version";
    BadMaxFrameSize = 9, "max-frame-size too big or too small";
    FragmentationNotSupported = 10, "payload fragmentation is not supported";
    InvalidInterlacedFrames = 11, "invalid interlaced frames";
    FrameIdNotFound = 12, "frame-id not found (it matches no frame in flight)";
    ResourceAllocation = 13, "resource allocation error";
    Unknown = 99, "an unknown error occurred";
}

impl SpopStatus {
    /// The code as it travels on the wire.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Why bytes could not be decoded or a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpopError {
    /// The input ended inside the named field.
    #[error("SPOP input ends inside {0}: the peer sent a cut-off or malformed frame")]
    Truncated(&'static str),
    /// A varint ran past 10 bytes or above `u64::MAX`.
    #[error("SPOP varint is longer than 10 bytes or exceeds u64::MAX: the peer is not speaking SPOP 2.0")]
    VarintOverflow,
    /// A typed-data type nibble outside 0..=9.
    #[error("unknown SPOP typed-data type {0}: the peer speaks another protocol version")]
    UnknownDataType(u8),
    /// An INT32 or UINT32 (named first) whose varint (second) does not fit the type.
    #[error("SPOP {0} value {1:#x} is out of range for its type")]
    IntOutOfRange(&'static str, u64),
    /// A frame type this codec does not know; SPOE 2.0 allows skipping it.
    #[error("unknown SPOP frame type {0}: skip the frame or close with status 4")]
    UnknownFrameType(u8),
    /// An ACK action type other than set-var (1) and unset-var (2).
    #[error("unknown SPOP action type {0}: only set-var (1) and unset-var (2) exist")]
    UnknownActionType(u8),
    /// An action (type first) whose NB-ARGS (second) is not the one its type requires.
    #[error("SPOP action type {0} has {1} arguments, set-var needs 3 and unset-var 2")]
    BadActionArgs(u8, u8),
    /// A variable scope byte outside 0..=4.
    #[error("unknown SPOP variable scope {0}: valid scopes are 0 (proc) to 4 (res)")]
    UnknownVarScope(u8),
    /// A message to encode has more arguments than NB-ARGS (one byte) can count.
    #[error("SPOP message has {0} arguments, at most 255 fit: split it into several messages")]
    TooManyArgs(usize),
    /// A frame length of zero.
    #[error("SPOP frame length is 0: the peer is not speaking SPOP")]
    EmptyFrame,
    /// A frame over the negotiated max-frame-size.
    #[error(
        "SPOP frame of {size} bytes exceeds max-frame-size {max}: raise max-frame-size \
         (and tune.bufsize) or send less data per message"
    )]
    FrameTooBig {
        /// The frame's length, without the 4-byte prefix.
        size: u64,
        /// The limit it broke.
        max: u32,
    },
    /// A fragment (no FIN flag, or type 0).
    #[error(
        "haproxy sent a fragmented SPOP frame, which this agent does not support: set \
         `no option send-frag-payload` in the spoe-agent section (haproxy 2.6)"
    )]
    FragmentationNotSupported,
    /// haproxy aborted a frame (ABORT flag); not a connection error.
    #[error("haproxy aborted frame {frame_id} of stream {stream_id}: drop it and send no ACK")]
    Aborted {
        /// The aborted frame's stream.
        stream_id: u64,
        /// The aborted frame.
        frame_id: u64,
    },
    /// HAPROXY-HELLO without "supported-versions".
    #[error("HAPROXY-HELLO has no \"supported-versions\"")]
    NoVersion,
    /// HAPROXY-HELLO without "max-frame-size".
    #[error("HAPROXY-HELLO has no \"max-frame-size\"")]
    NoMaxFrameSize,
    /// HAPROXY-HELLO without "capabilities".
    #[error("HAPROXY-HELLO has no \"capabilities\"")]
    NoCapabilities,
    /// haproxy offers no version this codec speaks; carries the list it offered.
    #[error("haproxy offers SPOP versions \"{0}\", this agent speaks only 2.0")]
    UnsupportedVersion(String),
    /// haproxy announced a max-frame-size below 256.
    #[error("haproxy announced max-frame-size {0}, below the SPOP minimum of 256")]
    BadMaxFrameSize(u32),
    /// A hello key (first) whose value is not of the type SPOE.txt gives it (second).
    #[error("hello key \"{0}\" does not hold a {1}")]
    HelloValueType(&'static str, &'static str),
    /// A `req.hdrs_bin` value that is not the sample's encoding.
    #[error("req.hdrs_bin value is malformed ({0}): pass `hdrs=req.hdrs_bin` unmodified")]
    BadHdrsBin(&'static str),
}

impl SpopError {
    /// The status to close the connection with, should the caller close it.
    pub fn status(&self) -> SpopStatus {
        match self {
            Self::FrameTooBig { .. } => SpopStatus::FrameTooBig,
            // ABORT only exists for fragmented payloads, which this codec refuses.
            Self::FragmentationNotSupported | Self::Aborted { .. } => {
                SpopStatus::FragmentationNotSupported
            }
            Self::NoVersion => SpopStatus::NoVersion,
            Self::NoMaxFrameSize => SpopStatus::NoMaxFrameSize,
            Self::NoCapabilities => SpopStatus::NoCapabilities,
            Self::UnsupportedVersion(_) => SpopStatus::UnsupportedVersion,
            Self::BadMaxFrameSize(_) => SpopStatus::BadMaxFrameSize,
            _ => SpopStatus::InvalidFrame,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_errors_map_to_them() {
        for code in (0..=13).chain([99]) {
            assert_eq!(
                SpopStatus::from_code(code).map(SpopStatus::code),
                Some(code)
            );
        }
        assert_eq!(
            SpopStatus::FragmentationNotSupported.reason(),
            "payload fragmentation is not supported"
        );
        assert_eq!(SpopStatus::from_code(14), None);
        assert_eq!(SpopStatus::Unknown.code(), 99);
        let cases = [
            (SpopError::FrameTooBig { size: 1, max: 0 }, 3),
            (SpopError::Truncated("x"), 4),
            (SpopError::NoVersion, 5),
            (SpopError::NoMaxFrameSize, 6),
            (SpopError::NoCapabilities, 7),
            (SpopError::UnsupportedVersion("1.0".into()), 8),
            (SpopError::BadMaxFrameSize(1), 9),
            (SpopError::FragmentationNotSupported, 10),
        ];
        for (e, code) in cases {
            assert_eq!(e.status().code(), code, "{e}");
        }
    }
}

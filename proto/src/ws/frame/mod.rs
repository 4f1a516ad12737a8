//! WebSocket frames (RFC 6455 §5): the wire numbers ([`Opcode`], [`CloseCode`]), the frame
//! head ([`decode_head`], [`encode_head`]), the errors a peer's frames can cause
//! ([`FrameError`]), and the streaming [`FrameDecoder`] that turns received bytes into
//! [`Event`]s.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! | Masking-key (continued)       |          Payload Data         |
//! +-------------------------------- - - - - - - - - - - - - - - - +
//! ```

mod decoder;

pub use decoder::{Event, FrameDecoder};

use crate::Decoded;
use crate::reader::Reader;
use crate::ws::mask::apply_mask;

/// The longest frame head: 2 fixed bytes, an 8-byte extended length, a 4-byte mask key.
pub const MAX_HEAD_LEN: usize = 14;
/// The shortest frame head: the two fixed bytes.
const MIN_HEAD_LEN: usize = 2;
/// Control frames carry at most this many payload bytes (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

const FIN_BIT: u8 = 0x80;
const RSV_BITS: u8 = 0x70;
const RSV_SHIFT: u32 = 4;
const OPCODE_BITS: u8 = 0x0f;
const MASK_BIT: u8 = 0x80;
const LEN7_BITS: u8 = 0x7f;
/// A 7-bit length of 126 means "the length follows as a u16".
const LEN7_U16: u8 = 126;
/// A 7-bit length of 127 means "the length follows as a u64".
const LEN7_U64: u8 = 127;
const MASK_KEY_LEN: usize = 4;
/// The size of the status code at the front of a close payload.
const CLOSE_CODE_LEN: usize = 2;

/// Which end of the connection *we* are. A server receives masked frames and sends
/// unmasked ones; a client the reverse (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Server,
    Client,
}

/// A frame opcode (§5.2). A newtype, so that any 4-bit value can be carried and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    pub const CONTINUATION: Opcode = Opcode(0x0);
    pub const TEXT: Opcode = Opcode(0x1);
    pub const BINARY: Opcode = Opcode(0x2);
    pub const CLOSE: Opcode = Opcode(0x8);
    pub const PING: Opcode = Opcode(0x9);
    pub const PONG: Opcode = Opcode(0xa);

    /// Close, ping and pong (and the reserved 0xB–0xF): opcodes with the high bit set.
    pub fn is_control(self) -> bool {
        self.0 & 0x8 != 0
    }

    /// One of the six opcodes RFC 6455 defines; the others are reserved for extensions.
    pub fn is_known(self) -> bool {
        matches!(
            self,
            Opcode::CONTINUATION
                | Opcode::TEXT
                | Opcode::BINARY
                | Opcode::CLOSE
                | Opcode::PING
                | Opcode::PONG
        )
    }
}

/// A close status code (§7.4). A newtype, so that codes from the private and
/// registered ranges survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    pub const NORMAL: CloseCode = CloseCode(1000);
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// Never on the wire: stands for "the close frame had no status code".
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// Never on the wire: stands for "the connection ended without a close frame".
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);

    /// Whether a peer may send this code in a close frame: the codes RFC 6455 defines for
    /// the wire (1000–1003, 1007–1011), the later IANA registrations 1012–1014 (service
    /// restart, try again later, bad gateway), and the library and application ranges
    /// 3000–4999. Everything else (0–999, 1004–1006, 1015, 1016–2999, 5000 and up) is
    /// reserved or local-only, and receiving it is a protocol error.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }

    /// Codes that stand for a missing close frame or status and must never be sent.
    fn is_local_only(self) -> bool {
        matches!(self.0, 1005 | 1006 | 1015)
    }
}

/// A decoded frame head. The payload follows it in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// RSV1–RSV3 as a 3-bit number; always 0 from [`decode_head`], which rejects
    /// reserved bits because no extension is ever negotiated.
    pub rsv: u8,
    pub opcode: Opcode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: u64,
    /// Bytes of the head (2 to [`MAX_HEAD_LEN`]); the payload starts here.
    pub head_len: usize,
}

/// A frame that breaks RFC 6455 or a configured limit. Each maps to the close code the
/// connection is failed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RSV1–3 set, but no extension was negotiated (§5.2).
    ReservedBits,
    /// Opcode 3–7 or 11–15 (§5.2).
    UnknownOpcode,
    /// A control frame with FIN clear (§5.5).
    FragmentedControl,
    /// A control frame with more than 125 payload bytes (§5.5).
    ControlTooLong,
    /// A server received a frame without a mask (§5.1).
    UnmaskedFrame,
    /// A client received a masked frame (§5.1).
    MaskedFrame,
    /// A 64-bit payload length with the most significant bit set (§5.2).
    LengthOverflow,
    /// A continuation frame with no fragmented message in progress (§5.4).
    ContinuationWithoutStart,
    /// A text or binary frame while a fragmented message is still in progress (§5.4).
    MessageNotFinished,
    /// A text message that is not valid UTF-8 (§8.1).
    InvalidUtf8,
    /// A close payload of exactly one byte: half a status code (§5.5.1).
    CloseTooShort,
    /// A close status code that may not be sent on the wire (§7.4).
    InvalidCloseCode,
    /// A close reason that is not valid UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A message whose declared frame lengths add up to more than the configured maximum.
    MessageTooBig,
}

impl FrameError {
    /// The close code to fail the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::InvalidUtf8 | FrameError::InvalidCloseReason => CloseCode::INVALID_PAYLOAD,
            FrameError::MessageTooBig => CloseCode::MESSAGE_TOO_BIG,
            FrameError::ReservedBits
            | FrameError::UnknownOpcode
            | FrameError::FragmentedControl
            | FrameError::ControlTooLong
            | FrameError::UnmaskedFrame
            | FrameError::MaskedFrame
            | FrameError::LengthOverflow
            | FrameError::ContinuationWithoutStart
            | FrameError::MessageNotFinished
            | FrameError::CloseTooShort
            | FrameError::InvalidCloseCode => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// A short sentence for logs and for the reason of the close frame.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::ReservedBits => "reserved bits set without a negotiated extension",
            FrameError::UnknownOpcode => "reserved opcode",
            FrameError::FragmentedControl => "fragmented control frame",
            FrameError::ControlTooLong => "control frame payload over 125 bytes",
            FrameError::UnmaskedFrame => "frame from the client is not masked",
            FrameError::MaskedFrame => "frame from the server is masked",
            FrameError::LengthOverflow => "payload length has the most significant bit set",
            FrameError::ContinuationWithoutStart => "continuation frame without a message",
            FrameError::MessageNotFinished => "new message before the previous one ended",
            FrameError::InvalidUtf8 => "text message is not valid UTF-8",
            FrameError::CloseTooShort => "close frame payload of one byte",
            FrameError::InvalidCloseCode => "close code not allowed on the wire",
            FrameError::InvalidCloseReason => "close reason is not valid UTF-8",
            FrameError::MessageTooBig => "message larger than the configured maximum",
        }
    }
}

impl From<FrameError> for CloseCode {
    fn from(e: FrameError) -> CloseCode {
        e.close_code()
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FrameError {}

/// Decodes the frame head at the front of `buf` in place and checks it against the
/// rules that need no connection state: no reserved bits, a known opcode, control frames
/// whole and short, masking in the right direction for `role`, a 63-bit length.
///
/// Each rule is checked as soon as the bytes it needs are present, so a bad head fails
/// on its first byte rather than waiting for the rest. `Partial { need }` is exact once
/// the second byte is known.
pub fn decode_head(buf: &[u8], role: Role) -> Result<Decoded<FrameHead>, FrameError> {
    let mut r = Reader::new(buf);
    let Some(b0) = r.u8() else {
        return Ok(Decoded::Partial { need: MIN_HEAD_LEN });
    };
    let fin = b0 & FIN_BIT != 0;
    let rsv = (b0 & RSV_BITS) >> RSV_SHIFT;
    let opcode = Opcode(b0 & OPCODE_BITS);
    if rsv != 0 {
        return Err(FrameError::ReservedBits);
    }
    if !opcode.is_known() {
        return Err(FrameError::UnknownOpcode);
    }
    if opcode.is_control() && !fin {
        return Err(FrameError::FragmentedControl);
    }

    let Some(b1) = r.u8() else {
        return Ok(Decoded::Partial { need: 1 });
    };
    let masked = b1 & MASK_BIT != 0;
    match (role, masked) {
        (Role::Server, false) => return Err(FrameError::UnmaskedFrame),
        (Role::Client, true) => return Err(FrameError::MaskedFrame),
        _ => {}
    }
    let len7 = b1 & LEN7_BITS;
    let ext_len = match len7 {
        LEN7_U16 => 2,
        LEN7_U64 => 8,
        _ => 0,
    };
    let head_len = MIN_HEAD_LEN + ext_len + if masked { MASK_KEY_LEN } else { 0 };
    let partial = Decoded::Partial {
        need: head_len.saturating_sub(buf.len()),
    };

    let payload_len = match len7 {
        LEN7_U16 => match r.u16() {
            Some(len) => u64::from(len),
            None => return Ok(partial),
        },
        LEN7_U64 => match r.u64() {
            Some(len) if len >> 63 != 0 => return Err(FrameError::LengthOverflow),
            Some(len) => len,
            None => return Ok(partial),
        },
        len => u64::from(len),
    };
    if opcode.is_control() && payload_len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(FrameError::ControlTooLong);
    }
    let mask = if masked {
        match r.take_array::<MASK_KEY_LEN>() {
            Some(key) => Some(key),
            None => return Ok(partial),
        }
    } else {
        None
    };
    let head = FrameHead {
        fin,
        rsv,
        opcode,
        mask,
        payload_len,
        head_len,
    };
    Ok(Decoded::Complete(head, head_len))
}

/// Writes a frame head (RSV bits clear, shortest length encoding) into `out` and returns
/// its length. The payload is not touched: the caller sends `out[..n]` and the payload
/// together (a vectored write), so one payload can go to many receivers uncopied.
/// When `mask` is given the caller must also mask the payload ([`apply_mask`]).
pub fn encode_head(
    fin: bool,
    opcode: Opcode,
    payload_len: u64,
    mask: Option<[u8; 4]>,
    out: &mut [u8; MAX_HEAD_LEN],
) -> usize {
    out[0] = if fin { FIN_BIT } else { 0 } | (opcode.0 & OPCODE_BITS);
    let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
    let mut n = MIN_HEAD_LEN;
    if payload_len < u64::from(LEN7_U16) {
        out[1] = mask_bit | payload_len as u8;
    } else if let Ok(len) = u16::try_from(payload_len) {
        out[1] = mask_bit | LEN7_U16;
        out[n..n + 2].copy_from_slice(&len.to_be_bytes());
        n += 2;
    } else {
        out[1] = mask_bit | LEN7_U64;
        out[n..n + 8].copy_from_slice(&payload_len.to_be_bytes());
        n += 8;
    }
    if let Some(key) = mask {
        out[n..n + MASK_KEY_LEN].copy_from_slice(&key);
        n += MASK_KEY_LEN;
    }
    n
}

/// Appends one whole frame (FIN set) to `out`: the head, then a copy of `payload`,
/// masked with `mask` when given (a client's frames).
pub fn write_frame(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let mut head = [0; MAX_HEAD_LEN];
    let head_len = encode_head(true, opcode, payload.len() as u64, mask, &mut head);
    out.reserve(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// Appends a close frame with `code` and `reason` to `out`.
///
/// The reason is cut (at a character boundary) to the 123 bytes a control frame leaves
/// after the code. For the local-only codes (1005 no status, 1006 abnormal, 1015 TLS),
/// which must never be sent, the frame has an empty payload: that is how to answer a
/// close frame that carried no code.
pub fn write_close(code: CloseCode, reason: &str, mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    if code.is_local_only() {
        write_frame(Opcode::CLOSE, &[], mask, out);
        return;
    }
    let reason = truncate_to_boundary(reason, MAX_CONTROL_PAYLOAD - CLOSE_CODE_LEN);
    let payload_len = CLOSE_CODE_LEN + reason.len();
    let mut head = [0; MAX_HEAD_LEN];
    let head_len = encode_head(true, Opcode::CLOSE, payload_len as u64, mask, &mut head);
    out.reserve(head_len + payload_len);
    out.extend_from_slice(&head[..head_len]);
    let start = out.len();
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(reason.as_bytes());
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_to_boundary(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_round_trip_at_each_length_boundary() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, u64::MAX >> 1] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let role = if mask.is_some() {
                    Role::Server
                } else {
                    Role::Client
                };
                let mut out = [0; MAX_HEAD_LEN];
                let n = encode_head(false, Opcode::BINARY, len, mask, &mut out);
                let Ok(Decoded::Complete(head, used)) = decode_head(&out[..n], role) else {
                    panic!("length {len} did not decode");
                };
                assert_eq!(used, n);
                assert_eq!((head.fin, head.payload_len, head.mask), (false, len, mask));
            }
        }
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        write_close(CloseCode::NORMAL, &reason, None, &mut out);
        assert_eq!(out[1] as usize, 2 + 122);
        assert!(std::str::from_utf8(&out[4..]).is_ok());
    }

    #[test]
    fn local_only_code_writes_an_empty_close() {
        let mut out = Vec::new();
        write_close(CloseCode::NO_STATUS, "ignored", None, &mut out);
        assert_eq!(out, [0x88, 0x00]);
    }
}

//! The streaming frame decoder: received bytes in, [`Event`]s out, payload unmasked in
//! place and never buffered.
//!
//! A data frame's payload is handed out in chunks as soon as any of it is in the
//! caller's buffer; the decoder remembers where it is inside the frame (bytes left, mask
//! key, key rotation) and inside the message (text or binary, declared size so far, the
//! UTF-8 validator). Control frames are at most 125 bytes and are handed out whole.

use crate::Decoded;
use crate::ws::frame::{CloseCode, FrameError, FrameHead, MASK_KEY_LEN, Opcode, Role, decode_head};
use crate::ws::mask::apply_mask;
use crate::ws::utf8::Utf8Validator;

/// What the decoder found at the front of the caller's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'b> {
    /// Payload bytes of a data message, unmasked (and, for text, UTF-8 validated so far).
    /// `message_end` is set on the last chunk of the message's last frame; an empty
    /// frame gives an empty chunk, so an empty message still has its event.
    Data {
        text: bool,
        chunk: &'b mut [u8],
        message_end: bool,
    },
    /// A whole ping; the answer is a pong with the same payload.
    Ping(&'b [u8]),
    /// A whole pong.
    Pong(&'b [u8]),
    /// A whole close frame: `code` is `None` when the payload was empty; the reason is
    /// validated UTF-8.
    Close {
        code: Option<CloseCode>,
        reason: &'b str,
    },
}

/// Decodes the frames of one connection as a stream.
///
/// The caller keeps the received bytes not yet consumed and calls [`decode`] on them:
/// `Complete(event, consumed)` means drop `consumed` bytes from the front and call again;
/// `Partial` means receive more, append, and call again with the same unconsumed bytes.
/// After an error the connection is to be failed with [`FrameError::close_code`]; the
/// decoder then returns the same error on every call.
///
/// [`decode`]: FrameDecoder::decode
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    role: Role,
    max_message_size: u64,
    /// The data frame whose head has been consumed and whose payload is not all out yet.
    frame: Option<PayloadCursor>,
    /// The data message between its first frame and the end of its FIN frame.
    message: Option<MessageProgress>,
    /// Validates the text message in progress across chunks and frames.
    utf8: Utf8Validator,
    failed: Option<FrameError>,
}

/// Position inside the payload of the current data frame.
#[derive(Debug, Clone, Copy)]
struct PayloadCursor {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes already handed out, modulo the key length: where the key rotation
    /// resumes.
    mask_offset: usize,
    fin: bool,
    text: bool,
}

/// The data message in progress.
#[derive(Debug, Clone, Copy)]
struct MessageProgress {
    text: bool,
    /// Sum of the declared payload lengths of its frames so far.
    declared: u64,
}

impl FrameDecoder {
    /// A decoder for the frames our peer sends us, given which side we are. Messages
    /// whose frames declare more than `max_message_size` bytes in total are refused with
    /// [`FrameError::MessageTooBig`] as soon as the head that passes the limit is seen.
    pub fn new(role: Role, max_message_size: u64) -> Self {
        FrameDecoder {
            role,
            max_message_size,
            frame: None,
            message: None,
            utf8: Utf8Validator::new(),
            failed: None,
        }
    }

    /// Decodes the next event from the front of `buf` (the received bytes not yet
    /// consumed). Data payload in `buf` is unmasked in place.
    pub fn decode<'b>(&mut self, buf: &'b mut [u8]) -> Result<Decoded<Event<'b>>, FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = match self.frame.take() {
            Some(cursor) => self.emit_chunk(cursor, buf, 0),
            None => self.decode_frame(buf),
        };
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    /// Starts a frame: its head is at the front of `buf`.
    fn decode_frame<'b>(&mut self, buf: &'b mut [u8]) -> Result<Decoded<Event<'b>>, FrameError> {
        let head = match decode_head(buf, self.role)? {
            Decoded::Complete(head, _) => head,
            Decoded::Partial { need } => return Ok(Decoded::Partial { need }),
        };
        if head.opcode.is_control() {
            return control_frame(head, buf);
        }

        let (text, declared_before) = match (head.opcode, self.message) {
            (Opcode::CONTINUATION, Some(m)) => (m.text, m.declared),
            (Opcode::CONTINUATION, None) => return Err(FrameError::ContinuationWithoutStart),
            (_, Some(_)) => return Err(FrameError::MessageNotFinished),
            (opcode, None) => (opcode == Opcode::TEXT, 0),
        };
        let declared = declared_before
            .checked_add(head.payload_len)
            .filter(|&total| total <= self.max_message_size)
            .ok_or(FrameError::MessageTooBig)?;
        if head.payload_len > 0 && buf.len() == head.head_len {
            // Nothing to hand out yet: leave the head to be decoded again with more bytes.
            return Ok(Decoded::Partial { need: 1 });
        }

        self.message = Some(MessageProgress { text, declared });
        let cursor = PayloadCursor {
            remaining: head.payload_len,
            mask: head.mask,
            mask_offset: 0,
            fin: head.fin,
            text,
        };
        self.emit_chunk(cursor, buf, head.head_len)
    }

    /// Hands out the payload of the current data frame present in `buf[head_len..]`.
    fn emit_chunk<'b>(
        &mut self,
        mut cursor: PayloadCursor,
        buf: &'b mut [u8],
        head_len: usize,
    ) -> Result<Decoded<Event<'b>>, FrameError> {
        let available = buf.len() - head_len;
        let len = usize::try_from(cursor.remaining).map_or(available, |r| r.min(available));
        if len == 0 && cursor.remaining > 0 {
            self.frame = Some(cursor);
            return Ok(Decoded::Partial { need: 1 });
        }
        let chunk = &mut buf[head_len..head_len + len];
        if let Some(key) = cursor.mask {
            apply_mask(chunk, key, cursor.mask_offset);
        }
        cursor.mask_offset = (cursor.mask_offset + len) % MASK_KEY_LEN;
        cursor.remaining -= len as u64;
        if cursor.text {
            self.utf8.feed(chunk).map_err(|_| FrameError::InvalidUtf8)?;
        }
        let message_end = cursor.remaining == 0 && cursor.fin;
        if cursor.remaining > 0 {
            self.frame = Some(cursor);
        }
        if message_end {
            self.message = None;
            if cursor.text {
                self.utf8.finish().map_err(|_| FrameError::InvalidUtf8)?;
            }
        }
        let event = Event::Data {
            text: cursor.text,
            chunk,
            message_end,
        };
        Ok(Decoded::Complete(event, head_len + len))
    }
}

/// A ping, pong or close: returned only once the whole frame is in `buf`.
fn control_frame(head: FrameHead, buf: &mut [u8]) -> Result<Decoded<Event<'_>>, FrameError> {
    // decode_head has checked the length against MAX_CONTROL_PAYLOAD.
    let payload_len = head.payload_len as usize;
    let total = head.head_len + payload_len;
    if buf.len() < total {
        return Ok(Decoded::Partial {
            need: total - buf.len(),
        });
    }
    let payload = &mut buf[head.head_len..total];
    if let Some(key) = head.mask {
        apply_mask(payload, key, 0);
    }
    let event = match head.opcode {
        Opcode::PING => Event::Ping(payload),
        Opcode::PONG => Event::Pong(payload),
        _ => close_event(payload)?,
    };
    Ok(Decoded::Complete(event, total))
}

/// Checks a close payload (§5.5.1): empty, or a status code valid on the wire followed
/// by a UTF-8 reason.
fn close_event(payload: &[u8]) -> Result<Event<'_>, FrameError> {
    match payload {
        [] => Ok(Event::Close {
            code: None,
            reason: "",
        }),
        [_] => Err(FrameError::CloseTooShort),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_valid_on_wire() {
                return Err(FrameError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidCloseReason)?;
            Ok(Event::Close {
                code: Some(code),
                reason,
            })
        }
    }
}

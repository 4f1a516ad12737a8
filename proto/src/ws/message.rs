//! Whole messages from [`Event::Data`](crate::ws::Event::Data) chunks, for users that
//! need them (the echo server); the MQTT broker streams the chunks instead.
//!
//! The buffer is bounded by a size fixed at construction, grows only when a message
//! needs it (never past the bound), and is reused for the next message.

use crate::ws::frame::FrameError;

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// A text message (valid UTF-8, checked by the decoder), or binary.
    pub text: bool,
    pub payload: &'a [u8],
}

/// Collects the chunks of one data message at a time.
#[derive(Debug, Clone)]
pub struct MessageAssembler {
    buf: Vec<u8>,
    max_message_size: usize,
    /// The last push returned the message held in `buf`: start afresh on the next one.
    returned: bool,
}

impl MessageAssembler {
    /// An assembler for messages of at most `max_message_size` bytes. Allocates nothing
    /// until a message arrives in more than one chunk.
    pub fn new(max_message_size: usize) -> Self {
        MessageAssembler {
            buf: Vec::new(),
            max_message_size,
            returned: false,
        }
    }

    /// Adds one chunk (as the decoder handed it out). Returns the message when
    /// `message_end` is set, `None` before. A message that arrives as a single chunk is
    /// returned as that chunk, without a copy.
    pub fn push<'a>(
        &'a mut self,
        text: bool,
        chunk: &'a [u8],
        message_end: bool,
    ) -> Result<Option<Message<'a>>, FrameError> {
        if self.returned {
            self.buf.clear();
            self.returned = false;
        }
        let total = self.buf.len().saturating_add(chunk.len());
        if total > self.max_message_size {
            self.buf.clear();
            return Err(FrameError::MessageTooBig);
        }
        if self.buf.is_empty() && message_end {
            return Ok(Some(Message {
                text,
                payload: chunk,
            }));
        }
        if total > self.buf.capacity() {
            // Double as a Vec would, but never reserve past the bound.
            let target = total
                .max(self.buf.capacity().saturating_mul(2))
                .min(self.max_message_size);
            self.buf.reserve_exact(target - self.buf.len());
        }
        self.buf.extend_from_slice(chunk);
        if !message_end {
            return Ok(None);
        }
        self.returned = true;
        Ok(Some(Message {
            text,
            payload: &self.buf,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_joined_and_the_buffer_is_reused() {
        let mut a = MessageAssembler::new(16);
        assert_eq!(a.push(true, b"Hel", false), Ok(None));
        let m = a.push(true, b"lo", true).unwrap().unwrap();
        assert_eq!((m.text, m.payload), (true, &b"Hello"[..]));
        assert_eq!(a.push(false, b"x", false), Ok(None));
        let m = a.push(false, b"y", true).unwrap().unwrap();
        assert_eq!((m.text, m.payload), (false, &b"xy"[..]));
    }

    #[test]
    fn single_chunk_message_is_not_copied() {
        let mut a = MessageAssembler::new(16);
        let chunk = b"whole".to_vec();
        let m = a.push(false, &chunk, true).unwrap().unwrap();
        assert_eq!(m.payload.as_ptr(), chunk.as_ptr());
        assert_eq!(a.buf.capacity(), 0);
    }

    #[test]
    fn capacity_never_passes_the_bound() {
        let mut a = MessageAssembler::new(100);
        for _ in 0..99 {
            assert_eq!(a.push(false, b"a", false), Ok(None));
            assert!(a.buf.capacity() <= 100);
        }
        assert_eq!(
            a.push(false, b"a", true).unwrap().unwrap().payload.len(),
            100
        );
        assert_eq!(a.push(false, b"a", false), Ok(None));
    }

    #[test]
    fn over_the_bound_is_too_big() {
        let mut a = MessageAssembler::new(4);
        assert_eq!(a.push(false, b"abc", false), Ok(None));
        assert_eq!(a.push(false, b"de", true), Err(FrameError::MessageTooBig));
        // The assembler starts afresh.
        assert_eq!(
            a.push(false, b"abcd", true).unwrap().unwrap().payload,
            b"abcd"
        );
    }
}

//! Incremental UTF-8 validation for text messages and close reasons.
//!
//! A text message arrives in chunks (several frames, each possibly split across receive
//! buffers), and a code point may be cut anywhere. [`Utf8Validator`] keeps the at most
//! three bytes of an unfinished code point between calls and rejects invalid input as soon
//! as it is seen (RFC 6455 §8.1: fail the connection on the first invalid byte, not at the
//! end of the message). The bulk of each chunk goes through `std::str::from_utf8`, which
//! has a fast path for ASCII.

/// The longest UTF-8 encoding of one code point.
const MAX_CHAR_LEN: usize = 4;

/// The input is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a UTF-8 byte stream fed in arbitrary pieces.
#[derive(Debug, Clone, Copy, Default)]
pub struct Utf8Validator {
    /// The start of a code point cut by the end of the previous piece.
    pending: [u8; MAX_CHAR_LEN],
    pending_len: usize,
}

impl Utf8Validator {
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; MAX_CHAR_LEN],
            pending_len: 0,
        }
    }

    /// Validates the next piece. An unfinished code point at its end is kept for the next
    /// call; everything else must be valid UTF-8.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            input = self.complete_pending(input)?;
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            // `error_len() == None`: the input ends inside a code point that is valid so far.
            Err(e) if e.error_len().is_none() => {
                let tail = &input[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len();
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the stream: fails if it stopped inside a code point. The validator is then
    /// ready for a new stream.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let complete = self.pending_len == 0;
        *self = Utf8Validator::new();
        if complete { Ok(()) } else { Err(InvalidUtf8) }
    }

    /// Moves bytes from the front of `input` into the unfinished code point until it is
    /// complete (then checks it) or `input` runs out. Returns the rest of `input`.
    fn complete_pending<'i>(&mut self, input: &'i [u8]) -> Result<&'i [u8], InvalidUtf8> {
        // The pending bytes start with a valid lead byte (from_utf8 said "incomplete").
        let width = char_width(self.pending[0]);
        let take = width.saturating_sub(self.pending_len).min(input.len());
        let (front, rest) = input.split_at(take);
        let end = self.pending_len + take;
        self.pending[self.pending_len..end].copy_from_slice(front);
        match std::str::from_utf8(&self.pending[..end]) {
            Ok(_) => {
                self.pending_len = 0;
                Ok(rest)
            }
            Err(e) if e.error_len().is_none() => {
                self.pending_len = end;
                Ok(rest)
            }
            Err(_) => Err(InvalidUtf8),
        }
    }
}

/// The encoded length of a code point from its lead byte; 1 for bytes that cannot lead
/// (they never reach here: only a valid, unfinished lead byte is kept pending).
fn char_width(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for piece in pieces {
            v.feed(piece)?;
        }
        v.finish()
    }

    #[test]
    fn code_point_split_at_every_byte() {
        let text = "aé€😀z".as_bytes();
        for i in 0..=text.len() {
            for j in i..=text.len() {
                assert_eq!(feed_all(&[&text[..i], &text[i..j], &text[j..]]), Ok(()));
            }
        }
        let pieces: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(feed_all(&pieces), Ok(()));
    }

    #[test]
    fn unfinished_code_point_at_the_end_fails() {
        assert_eq!(feed_all(&[b"ok", &[0xe2, 0x82]]), Err(InvalidUtf8));
    }

    #[test]
    fn invalid_continuation_fails_at_once() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xe2]), Ok(()));
        assert_eq!(v.feed(&[0x28]), Err(InvalidUtf8));
        // A surrogate (ED A0 80) fails on its second byte, before the third arrives.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xed]), Ok(()));
        assert_eq!(v.feed(&[0xa0]), Err(InvalidUtf8));
        // Above U+10FFFF.
        assert_eq!(Utf8Validator::new().feed(&[0xf4, 0x90]), Err(InvalidUtf8));
    }

    #[test]
    fn finish_resets() {
        let mut v = Utf8Validator::new();
        v.feed(&[0xc3]).unwrap();
        assert_eq!(v.finish(), Err(InvalidUtf8));
        assert_eq!(v.feed(b"fresh"), Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}

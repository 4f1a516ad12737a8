//! Drivers that feed bytes to the decoders the way a connection does, in pieces of
//! chosen sizes, and record what comes out. Shared by the tests, the fuzz targets and
//! the benches so that all of them exercise the same caller logic. Not a public API.

use crate::Decoded;
use crate::ws::frame::{CloseCode, Event, FrameDecoder, FrameError, Role};
use crate::ws::message::MessageAssembler;

/// One thing a peer sent, reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Message {
        text: bool,
        payload: Vec<u8>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close {
        code: Option<CloseCode>,
        reason: String,
    },
}

/// Everything decoded from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcript {
    /// Complete messages and control frames, in order.
    pub items: Vec<Item>,
    /// The error that stopped decoding, if any.
    pub error: Option<FrameError>,
    /// Bytes of an unfinished frame head or control frame left at the end.
    pub leftover: usize,
}

/// An endless sequence of piece sizes: `sizes` repeated; a 0 counts as 1 and an empty
/// slice means "everything at once".
struct Pieces<'s> {
    sizes: &'s [usize],
    next: usize,
}

impl Pieces<'_> {
    fn next_size(&mut self) -> usize {
        let Some(&size) = self.sizes.get(self.next % self.sizes.len().max(1)) else {
            return usize::MAX;
        };
        self.next += 1;
        size.max(1)
    }
}

/// Decodes `input` as a connection would receive it, in pieces of `sizes` (repeated):
/// after each piece it decodes every event it can, drops the consumed bytes, and keeps
/// the rest for the next piece. Data chunks go through a [`MessageAssembler`].
///
/// Panics if the decoder breaks its contract (consumes nothing, or asks for 0 bytes).
pub fn decode_stream(
    role: Role,
    max_message_size: u64,
    input: &[u8],
    sizes: &[usize],
) -> Transcript {
    let mut decoder = FrameDecoder::new(role, max_message_size);
    let mut assembler =
        MessageAssembler::new(usize::try_from(max_message_size).unwrap_or(usize::MAX));
    let mut pieces = Pieces { sizes, next: 0 };
    let mut pending = Vec::new();
    let mut items = Vec::new();
    let mut fed = 0;
    loop {
        let mut pos = 0;
        loop {
            match decoder.decode(&mut pending[pos..]) {
                Ok(Decoded::Complete(event, consumed)) => {
                    assert!(consumed > 0, "an event must consume bytes");
                    pos += consumed;
                    match record(event, &mut assembler) {
                        Ok(Some(item)) => items.push(item),
                        Ok(None) => {}
                        Err(error) => {
                            return Transcript {
                                items,
                                error: Some(error),
                                leftover: 0,
                            };
                        }
                    }
                }
                Ok(Decoded::Partial { need }) => {
                    assert!(need > 0, "Partial must ask for at least one byte");
                    break;
                }
                Err(error) => {
                    return Transcript {
                        items,
                        error: Some(error),
                        leftover: 0,
                    };
                }
            }
        }
        pending.drain(..pos);
        if fed == input.len() {
            return Transcript {
                items,
                error: None,
                leftover: pending.len(),
            };
        }
        let len = pieces.next_size().min(input.len() - fed);
        pending.extend_from_slice(&input[fed..fed + len]);
        fed += len;
    }
}

fn record(event: Event<'_>, assembler: &mut MessageAssembler) -> Result<Option<Item>, FrameError> {
    Ok(Some(match event {
        Event::Data {
            text,
            chunk,
            message_end,
        } => {
            let Some(message) = assembler.push(text, chunk, message_end)? else {
                return Ok(None);
            };
            Item::Message {
                text: message.text,
                payload: message.payload.to_vec(),
            }
        }
        Event::Ping(payload) => Item::Ping(payload.to_vec()),
        Event::Pong(payload) => Item::Pong(payload.to_vec()),
        Event::Close { code, reason } => Item::Close {
            code,
            reason: reason.to_owned(),
        },
    }))
}

/// Feeds an HTTP head to `parse` as a connection would: the bytes received so far, one
/// more piece of `sizes` (repeated) each time, until `parse` completes or fails.
/// `Ok(None)` when the input ran out first. `parse` turns what it decodes into an owned
/// value, since the buffer lives here.
///
/// Panics if `parse` asks for 0 more bytes, or consumes more than it was given.
pub fn feed_head<O, E>(
    input: &[u8],
    sizes: &[usize],
    mut parse: impl FnMut(&[u8]) -> Result<Decoded<O>, E>,
) -> Result<Option<(O, usize)>, E> {
    let mut pieces = Pieces { sizes, next: 0 };
    let mut received = Vec::new();
    while received.len() < input.len() {
        let len = pieces.next_size().min(input.len() - received.len());
        received.extend_from_slice(&input[received.len()..received.len() + len]);
        match parse(&received)? {
            Decoded::Complete(out, consumed) => {
                assert!(consumed <= received.len(), "consumed more than received");
                return Ok(Some((out, consumed)));
            }
            Decoded::Partial { need } => {
                assert!(need > 0, "Partial must ask for at least one byte")
            }
        }
    }
    Ok(None)
}

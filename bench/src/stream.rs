//! Received bytes → MQTT packets (and, over WebSocket, frames → bytes first), decoded in
//! place from the receive buffer. Only what straddles two receives is copied, into a
//! per-client carry buffer: for MQTT the front of one packet, completed with just the bytes
//! it lacks; for WebSocket at most one frame head or control frame (14 + 125 bytes).
//!
//! Both functions hand each item to a callback that answers whether to go on (`false`
//! once the connection is being closed); an `Err` is a malformed stream.

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{Framer, Packet, Version};
use ringmq_proto::ws::{self, Event, FrameDecoder};

/// Feeds `data` (after whatever `carry` holds) to the MQTT framer and decoder.
pub fn feed_mqtt(
    carry: &mut Vec<u8>,
    data: &[u8],
    version: Version,
    max_packet: u32,
    mut on_packet: impl FnMut(Packet<'_>) -> Result<bool, String>,
) -> Result<(), String> {
    let malformed = |e| format!("packet from the broker: {e:?}");
    let mut frames = Framer::new(std::mem::take(carry), data, max_packet);
    let go_on = loop {
        match frames.next_frame(version) {
            Ok(Decoded::Complete(frame, _)) => {
                if !on_packet(frame.decode(version).map_err(malformed)?)? {
                    break false;
                }
            }
            Ok(Decoded::Partial { .. }) => break true,
            Err(e) => return Err(malformed(e)),
        }
    };
    *carry = frames.into_carry();
    if !go_on {
        // The connection is closing: what follows is not read.
        carry.clear();
    }
    Ok(())
}

/// The longest stretch a WebSocket carry buffer holds: a frame head and a control frame's
/// payload.
const MAX_WS_PARTIAL: usize = ws::MAX_HEAD_LEN + ws::MAX_CONTROL_PAYLOAD;

/// Feeds `data` (after whatever `carry` holds) to the WebSocket frame decoder. Data
/// payload is handed on in chunks as it arrives; control frames whole.
pub fn feed_ws(
    decoder: &mut FrameDecoder,
    carry: &mut Vec<u8>,
    data: &mut [u8],
    mut on_event: impl FnMut(Event<'_>) -> Result<bool, String>,
) -> Result<(), String> {
    let mut pos = 0;
    if !carry.is_empty() {
        let old = carry.len();
        let take = data.len().min(MAX_WS_PARTIAL.saturating_sub(old));
        carry.extend_from_slice(&data[..take]);
        match decoder.decode(carry) {
            Ok(Decoded::Complete(event, n)) => {
                // The carry held less than one event, so the event reaches into the bytes
                // just appended: those past `old` came from `data`.
                if n <= old {
                    return Err("WebSocket frame decoder went backwards".into());
                }
                pos = n - old;
                let go_on = on_event(event)?;
                carry.clear();
                if !go_on {
                    return Ok(());
                }
            }
            Ok(Decoded::Partial { .. }) if take < data.len() => {
                return Err("WebSocket frame head longer than possible".into());
            }
            // Still partial: all of `data` is in the carry now.
            Ok(Decoded::Partial { .. }) => return Ok(()),
            Err(e) => return Err(format!("WebSocket frame from the broker: {e:?}")),
        }
    }
    while pos < data.len() {
        let (event, n) = match decoder.decode(&mut data[pos..]) {
            Ok(Decoded::Complete(event, n)) => (event, n),
            Ok(Decoded::Partial { .. }) => {
                carry.extend_from_slice(&data[pos..]);
                return Ok(());
            }
            Err(e) => return Err(format!("WebSocket frame from the broker: {e:?}")),
        };
        pos += n;
        if !on_event(event)? {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_proto::mqtt::{Properties, PubResp, Publish, QoS};
    use ringmq_proto::ws::{Opcode, Role};

    const MAX: u32 = 1 << 20;

    /// A PUBLISH, a PUBACK, a PINGRESP and a PUBLISH with a 300-byte payload (two-byte
    /// remaining length), back to back.
    fn packets() -> (Vec<u8>, Vec<String>) {
        let mut bytes = Vec::new();
        let big = vec![7u8; 300];
        let list = [
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "a/b",
                pkid: 9,
                properties: Properties::EMPTY,
                payload: b"hello",
            }),
            Packet::PubAck(PubResp::new(3)),
            Packet::PingResp,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t",
                pkid: 0,
                properties: Properties::EMPTY,
                payload: &big,
            }),
        ];
        for p in &list {
            p.encode_to_vec(Version::V311, &mut bytes).unwrap();
        }
        (bytes, list.iter().map(|p| format!("{p:?}")).collect())
    }

    fn collect_mqtt(chunks: &[&[u8]]) -> Vec<String> {
        let mut carry = Vec::new();
        let mut out = Vec::new();
        for c in chunks {
            feed_mqtt(&mut carry, c, Version::V311, MAX, |p| {
                out.push(format!("{p:?}"));
                Ok(true)
            })
            .unwrap();
        }
        assert!(carry.is_empty(), "bytes left over");
        out
    }

    #[test]
    fn mqtt_split_at_every_point_and_byte_by_byte() {
        let (bytes, want) = packets();
        assert_eq!(collect_mqtt(&[&bytes]), want);
        for cut in 0..=bytes.len() {
            let (a, b) = bytes.split_at(cut);
            assert_eq!(collect_mqtt(&[a, b]), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(collect_mqtt(&singles), want);
        let sevens: Vec<&[u8]> = bytes.chunks(7).collect();
        assert_eq!(collect_mqtt(&sevens), want);
    }

    #[test]
    fn mqtt_stops_when_told_and_reports_malformed_input() {
        let (bytes, _) = packets();
        let mut carry = Vec::new();
        let mut n = 0;
        feed_mqtt(&mut carry, &bytes, Version::V311, MAX, |_| {
            n += 1;
            Ok(false)
        })
        .unwrap();
        assert_eq!(n, 1);
        let mut carry = Vec::new();
        let err = feed_mqtt(&mut carry, &[0x00, 0x00], Version::V311, MAX, |_| Ok(true));
        assert!(err.is_err());
        // Too large for the limit: refused as soon as the length is known.
        let mut carry = Vec::new();
        let err = feed_mqtt(&mut carry, &bytes, Version::V311, 10, |_| Ok(true));
        assert!(err.is_err());
    }

    /// The MQTT bytes in server frames (unmasked): split over two binary frames (the first
    /// not final), with a ping between them, then the rest in a third message.
    fn frames(mqtt: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (a, rest) = mqtt.split_at(10);
        let (b, c) = rest.split_at(200);
        let mut head = [0u8; ws::MAX_HEAD_LEN];
        let n = ws::encode_head(false, Opcode::BINARY, a.len() as u64, None, &mut head);
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(a);
        ws::write_frame(Opcode::PING, b"are you there", None, &mut out);
        let n = ws::encode_head(true, Opcode::CONTINUATION, b.len() as u64, None, &mut head);
        out.extend_from_slice(&head[..n]);
        out.extend_from_slice(b);
        ws::write_frame(Opcode::BINARY, c, None, &mut out);
        out
    }

    fn collect_ws(chunks: &mut [&mut [u8]]) -> (Vec<String>, Vec<Vec<u8>>) {
        let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
        let mut ws_carry = Vec::new();
        let mut mqtt_carry = Vec::new();
        let mut packets = Vec::new();
        let mut pings = Vec::new();
        for c in chunks.iter_mut() {
            feed_ws(&mut decoder, &mut ws_carry, c, |event| {
                match event {
                    Event::Data { chunk, .. } => {
                        feed_mqtt(&mut mqtt_carry, chunk, Version::V311, MAX, |p| {
                            packets.push(format!("{p:?}"));
                            Ok(true)
                        })?;
                    }
                    Event::Ping(p) => pings.push(p.to_vec()),
                    other => panic!("unexpected {other:?}"),
                }
                Ok(true)
            })
            .unwrap();
        }
        assert!(
            ws_carry.is_empty() && mqtt_carry.is_empty(),
            "bytes left over"
        );
        (packets, pings)
    }

    #[test]
    fn websocket_split_at_every_point_and_byte_by_byte() {
        let (mqtt, want) = packets();
        let stream = frames(&mqtt);
        let ping = vec![b"are you there".to_vec()];
        assert_eq!(
            collect_ws(&mut [&mut stream.clone()]),
            (want.clone(), ping.clone())
        );
        for cut in 0..=stream.len() {
            let mut s = stream.clone();
            let (a, b) = s.split_at_mut(cut);
            assert_eq!(
                collect_ws(&mut [a, b]),
                (want.clone(), ping.clone()),
                "cut at {cut}"
            );
        }
        let mut s = stream.clone();
        let mut singles: Vec<&mut [u8]> = s.chunks_mut(1).collect();
        assert_eq!(collect_ws(&mut singles), (want.clone(), ping.clone()));
        let mut s = stream.clone();
        let mut fives: Vec<&mut [u8]> = s.chunks_mut(5).collect();
        assert_eq!(collect_ws(&mut fives), (want, ping));
    }

    #[test]
    fn websocket_refuses_masked_server_frames() {
        let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
        let mut frame = Vec::new();
        ws::write_frame(Opcode::BINARY, b"x", Some([1, 2, 3, 4]), &mut frame);
        let r = feed_ws(&mut decoder, &mut Vec::new(), &mut frame, |_| Ok(true));
        assert!(r.is_err());
    }
}

//! Bytes in: the runtime hands the broker what each connection sends; the framer
//! (`ringmq_proto::mqtt::Framer`) cuts it into packets, keeping the front of a packet split
//! across receives in the connection's carry buffer, and each packet goes to its handler
//! ([`Broker::handle_packet`]). While the connection's session is being claimed, or while
//! it is paused for back-pressure, what it sends waits (see `take_up`). A packet that
//! cannot be decoded gets the answer the spec names.

use ringmq_proto::Decoded;
use ringmq_proto::mqtt::{self, Framer, Packet, ReasonCode, Version};
use ringmq_shard::conn::{CloseReason, ConnKey};

use super::client::Phase;
use super::{Broker, Io};

impl Broker {
    /// Decodes and handles every whole packet `input` completes after the connection's
    /// carry buffer, keeping the front of a packet split across receives there.
    pub(super) fn process_input(&mut self, io: &mut Io, key: ConnKey, input: &[u8]) {
        let max = self.config().max_packet_size;
        let Some(client) = io.state(key) else { return };
        let mut carry = client.take_carry();
        if matches!(client.phase, Phase::Claiming | Phase::Authenticating) {
            // The credentials are being verified, or the session is being found on another
            // shard: keep the packets for later.
            if carry.len() + input.len() > max as usize * 2 {
                self.protocol_error(
                    io,
                    key,
                    ReasonCode::QUOTA_EXCEEDED,
                    "too much data before CONNACK",
                );
                return;
            }
            carry.extend_from_slice(input);
            if let Some(client) = io.state(key) {
                client.put_carry(carry);
            }
            return;
        }
        self.take_up(io, key, Framer::new(carry, input, max));
    }

    /// Handles the packets `frames` cuts from the stream, as the connection's state
    /// allows each. Back-pressure: while the connection is paused, its acknowledgements
    /// and pings are taken up at once (so the deliveries it is waiting on keep flowing and
    /// its keep-alive holds) and its other packets wait in order in its held buffer until
    /// `on_resume`; past `pause_hold_bytes`, reading from it stops until the pause ends.
    /// Once it is claiming its session, the rest of the stream waits unread in its carry
    /// buffer.
    pub(super) fn take_up(&mut self, io: &mut Io, key: ConnKey, mut frames: Framer<'_>) {
        let mut held: Option<Vec<u8>> = None;
        loop {
            let version = io.state(key).map_or(Version::V311, |c| c.version());
            let frame = match frames.next_frame(version) {
                Err(e) => return self.decode_error(io, key, frames.front(), e),
                Ok(Decoded::Partial { .. }) => break,
                Ok(Decoded::Complete(frame, _)) => frame,
            };
            if io.is_paused(key) && !frame.is_acknowledgement() {
                let held = held
                    .get_or_insert_with(|| io.state(key).map_or_else(Vec::new, |c| c.take_held()));
                held.extend_from_slice(frame.bytes());
                continue;
            }
            // A PUBLISH's size, for the client's rate buckets.
            let publish_len = (self.publish_rates_on() && frame.bytes()[0] >> 4 == 3)
                .then_some(frame.bytes().len());
            match frame.decode(version) {
                Err(e) => return self.decode_error(io, key, frame.bytes(), e),
                Ok(pkt) => self.handle_packet(io, key, pkt),
            }
            if !io.is_open(key) {
                return;
            }
            if let Some(len) = publish_len {
                // Past its rate, the client's next packets are held (`is_paused`) and
                // reading from it stops until its buckets allow again.
                self.charge_publish(io, key, len);
            }
            if io
                .state(key)
                .is_some_and(|c| matches!(c.phase, Phase::Claiming | Phase::Authenticating))
            {
                break;
            }
        }
        let carry = frames.into_carry();
        if let Some(held) = held {
            // A held packet was received all the same: it counts for the keep-alive
            // (MQTT-3.1.2-24 speaks of receiving, not of handling).
            Self::keep_alive_from_now(io, key);
            let over = held.len() + carry.len() > self.config().pause_hold_bytes;
            if let Some(client) = io.state(key) {
                client.put_held(held);
            }
            if over && io.stop_reading(key) {
                self.stats.publishers_read_stopped.add(1);
            }
        }
        self.keep_carry(io, key, carry);
    }

    /// Reading from `key` resumes after a back-pressure pause: its held packets are taken
    /// up, within the held-delivery budget.
    pub(super) fn take_up_held(&mut self, io: &mut Io, key: ConnKey) {
        let max = self.config().max_packet_size;
        let Some((held, carry)) = io.state(key).map(|c| (c.take_held(), c.take_carry())) else {
            return;
        };
        if !held.is_empty() {
            self.pressure.taking_up_held = true;
            self.pressure.held_budget_from = self.deliveries_so_far(io);
            // The held packets are whole and come before the carried front of the packet
            // still arriving, which goes back once they are taken up.
            self.take_up(io, key, Framer::new(Vec::new(), &held, max));
            self.pressure.taking_up_held = false;
            // Still pressured: pause again before reading more from it.
            self.pause_publisher_if_pressured(io, key);
        }
        if let Some(client) = io.state(key) {
            client.put_carry(carry);
        }
    }

    pub(super) fn keep_carry(&mut self, io: &mut Io, key: ConnKey, mut carry: Vec<u8>) {
        if carry.is_empty() && carry.capacity() > 4096 {
            carry = Vec::new();
        }
        if let Some(client) = io.state(key) {
            client.put_carry(carry);
        }
    }

    /// A packet could not be decoded: answer as the spec says and close.
    pub(super) fn decode_error(
        &mut self,
        io: &mut Io,
        key: ConnKey,
        bytes: &[u8],
        e: mqtt::DecodeError,
    ) {
        let Some(client) = io.state(key) else { return };
        if client.phase == Phase::AwaitConnect {
            // A bad CONNECT: answer with a CONNACK refusal in the version it asked for.
            let v5 = mqtt::peek_connect_version(bytes) == Some(Version::V5);
            if v5 {
                let why = e.to_string();
                self.writer
                    .refuse_connect(io, key, Version::V5, e.reason_code(), &why);
            } else if let Some(code) = e.connack_return_code() {
                self.writer.refuse_connect_v3(io, key, code);
            }
            io.close(key, CloseReason::ProtocolError);
            return;
        }
        let code = e.reason_code();
        let why = e.to_string();
        self.protocol_error(io, key, code, &why);
    }

    /// A packet was received from a connected client: its keep-alive deadline starts
    /// over (none when it asked for no keep-alive).
    pub(super) fn keep_alive_from_now(io: &mut Io, key: ConnKey) {
        let ka = io.state(key).map_or(0, |c| c.keep_alive_ms());
        if ka > 0 {
            let at = io.now_ms() + ka;
            io.set_deadline(key, at);
        }
    }

    pub(super) fn handle_packet(&mut self, io: &mut Io, key: ConnKey, pkt: Packet<'_>) {
        self.stats.packets_in.add(1);
        let Some(client) = io.state(key) else { return };
        let phase = client.phase;
        if phase == Phase::Connected {
            Self::keep_alive_from_now(io, key);
        }
        match (phase, pkt) {
            (Phase::AwaitConnect, Packet::Connect(c)) => self.on_connect(io, key, c),
            (Phase::AwaitConnect, _) => {
                // MQTT-3.1.0-1: the first packet must be CONNECT.
                io.close(key, CloseReason::ProtocolError);
            }
            // Not reached: packets wait in the carry buffer.
            (Phase::Claiming | Phase::Authenticating, _) => {}
            (Phase::Connected, Packet::Connect(_)) => {
                self.protocol_error(io, key, ReasonCode::PROTOCOL_ERROR, "second CONNECT")
            }
            (Phase::Connected, Packet::Publish(p)) => self.on_publish(io, key, p),
            (Phase::Connected, Packet::PubAck(r)) => self.on_puback(io, key, r.pkid),
            (Phase::Connected, Packet::PubRec(r)) => self.on_pubrec(io, key, r.pkid, r.reason),
            (Phase::Connected, Packet::PubRel(r)) => self.on_pubrel(io, key, r.pkid),
            (Phase::Connected, Packet::PubComp(r)) => self.on_pubcomp(io, key, r.pkid),
            (Phase::Connected, Packet::Subscribe(s)) => self.on_subscribe(io, key, s),
            (Phase::Connected, Packet::Unsubscribe(u)) => self.on_unsubscribe(io, key, u),
            (Phase::Connected, Packet::PingReq) => {
                let v = io.state(key).map_or(Version::V311, |c| c.version());
                self.writer.packet(io, key, v, &Packet::PingResp);
            }
            (Phase::Connected, Packet::Disconnect(d)) => self.on_disconnect(io, key, d),
            (Phase::Connected, Packet::Auth(_)) => self.protocol_error(
                io,
                key,
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method",
            ),
            (Phase::Connected, _) => self.protocol_error(
                io,
                key,
                ReasonCode::PROTOCOL_ERROR,
                "a packet only a server sends",
            ),
        }
    }
}

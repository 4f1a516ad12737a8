//! What brokers on different shards tell each other over the mesh.

use std::sync::Arc;

use ringmq_proto::mqtt::QoS;
use tokio::sync::oneshot;

use crate::broker::session::{Message, MovingSession, SessionId, SubIds};
use crate::store::ring_driver::JobDone;
use ringmq_shard::conn::ConnKey;

/// Names what a shard waits for when it asks another to answer once a delivery is
/// durable there (`Msg::Durable`): an entry of the asker's table of acknowledgements
/// and notices waiting for durability (see `durable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub u32);

/// A cross-shard message. Payloads travel as `Arc<Message>`: one allocation per
/// published message, shared by every shard and queue that holds it.
///
/// Every slot of every ring between two shards is the size of the largest variant, so
/// the rare large ones are boxed: 40 bytes a message (16 shards hold 240 rings of
/// 4,096 slots).
pub enum Msg {
    /// Deliver to this shard's plain (not shared) subscribers that match. With a
    /// ticket, answer `Durable` once what this shard logged for it is durable.
    Publish {
        msg: Arc<Message>,
        ticket: Option<Ticket>,
        /// A QoS 2 message from a persistent session's client: the id it got, so that
        /// a copy sent again (after a restart) is not delivered twice to a session (0:
        /// none; a plain `u64` keeps every ring slot at 40 bytes).
        origin: u64,
        /// A copy the publisher sent again: only persistent sessions that never got it
        /// get it.
        again: bool,
    },
    /// Deliver to one member of the shared-subscription group `share` (`$share/g/f`);
    /// a ticket as for `Publish`.
    ShareDeliver {
        share: Arc<str>,
        msg: Arc<Message>,
        ticket: Option<Ticket>,
    },
    /// Store (or, with an empty payload, clear) a retained message; `version` orders
    /// updates of one topic from different shards. The topic's home shard logs it (and
    /// answers a ticket once that is durable).
    Retain {
        msg: Arc<Message>,
        version: u64,
        ticket: Option<Ticket>,
    },
    /// What the sender logged for the delivery or retained message that carried
    /// `ticket` (and for everything before) is durable; `refused`: the sender could not
    /// log it (its disk is full), so it is not promised.
    Durable { ticket: Ticket, refused: bool },
    /// The publisher released QoS 2 message `id` (PUBREL): no copy of it comes again,
    /// so the sessions that got it may forget it.
    PeerReleased { id: u64 },
    /// To a moved session's old shard: its new shard has made the session durable; the
    /// old shard's log may end it there (key `key` in that log).
    MovedDurable { key: u64 },
    /// A job of the store's on this shard's helper thread ended (never crosses shards).
    Store(Box<JobDone>),
    /// The sender's interest changes of one loop turn, each: it has (`add`) or no longer
    /// has subscribers for `filter` (a prefix of their filters, or the exact filter of a
    /// shared group `share`). Answered with `InterestAck { seq }` once applied.
    Interest(Box<Interest>),
    /// Every `Interest` up to `seq` from the receiver has been applied by the sender.
    InterestAck { seq: u64 },
    /// To a client id's home shard: `claimant` wants the session.
    Claim {
        client_id: Box<str>,
        claimant: Claimant,
    },
    /// From the home shard: no other shard holds the session; go ahead under `epoch`.
    Granted {
        conn: ConnKey,
        client_id: Box<str>,
        epoch: u64,
    },
    /// From the home shard to the shard holding the session: close the old connection
    /// and hand the session to connection `conn` on shard `to`.
    Takeover(Box<Takeover>),
    /// The session (or none, if it ended or a clean start was asked for) for `conn`.
    /// `stub` names the entry the sender keeps to forward what still reaches it.
    Handoff(Box<Handoff>),
    /// To the home shard: the claim of `client_id` under `epoch` is settled (the
    /// claimer answered CONNACK, or its connection is gone).
    Settled { client_id: Box<str>, epoch: u64 },
    /// To the home shard: the session of `client_id` on shard `owner`, registered under
    /// `epoch`, has ended.
    Release {
        client_id: Box<str>,
        owner: usize,
        epoch: u64,
    },
    /// From the new holder of a moved session to every shard, after its interest: route
    /// to me from now on; fence the stub `stub` on shard `old` and mark me.
    Moved {
        client_id: Box<str>,
        old: usize,
        stub: SessionId,
    },
    /// To the old holder: the sender routes to the new holder now; what it sends after
    /// this need not be forwarded.
    Fence { stub: SessionId },
    /// To the new holder: everything the sender sent before its fence has arrived.
    FenceMark { client_id: Box<str> },
    /// To the new holder: the stub is gone; nothing more is forwarded.
    StubGone { client_id: Box<str> },
    /// From a stub to the new holder: a delivery that reached the old shard.
    Forward(Box<Forward>),
    /// Answered with `InterestAck { seq }` once everything sent before it is handled: a
    /// SUBACK waits for it so retained messages published anywhere before the SUBSCRIBE
    /// are on this shard.
    Barrier { seq: u64 },
    /// A message published through the control plane's API, for this shard's plain
    /// subscribers, or for one member of a shared group: the number of sessions it reached
    /// goes back to the API.
    Tallied(Box<Tallied>),
}

/// Who claims a client id: connection `conn` on shard `shard`, asking for a clean start
/// or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claimant {
    pub shard: usize,
    pub conn: ConnKey,
    pub clean_start: bool,
}

/// See [`Msg::Interest`]: the changes are shared by the messages to every peer.
pub struct Interest {
    pub changes: Arc<[InterestChange]>,
    pub seq: u64,
}

/// One change of a shard's interest.
pub struct InterestChange {
    pub filter: Box<str>,
    pub share: Option<Arc<str>>,
    pub add: bool,
    /// Durable interest: subscriptions of persistent sessions, whose deliveries are
    /// logged (a publisher then asks for a `Durable` answer).
    pub durable: bool,
}

/// See [`Msg::Takeover`].
pub struct Takeover {
    pub client_id: Box<str>,
    pub to: usize,
    pub conn: ConnKey,
    pub clean_start: bool,
    pub epoch: u64,
}

/// See [`Msg::Handoff`].
pub struct Handoff {
    pub conn: ConnKey,
    pub client_id: Box<str>,
    pub session: Option<Box<MovingSession>>,
    pub stub: Option<SessionId>,
    pub epoch: u64,
}

/// See [`Msg::Tallied`].
pub struct Tallied {
    pub msg: Arc<Message>,
    /// The shared group (`$share/g/f`) one member of which gets it; `None`: the plain
    /// subscribers.
    pub share: Option<Arc<str>>,
    pub tally: oneshot::Sender<u64>,
}

/// See [`Msg::Forward`].
pub struct Forward {
    pub client_id: Box<str>,
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIds,
    /// Answer `Durable` to the forwarding shard once the delivery is durable here.
    pub ticket: Option<Ticket>,
    /// As for `Msg::Publish`.
    pub origin: u64,
    pub again: bool,
}

impl From<JobDone> for Msg {
    fn from(done: JobDone) -> Msg {
        Msg::Store(Box::new(done))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn cross_shard_messages_are_send() {
        assert_send::<Msg>();
    }

    #[test]
    fn messages_are_small() {
        assert_eq!(std::mem::size_of::<Msg>(), 40);
    }
}

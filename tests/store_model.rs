//! Property test: random sequences of session events, applied to a plain model and to
//! the store (appends, batches completed late or at once, snapshots written a chunk per
//! turn, obsolete files deleted, clean restarts that recover from the disk). The store's
//! state equals the model's after every step, and so does the state recovered at the end.

mod store_support;

use proptest::collection::vec;
use proptest::prelude::*;
use ringmq::store::Lsn;
use ringmq::store::fuzz::check_snapshot_round_trip;
use ringmq::store::log::LogConfig;
use ringmq::store::snapshot::CompactionPolicy;
use ringmq::store::{Durability, StoreConfig};
use store_support::{CLIENTS, Event, FILTERS, TOPICS, World, recover};

#[derive(Debug, Clone)]
enum Action {
    Event(Event),
    EndTurn { complete: bool },
    Snapshot,
    DeleteObsolete,
    Restart,
}

fn client() -> impl Strategy<Value = usize> {
    0..CLIENTS.len()
}

fn event() -> impl Strategy<Value = Event> {
    let target = (
        client(),
        1u8..=2,
        any::<bool>(),
        any::<bool>(),
        vec(1u32..5, 0..3),
    );
    prop_oneof![
        4 => (client(), any::<bool>(), any::<bool>(), 0u32..100)
            .prop_map(|(client, clean, v5, expiry)| Event::Connect { client, clean, v5, expiry }),
        2 => (client(), proptest::option::of(0u64..9), proptest::option::of(0u64..9))
            .prop_map(|(client, expires_in, will_in)| Event::Disconnect { client, expires_in, will_in }),
        1 => (client(), any::<bool>()).prop_map(|(client, expired)| Event::End { client, expired }),
        3 => (client(), 0..FILTERS.len(), 0u8..3, any::<bool>(), any::<bool>(), 0u8..3, 0u32..3)
            .prop_map(|(client, filter, qos, no_local, rap, rh, sub_id)| Event::Subscribe {
                client, filter, qos, no_local, rap, rh, sub_id,
            }),
        1 => (client(), 0..FILTERS.len()).prop_map(|(client, filter)| Event::Unsubscribe { client, filter }),
        6 => (0..TOPICS.len(), vec(any::<u8>(), 0..24), 0u8..3, any::<bool>(), any::<bool>(), vec(target, 0..4))
            .prop_map(|(topic, payload, qos, retain, expires, targets)| Event::Publish {
                topic, payload, qos, retain, expires, targets,
            }),
        1 => (0..TOPICS.len()).prop_map(|topic| Event::ClearRetained { topic }),
        4 => client().prop_map(|client| Event::Deliver { client }),
        1 => (client(), any::<bool>()).prop_map(|(client, expired)| Event::DropFront { client, expired }),
        4 => (client(), 0usize..4).prop_map(|(client, which)| Event::Ack { client, which }),
        2 => (client(), 1u16..6).prop_map(|(client, pkid)| Event::InboundAdd { client, pkid }),
        1 => (client(), 0usize..4).prop_map(|(client, which)| Event::InboundRelease { client, which }),
        1 => (client(), 0u32..60, proptest::option::of(0u32..60), vec(any::<u8>(), 0..8))
            .prop_map(|(client, delay, expiry, payload)| Event::SetWill { client, delay, expiry, payload }),
        1 => client().prop_map(|client| Event::ClearWill { client }),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        12 => event().prop_map(Action::Event),
        5 => any::<bool>().prop_map(|complete| Action::EndTurn { complete }),
        1 => Just(Action::Snapshot),
        1 => Just(Action::DeleteObsolete),
        1 => Just(Action::Restart),
    ]
}

fn config(durability: Durability) -> StoreConfig {
    StoreConfig {
        log: LogConfig {
            durability,
            segment_bytes: 700,
            ..LogConfig::default()
        },
        compaction: CompactionPolicy::default(),
        snapshot_chunk_bytes: 300,
    }
}

fn run(actions: Vec<Action>, durability: Durability) -> Result<(), TestCaseError> {
    let mut w = World::new(config(durability));
    for a in actions {
        match a {
            Action::Event(e) => w.event(&e),
            Action::EndTurn { complete } => w.end_turn(complete),
            Action::Snapshot => {
                w.end_turn(false);
                w.begin_snapshot();
            }
            Action::DeleteObsolete => w.delete_obsolete(),
            Action::Restart => w.restart(),
        }
        prop_assert_eq!(w.store.state().view(), w.model.clone());
    }
    w.restart();
    prop_assert_eq!(w.store.state().view(), w.model.clone());
    // Once more from the files as they are now, and through a snapshot of that state:
    // `live_bytes` must be exactly what the snapshot takes.
    let r = recover(w.disk().0).expect("recovers");
    let base = Lsn(r.resume.next_lsn.0 - 1);
    let reloaded = check_snapshot_round_trip(r.state, base);
    prop_assert_eq!(reloaded.view(), w.model);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn recovered_state_equals_the_model_fsync(actions in vec(action(), 1..150)) {
        run(actions, Durability::Fsync)?;
    }

    #[test]
    fn recovered_state_equals_the_model_write(actions in vec(action(), 1..150)) {
        run(actions, Durability::Write)?;
    }
}

//! The cross-shard mesh: shards share nothing and talk only through bounded
//! single-producer/single-consumer rings, one per ordered pair of shards ([`spsc`]), so a
//! message from shard A to shard B never takes a lock and a full ring is back-pressure.
pub mod links;
pub mod spsc;

//! ringmq: the MQTT broker as a library; `src/main.rs` is the binary around it.
//!
//! - [`auth`]: authentication (password file, JWT, verification pool) and authorization
//!   (ACL file, token claims), decided off the shards' loops and checked on them.

pub mod auth;

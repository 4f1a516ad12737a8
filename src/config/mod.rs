//! What the broker runs with, from flags, the config file and the host:
//!
//! - [`values`]: the vocabulary they share (listen addresses, core lists, the host);
//! - [`defaults`]: every default and bound, once;
//! - [`cli`]: the flags, which are also the config file's keys;
//! - [`settings`]: flag > file > default, validated, and where each shard runs.

pub mod cli;
pub mod defaults;
pub mod settings;
pub mod values;

//! What the broker runs with: [`cli`] (the flags, which are also the config file's keys)
//! and [`settings`] (flag > file > default, validated, and where each shard runs).

pub mod cli;
pub mod settings;

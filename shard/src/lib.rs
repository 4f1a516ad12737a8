//! ringmq-shard

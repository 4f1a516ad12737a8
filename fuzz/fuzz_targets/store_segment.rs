#![no_main]
// Recover a shard from arbitrary segment bytes: see `ringmq::store::fuzz::fuzz_segment`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq::store::fuzz::fuzz_segment(data));

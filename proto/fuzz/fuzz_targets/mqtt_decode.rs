#![no_main]
// Decode in both versions, re-encode, decode again, compare: see `ringmq_proto::mqtt::fuzz_decode`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq_proto::mqtt::fuzz_decode(data));

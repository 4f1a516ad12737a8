#![no_main]
// Decode frames, re-encode, compare: see `ringmq::store::fuzz::fuzz_record`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq::store::fuzz::fuzz_record(data));

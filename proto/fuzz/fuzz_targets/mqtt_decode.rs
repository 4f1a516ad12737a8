#![no_main]
// Filled in by the codec work (issue 2).
libfuzzer_sys::fuzz_target!(|_data: &[u8]| {});

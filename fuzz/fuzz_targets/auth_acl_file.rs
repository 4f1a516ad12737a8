#![no_main]
// See `ringmq::auth::fuzz::fuzz_acl_file` for what is checked beyond "no panic".
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq::auth::fuzz::fuzz_acl_file(data));

#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| ringmq_proto::ws::fuzz_handshake(data));

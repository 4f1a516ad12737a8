//! Runs the fuzz logic on every committed seed, so the seeds stay valid inputs and the
//! fuzz checks run in every `cargo test`, not only under cargo-fuzz. A few seeds are
//! also checked for what they are meant to contain.

use std::path::PathBuf;

use ringmq_proto::Decoded;
use ringmq_proto::ws::{ServerConfig, fuzz_frames, fuzz_handshake, parse_request, parse_response};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

#[test]
fn frame_seeds_pass_the_fuzz_checks() {
    for (_, data) in seeds("ws_frames") {
        fuzz_frames(&data);
    }
}

#[test]
fn handshake_seeds_pass_the_fuzz_checks() {
    let cfg = ServerConfig::default();
    for (name, data) in seeds("ws_handshake") {
        fuzz_handshake(&data);
        let complete = if name.starts_with("response_101") {
            matches!(
                parse_response(&data, &[0x5a; 16], Some("mqtt"), 8192),
                Ok(Decoded::Complete(..))
            )
        } else if name.starts_with("response_") || name.contains("version_8") {
            continue;
        } else {
            let cfg = if name.starts_with("echo") {
                ServerConfig {
                    path: "/",
                    subprotocol: None,
                    ..cfg
                }
            } else {
                cfg
            };
            matches!(parse_request(&data, &cfg), Ok(Decoded::Complete(..)))
        };
        assert!(complete, "seed {name} is not a valid handshake");
    }
}

//! MQTT topics and filters as NATS subjects, one-to-one.
//!
//! NATS splits a subject into tokens at `.`, forbids empty tokens and white space, and
//! reads the tokens `*` and `>` as wildcards; JetStream key-value keys are narrower still
//! (`[-/_=.A-Za-z0-9]`). MQTT allows every character but `+` and `#` (and `/`, the
//! separator) in a topic level, and empty levels. So each MQTT level becomes one token:
//!
//! - `A`–`Z`, `a`–`z`, `0`–`9` and `-` stay as they are;
//! - every other byte of the level's UTF-8 (`.`, `_`, `*`, `>`, `$`, space, any non-ASCII
//!   byte…) becomes `_` and two upper-case hex digits (`.` → `_2E`);
//! - an empty level becomes the token `_` alone (no other token is `_` alone: an escape
//!   is always three characters).
//!
//! Messages cross on addressed subjects (`ringmq.n.NODE.TOPIC`), so no NATS wildcard is
//! ever written: as a key-value key a filter is written with its wildcards escaped like
//! literal characters ([`filter_key`]); a literal `+` or `#` cannot occur in MQTT, so the
//! key still says which filter it was.
//!
//! Every output uses only `[-_.A-Za-z0-9]`, so it is a valid subject and a valid key.
//! Only what the escaping makes longer is bounded: [`MAX_SUBJECT`].

use std::fmt::Write;

/// The longest subject (or key) the cluster sends: NATS reads a message's subject in its
/// protocol's control line, 4 KiB by default, next to the other fields.
pub const MAX_SUBJECT: usize = 3072;

/// Why tokens could not be read back as MQTT levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectError {
    /// A byte no encoder writes, or an escape that is cut short or not hex.
    BadToken,
    /// The escaped bytes are not UTF-8.
    NotUtf8,
    /// A wildcard token where a topic name was expected.
    Wildcard,
    /// The subject would pass [`MAX_SUBJECT`].
    TooLong,
}

impl std::fmt::Display for SubjectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SubjectError::BadToken => "not a token of an escaped MQTT level",
            SubjectError::NotUtf8 => "the escaped level is not UTF-8",
            SubjectError::Wildcard => "a wildcard where a topic name was expected",
            SubjectError::TooLong => "longer than a cluster subject may be",
        })
    }
}

impl std::error::Error for SubjectError {}

fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Appends one MQTT level as one token.
pub fn push_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('_');
        return;
    }
    for &b in level.as_bytes() {
        if kept(b) {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "_{b:02X}");
        }
    }
}

fn push_levels(path: &str, out: &mut String) -> Result<(), SubjectError> {
    let start = out.len();
    for (i, level) in path.split('/').enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_level(level, out);
    }
    if out.len() - start > MAX_SUBJECT {
        out.truncate(start);
        return Err(SubjectError::TooLong);
    }
    Ok(())
}

/// Appends a topic name as tokens (`a/b.c//d` → `a.b_2Ec._.d`).
pub fn push_topic(topic: &str, out: &mut String) -> Result<(), SubjectError> {
    push_levels(topic, out)
}

/// Appends a filter with its wildcards escaped: a key naming it (`a/+/#` → `a._2B._23`).
pub fn filter_key(filter: &str, out: &mut String) -> Result<(), SubjectError> {
    push_levels(filter, out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Reads one token back as an MQTT level.
pub fn decode_level(token: &str, out: &mut Vec<u8>) -> Result<(), SubjectError> {
    let bytes = token.as_bytes();
    if bytes == b"_" {
        return Ok(());
    }
    if bytes.is_empty() {
        return Err(SubjectError::BadToken);
    }
    if bytes == b"*" || bytes == b">" {
        return Err(SubjectError::Wildcard);
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if kept(b) {
            out.push(b);
            i += 1;
        } else if b == b'_' && i + 2 < bytes.len() {
            let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) else {
                return Err(SubjectError::BadToken);
            };
            let v = hi << 4 | lo;
            // Only bytes the encoder escapes: one spelling per level.
            if kept(v) {
                return Err(SubjectError::BadToken);
            }
            out.push(v);
            i += 3;
        } else {
            return Err(SubjectError::BadToken);
        }
    }
    Ok(())
}

/// Reads tokens (what [`push_topic`] or [`filter_key`] wrote) back as the MQTT topic or
/// filter they came from.
pub fn decode(tokens: &str) -> Result<String, SubjectError> {
    if tokens.len() > MAX_SUBJECT {
        return Err(SubjectError::TooLong);
    }
    let mut out = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.split('.').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        decode_level(token, &mut out)?;
    }
    String::from_utf8(out).map_err(|_| SubjectError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(t: &str) -> String {
        let mut s = String::new();
        push_topic(t, &mut s).unwrap();
        s
    }

    fn valid_subject(s: &str) -> bool {
        !s.is_empty()
            && s.split('.')
                .all(|t| !t.is_empty() && t.bytes().all(|b| kept(b) || b == b'_'))
    }

    #[test]
    fn examples() {
        assert_eq!(topic("a/b"), "a.b");
        assert_eq!(topic("a.b/c"), "a_2Eb.c");
        assert_eq!(topic("a//b"), "a._.b");
        assert_eq!(topic("/"), "_._");
        assert_eq!(topic(""), "_");
        assert_eq!(topic("_"), "_5F");
        assert_eq!(topic("*/>"), "_2A._3E");
        assert_eq!(topic("$SYS/x y"), "_24SYS.x_20y");
        assert_eq!(topic("é"), "_C3_A9");
        let mut k = String::new();
        filter_key("a/+/#", &mut k).unwrap();
        assert_eq!(k, "a._2B._23");
        assert_eq!(decode(&k).unwrap(), "a/+/#");
    }

    #[test]
    fn every_single_byte_level_round_trips() {
        for c in (0u32..0x800).filter_map(char::from_u32) {
            for level in [c.to_string(), format!("x{c}"), format!("{c}{c}")] {
                let t = topic(&level);
                assert!(valid_subject(&t), "{level:?} → {t:?}");
                assert_eq!(decode(&t).unwrap(), level);
            }
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "", "a..b", "_4", "_4G", "_zz", "a_", "_41", "a b", "*", "a.>", "_2e", "a/b",
        ] {
            assert!(decode(bad).is_err(), "{bad:?} was read");
        }
        assert_eq!(decode("_FF"), Err(SubjectError::NotUtf8));
    }

    #[test]
    fn too_long_is_refused_not_cut() {
        let long = ".".repeat(MAX_SUBJECT / 3 + 1);
        let mut s = String::from("keep");
        assert_eq!(push_topic(&long, &mut s), Err(SubjectError::TooLong));
        assert_eq!(s, "keep");
        assert_eq!(filter_key(&long, &mut s), Err(SubjectError::TooLong));
        assert_eq!(s, "keep");
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-c]{1,2}",
            "[a.b_*>$ ]{1,3}",
            "\\PC{1,3}".prop_map(|s| s.replace(['/', '+', '#'], "")),
        ]
    }

    fn topic_name() -> impl Strategy<Value = String> {
        proptest::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        let flevel = prop_oneof![3 => level(), 1 => Just("+".to_string())];
        (proptest::collection::vec(flevel, 1..5), any::<bool>()).prop_map(|(mut l, hash)| {
            if hash {
                l.push("#".into());
            }
            l.join("/")
        })
    }

    proptest! {
        #[test]
        fn topics_round_trip_and_are_valid(t in topic_name()) {
            let s = topic(&t);
            prop_assert!(valid_subject(&s), "{:?} → {:?}", t, s);
            prop_assert_eq!(decode(&s).unwrap(), t);
        }

        #[test]
        fn distinct_topics_give_distinct_subjects(a in topic_name(), b in topic_name()) {
            prop_assert_eq!(a == b, topic(&a) == topic(&b));
        }

        #[test]
        fn filter_keys_round_trip(f in filter()) {
            let mut k = String::new();
            filter_key(&f, &mut k).unwrap();
            prop_assert!(valid_subject(&k));
            prop_assert_eq!(decode(&k).unwrap(), f);
        }
    }
}

//! MQTT topic names and topic filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7 and §4.8.2).
//!
//! A PUBLISH carries a *topic name*; a SUBSCRIBE carries *topic filters*, which may use the
//! wildcards `+` (exactly one level) and `#` (this level and every level below it). This
//! module holds the rules both the broker and the client swarm need, in one place:
//!
//! - [`validate_name`] and [`validate_filter`]: the spec's syntax rules, each failure a
//!   distinct [`TopicError`] so the session layer can pick the reason code
//!   (MQTT 5: 0x90 Topic Name invalid, 0x8F Topic Filter invalid, 0x9E for `$share`
//!   where shared subscriptions are switched off).
//! - [`parse_filter`]: splits a shared subscription `$share/{group}/{filter}` into its
//!   group and the filter that is matched against topic names; anything else is a plain
//!   filter.
//! - [`matches()`]: the spec's matching of one filter against one name, including the rule
//!   that a filter starting with a wildcard never matches a name starting with `$`
//!   (`$SYS/...`). The shard's topic trie is the fast path for many filters; this
//!   function is the definition it is tested against and the path for one-off checks.
//!
//! Levels are the pieces between `/` separators, and an empty piece is a level too:
//! `/finance` has two levels, `""` and `"finance"`, and `/` has two empty levels.
//! Matching compares levels byte for byte, so it is case sensitive and needs no Unicode
//! normalisation; `+`, `#` and `/` are ASCII, so scanning bytes never splits a character.
//!
//! Nothing here allocates: every function works on the borrowed `&str` from the packet.

use core::fmt;

/// The longest topic name or filter, in bytes: MQTT strings carry a 16-bit length.
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The prefix that marks a shared subscription's topic filter (MQTT 5.0 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter was refused.
///
/// When a string breaks several rules, the first of these checks that fails decides:
/// emptiness, length, NUL, then the `$share` group, then the wildcard rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicError {
    /// Zero bytes long; names and filters need at least one character.
    Empty,
    /// Longer than [`MAX_TOPIC_LEN`] bytes.
    TooLong,
    /// Contains U+0000, which MQTT forbids in topics.
    ContainsNul,
    /// A topic name (PUBLISH) contains `+` or `#`.
    WildcardInName,
    /// A `#` that is not alone in its level or not in the last level (`sport/tennis#`,
    /// `sport/tennis/#/ranking`).
    MisplacedMultiLevelWildcard,
    /// A `+` that is not alone in its level (`sport+`).
    MisplacedSingleLevelWildcard,
    /// The share name of `$share/{group}/...` is empty or contains `+` or `#`
    /// (it ends at the first `/`, so it never contains one).
    InvalidSharedGroup,
    /// `$share/{group}` with no `/` after the group, or nothing after that `/`.
    MissingSharedFilter,
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopicError::Empty => "topic is empty",
            TopicError::TooLong => "topic is longer than 65535 bytes",
            TopicError::ContainsNul => "topic contains U+0000",
            TopicError::WildcardInName => "topic name contains a wildcard ('+' or '#')",
            TopicError::MisplacedMultiLevelWildcard => {
                "'#' must be alone in the last level of a topic filter"
            }
            TopicError::MisplacedSingleLevelWildcard => {
                "'+' must be alone in its level of a topic filter"
            }
            TopicError::InvalidSharedGroup => {
                "shared subscription group is empty or contains '+' or '#'"
            }
            TopicError::MissingSharedFilter => "shared subscription has no topic filter",
        })
    }
}

impl std::error::Error for TopicError {}

/// A topic filter from a SUBSCRIBE or UNSUBSCRIBE, as [`parse_filter`] classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filter<'a> {
    /// An ordinary filter, matched as it stands.
    Plain(&'a str),
    /// A shared subscription `$share/{group}/{filter}`: each matching message goes to one
    /// session of the group. Only `filter` takes part in matching.
    Shared {
        /// The share name, at least one character, without `/`, `+` or `#`.
        group: &'a str,
        /// The topic filter proper, already validated.
        filter: &'a str,
    },
}

impl<'a> Filter<'a> {
    /// The part of the filter that is matched against topic names (without
    /// `$share/{group}/` for a shared subscription).
    pub fn filter(&self) -> &'a str {
        match *self {
            Filter::Plain(filter) | Filter::Shared { filter, .. } => filter,
        }
    }

    /// The share name of a shared subscription, `None` for a plain filter.
    pub fn group(&self) -> Option<&'a str> {
        match *self {
            Filter::Plain(_) => None,
            Filter::Shared { group, .. } => Some(group),
        }
    }
}

/// The checks common to names and filters: not empty, not too long, no NUL.
fn check_string(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        Err(TopicError::Empty)
    } else if s.len() > MAX_TOPIC_LEN {
        Err(TopicError::TooLong)
    } else if s.as_bytes().contains(&0) {
        Err(TopicError::ContainsNul)
    } else {
        Ok(())
    }
}

/// Checks a topic name from a PUBLISH: 1 to [`MAX_TOPIC_LEN`] bytes, no U+0000, no `+`
/// or `#`. Names starting with `$` are syntactically valid; whether a client may
/// publish to them is policy, decided above the codec.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    check_string(name)?;
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a topic filter against the wildcard rules: `+` alone in its level, `#` alone in
/// the last level. `$share/...` gets no special treatment here; use [`parse_filter`] for
/// filters from a SUBSCRIBE.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_string(filter)?;
    check_wildcards(filter.as_bytes())
}

/// The wildcard rules on a filter already known to be non-empty, short and NUL-free.
fn check_wildcards(filter: &[u8]) -> Result<(), TopicError> {
    let last = filter.len() - 1;
    for (i, &b) in filter.iter().enumerate() {
        let starts_level = i == 0 || filter[i - 1] == b'/';
        match b {
            b'+' if !starts_level || (i < last && filter[i + 1] != b'/') => {
                return Err(TopicError::MisplacedSingleLevelWildcard);
            }
            // `#` must start its level and end the whole filter.
            b'#' if !starts_level || i != last => {
                return Err(TopicError::MisplacedMultiLevelWildcard);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Classifies and validates a topic filter from a SUBSCRIBE or UNSUBSCRIBE.
///
/// A filter that starts with `$share/` is a shared subscription (MQTT 5.0 §4.8.2): the
/// share name runs to the next `/`, must be at least one character and free of `+` and
/// `#`, and must be followed by `/` and a valid, non-empty filter. Everything else
/// (`$share` alone included) is validated as a plain filter. The length limit applies to
/// the whole string, as it travels on the wire.
pub fn parse_filter(s: &str) -> Result<Filter<'_>, TopicError> {
    check_string(s)?;
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        check_wildcards(s.as_bytes())?;
        return Ok(Filter::Plain(s));
    };
    let (group, filter) = rest.split_once('/').unwrap_or((rest, ""));
    if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::InvalidSharedGroup);
    }
    if filter.is_empty() {
        return Err(TopicError::MissingSharedFilter);
    }
    check_wildcards(filter.as_bytes())?;
    Ok(Filter::Shared { group, filter })
}

/// Whether the topic filter `filter` matches the topic name `name`, per the spec.
///
/// `+` matches exactly one level (an empty one included), `#` matches its parent level
/// and any number of levels below (`sport/#` matches `sport`), and a filter whose first
/// level is `+` or `#` never matches a name starting with `$` (`#` does not match
/// `$SYS/uptime`; `$SYS/#` does).
///
/// `filter` must be a valid plain filter (see [`validate_filter`]); for a shared
/// subscription pass [`Filter::filter`], since the `$share/{group}/` part plays no role
/// in matching. An invalid filter gives an unspecified answer, never a panic.
pub fn matches(filter: &str, name: &str) -> bool {
    // MQTT-4.7.2-1: `$` topics are for the server's own use and are only matched by
    // filters that spell out their first level.
    if name.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = levels(filter);
    let mut name_levels = levels(name);
    loop {
        match (filter_levels.next(), name_levels.next()) {
            // `#` also matches when the name has no more levels: it includes the parent.
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(n)) if f == n => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The levels of a topic name or filter, split on `/`. Empty levels are yielded too:
/// `/finance` gives `""` and `"finance"`, `/` gives two empty levels.
pub fn levels(s: &str) -> impl Iterator<Item = &str> + Clone {
    s.split('/')
}

/// Whether a (valid) topic filter contains a wildcard, i.e. can match more than one name.
pub fn is_wildcard_filter(filter: &str) -> bool {
    filter.bytes().any(|b| b == b'+' || b == b'#')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_error_display_is_specific() {
        assert_eq!(
            TopicError::MisplacedSingleLevelWildcard.to_string(),
            "'+' must be alone in its level of a topic filter"
        );
        assert_eq!(TopicError::Empty.to_string(), "topic is empty");
    }

    #[test]
    fn topic_max_len_is_inclusive() {
        let longest = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(validate_name(&longest), Ok(()));
        assert_eq!(validate_filter(&longest), Ok(()));
        let too_long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_name(&too_long), Err(TopicError::TooLong));
        assert_eq!(validate_filter(&too_long), Err(TopicError::TooLong));
        assert_eq!(parse_filter(&too_long), Err(TopicError::TooLong));
    }

    #[test]
    fn topic_shared_length_counts_the_prefix() {
        // The limit is on the string as sent, `$share/g/` included.
        let inner = "a".repeat(MAX_TOPIC_LEN - "$share/g/".len());
        assert!(parse_filter(&format!("$share/g/{inner}")).is_ok());
        assert_eq!(
            parse_filter(&format!("$share/g/{inner}a")),
            Err(TopicError::TooLong)
        );
    }

    #[test]
    fn topic_levels_keep_empty_levels() {
        assert_eq!(levels("/finance").collect::<Vec<_>>(), ["", "finance"]);
        assert_eq!(levels("/").collect::<Vec<_>>(), ["", ""]);
        assert_eq!(levels("a//b").collect::<Vec<_>>(), ["a", "", "b"]);
        assert_eq!(levels("sport").collect::<Vec<_>>(), ["sport"]);
    }

    #[test]
    fn topic_filter_accessors() {
        let plain = parse_filter("sport/+").unwrap();
        assert_eq!((plain.filter(), plain.group()), ("sport/+", None));
        let shared = parse_filter("$share/g/sport/+").unwrap();
        assert_eq!((shared.filter(), shared.group()), ("sport/+", Some("g")));
    }

    #[test]
    fn topic_wildcard_filter_detection() {
        assert!(is_wildcard_filter("#"));
        assert!(is_wildcard_filter("a/+/b"));
        assert!(!is_wildcard_filter("a/b"));
        assert!(!is_wildcard_filter("$SYS/x"));
    }

    #[test]
    fn topic_multibyte_levels_match_bytewise() {
        assert!(matches("ünï/+/çödé", "ünï/→/çödé"));
        assert!(!matches("ünï/#", "uni/x"));
        assert_eq!(validate_filter("ünï/+/€"), Ok(()));
    }
}

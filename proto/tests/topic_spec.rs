//! Topic names and filters against the specification: every example of MQTT 3.1.1 §4.7 and
//! MQTT 5.0 §4.7 and §4.8.2 (the two versions give the same examples for §4.7), a table of
//! valid and invalid strings with the exact error, and property tests of `matches` against
//! a reference implementation written from the definitions.
//!
//! Test names start with `topic_` so that `cargo test -p ringmq-proto topic` selects them.

use ringmq_proto::topic::{
    Filter, TopicError, is_wildcard_filter, levels, matches, parse_filter, validate_filter,
    validate_name,
};

/// Checks one row of a matching table: the filter and the name are valid, and `matches`
/// gives the expected answer.
fn check_match(filter: &str, name: &str, expected: bool) {
    let parsed = parse_filter(filter).unwrap_or_else(|e| panic!("{filter:?} refused: {e}"));
    validate_name(name).unwrap_or_else(|e| panic!("{name:?} refused: {e}"));
    assert_eq!(
        matches(parsed.filter(), name),
        expected,
        "filter {filter:?} vs name {name:?}"
    );
}

fn check_table(table: &[(&str, &str, bool)]) {
    for &(filter, name, expected) in table {
        check_match(filter, name, expected);
    }
}

/// §4.7.1.1: "/" separates levels; adjacent separators make a zero-length level.
#[test]
fn topic_spec_4_7_1_1_separator_and_empty_levels() {
    check_table(&[
        ("sport/tennis/player1", "sport/tennis/player1", true),
        ("sport//player1", "sport//player1", true),
        ("sport/+/player1", "sport//player1", true),
        ("sport/+/player1", "sport/player1", false),
    ]);
}

/// §4.7.1.2: the multi-level wildcard.
#[test]
fn topic_spec_4_7_1_2_multi_level_wildcard() {
    check_table(&[
        // "sport/tennis/player1/#" receives messages published to these names.
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        // "sport/#" also matches the singular "sport": # includes the parent level.
        ("sport/#", "sport", true),
        // "#" is valid and receives every Application Message.
        ("#", "sport", true),
        ("#", "sport/tennis/player1", true),
        ("#", "/", true),
        ("#", "/finance", true),
        // "sport/tennis/#" is valid.
        ("sport/tennis/#", "sport/tennis", true),
        ("sport/tennis/#", "sport/tennis/player1/ranking", true),
        ("sport/tennis/#", "sport/tennisplayer1", false),
        ("sport/tennis/#", "sport", false),
    ]);
    // "sport/tennis#" and "sport/tennis/#/ranking" are not valid.
    assert_eq!(
        validate_filter("sport/tennis#"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        validate_filter("sport/tennis/#/ranking"),
        Err(TopicError::MisplacedMultiLevelWildcard)
    );
}

/// §4.7.1.3: the single-level wildcard.
#[test]
fn topic_spec_4_7_1_3_single_level_wildcard() {
    check_table(&[
        // "sport/tennis/+" matches "sport/tennis/player1" and "sport/tennis/player2",
        // but not "sport/tennis/player1/ranking".
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        // "sport/+" does not match "sport" but does match "sport/".
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        // "+", "+/tennis/#" and "sport/+/player1" are valid.
        ("+", "sport", true),
        ("+/tennis/#", "sport/tennis", true),
        ("+/tennis/#", "sport/tennis/player1/ranking", true),
        ("+/tennis/#", "sport/golf/player1", false),
        ("sport/+/player1", "sport/tennis/player1", true),
        ("sport/+/player1", "sport/tennis/player2", false),
        // "/finance" matches "+/+" and "/+", but not "+".
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
    ]);
    // "sport+" is not valid.
    assert_eq!(
        validate_filter("sport+"),
        Err(TopicError::MisplacedSingleLevelWildcard)
    );
}

/// §4.7.2: topics beginning with `$`.
#[test]
fn topic_spec_4_7_2_dollar_topics() {
    check_table(&[
        // A subscription to "#" receives no message published to a topic beginning with $.
        ("#", "$SYS/monitor/Clients", false),
        ("#", "$SYS", false),
        ("#", "$", false),
        // "+/monitor/Clients" does not receive messages published to "$SYS/monitor/Clients".
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("+/monitor/Clients", "SYS/monitor/Clients", true),
        ("+/#", "$SYS/monitor", false),
        ("+", "$SYS", false),
        // "$SYS/#" receives messages published to topics beginning with "$SYS/".
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        // "$SYS/monitor/+" receives messages published to "$SYS/monitor/Clients".
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        // To receive both, a client subscribes to "#" and "$SYS/#".
        ("#", "sport/tennis", true),
        ("$SYS/#", "sport/tennis", false),
        // The rule is about the first character of the name only, and about wildcards in
        // the first level of the filter only.
        ("sport/+", "sport/$x", true),
        ("sport/#", "sport/$x/y", true),
        ("$share", "$share", true),
    ]);
}

/// §4.7.3: topic semantics and usage.
#[test]
fn topic_spec_4_7_3_semantics_and_usage() {
    check_table(&[
        // Case sensitive: "ACCOUNTS" and "Accounts" are two different topic names.
        ("ACCOUNTS", "Accounts", false),
        ("Accounts", "ACCOUNTS", false),
        ("ACCOUNTS", "ACCOUNTS", true),
        // Spaces are allowed: "Accounts payable" is a valid topic name.
        ("Accounts payable", "Accounts payable", true),
        ("Accounts payable", "Accounts", false),
        // A leading "/" makes a distinct name: "/finance" is different from "finance".
        ("/finance", "finance", false),
        ("finance", "/finance", false),
        ("/finance", "/finance", true),
        // A name or filter consisting only of "/" is valid.
        ("/", "/", true),
        ("/", "//", false),
        ("+/+", "/", true),
    ]);
    // At least one character long; no NUL; at most 65,535 bytes (unit tests cover the
    // length limit).
    assert_eq!(validate_name(""), Err(TopicError::Empty));
    assert_eq!(validate_filter(""), Err(TopicError::Empty));
    assert_eq!(validate_name("a\0"), Err(TopicError::ContainsNul));
    assert_eq!(validate_filter("a\0"), Err(TopicError::ContainsNul));
}

/// §4.8.2 (MQTT 5.0): shared subscriptions.
#[test]
fn topic_spec_4_8_2_shared_subscriptions() {
    // "$share/consumer1/sport/tennis/+" and "$share/consumer2/sport/tennis/+" are distinct
    // shared subscriptions; both match the same topics as "sport/tennis/+".
    let one = parse_filter("$share/consumer1/sport/tennis/+").unwrap();
    let two = parse_filter("$share/consumer2/sport/tennis/+").unwrap();
    assert_eq!(
        one,
        Filter::Shared {
            group: "consumer1",
            filter: "sport/tennis/+"
        }
    );
    assert_eq!(
        two,
        Filter::Shared {
            group: "consumer2",
            filter: "sport/tennis/+"
        }
    );
    assert_ne!(one, two);
    for name in [
        "sport/tennis/player1",
        "sport/tennis/player2",
        "sport/tennis/player1/ranking",
        "sport/tennis",
    ] {
        let plain = matches("sport/tennis/+", name);
        assert_eq!(matches(one.filter(), name), plain, "{name}");
        assert_eq!(matches(two.filter(), name), plain, "{name}");
    }
    check_match(
        "$share/consumer1/sport/tennis/+",
        "sport/tennis/player1",
        true,
    );

    // "$share/consumer1//finance" matches the same topics as "/finance".
    let finance = parse_filter("$share/consumer1//finance").unwrap();
    assert_eq!(
        finance,
        Filter::Shared {
            group: "consumer1",
            filter: "/finance"
        }
    );
    check_match("$share/consumer1//finance", "/finance", true);
    check_match("$share/consumer1//finance", "finance", false);

    // "$share/consumer1//finance" and "$share/consumer1/sport/tennis/+" are distinct
    // shared subscriptions even though they have the same ShareName.
    assert_eq!(finance.group(), one.group());
    assert_ne!(finance, one);

    // MQTT-4.8.2-1: the ShareName is at least one character long.
    assert_eq!(
        parse_filter("$share//finance"),
        Err(TopicError::InvalidSharedGroup)
    );
    // MQTT-4.8.2-2: no "/", "+" or "#" in the ShareName, which is followed by "/" and a
    // Topic Filter.
    assert_eq!(
        parse_filter("$share/con+sumer/a"),
        Err(TopicError::InvalidSharedGroup)
    );
    assert_eq!(
        parse_filter("$share/#/a"),
        Err(TopicError::InvalidSharedGroup)
    );
    assert_eq!(
        parse_filter("$share/consumer1"),
        Err(TopicError::MissingSharedFilter)
    );
    assert_eq!(
        parse_filter("$share/consumer1/"),
        Err(TopicError::MissingSharedFilter)
    );
    // The part after the group is an ordinary filter, with the ordinary rules.
    assert_eq!(
        parse_filter("$share/consumer1/sport+"),
        Err(TopicError::MisplacedSingleLevelWildcard)
    );
    // The `$` rule applies to the inner filter: "$share/g/#" does not match "$SYS/x".
    check_match("$share/g/#", "$SYS/x", false);
    check_match("$share/g/$SYS/#", "$SYS/x", true);
}

/// Valid and invalid topic names, with the exact error.
#[test]
fn topic_name_validation_table() {
    let table: &[(&str, Result<(), TopicError>)] = &[
        ("sport/tennis/player1", Ok(())),
        ("Accounts payable", Ok(())),
        ("/", Ok(())),
        ("//", Ok(())),
        ("/finance", Ok(())),
        ("finance/", Ok(())),
        ("$SYS/monitor/Clients", Ok(())),
        ("$share/g/a", Ok(())),
        ("ünïcödé/€", Ok(())),
        ("", Err(TopicError::Empty)),
        ("\0", Err(TopicError::ContainsNul)),
        ("sport/\0/x", Err(TopicError::ContainsNul)),
        ("+", Err(TopicError::WildcardInName)),
        ("#", Err(TopicError::WildcardInName)),
        ("sport/+", Err(TopicError::WildcardInName)),
        ("sport/tennis#", Err(TopicError::WildcardInName)),
        ("a+b", Err(TopicError::WildcardInName)),
        // NUL is reported before a wildcard, wherever each sits.
        ("+/\0", Err(TopicError::ContainsNul)),
    ];
    for &(name, expected) in table {
        assert_eq!(validate_name(name), expected, "name {name:?}");
    }
}

/// Valid and invalid plain topic filters, with the exact error.
#[test]
fn topic_filter_validation_table() {
    let table: &[(&str, Result<(), TopicError>)] = &[
        ("#", Ok(())),
        ("+", Ok(())),
        ("/", Ok(())),
        ("//", Ok(())),
        ("sport/#", Ok(())),
        ("sport/tennis/#", Ok(())),
        ("+/tennis/#", Ok(())),
        ("sport/+/player1", Ok(())),
        ("+/+", Ok(())),
        ("/+", Ok(())),
        ("+/", Ok(())),
        ("+/#", Ok(())),
        ("/#", Ok(())),
        ("a//+//#", Ok(())),
        ("$SYS/#", Ok(())),
        ("$share", Ok(())),
        ("", Err(TopicError::Empty)),
        ("a\0", Err(TopicError::ContainsNul)),
        (
            "sport/tennis#",
            Err(TopicError::MisplacedMultiLevelWildcard),
        ),
        (
            "sport/tennis/#/ranking",
            Err(TopicError::MisplacedMultiLevelWildcard),
        ),
        ("#/", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("##", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("#a", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("a#/b", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("#+", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("sport+", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("+sport", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("a/b+/c", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("++", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("+#", Err(TopicError::MisplacedSingleLevelWildcard)),
        // The first misplaced wildcard from the left decides.
        ("a+/#/b", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("#/a+", Err(TopicError::MisplacedMultiLevelWildcard)),
        // NUL is reported before any wildcard error.
        ("sport+\0", Err(TopicError::ContainsNul)),
    ];
    for &(filter, expected) in table {
        assert_eq!(validate_filter(filter), expected, "filter {filter:?}");
        // Without a `$share/` prefix, parse_filter agrees with validate_filter.
        assert_eq!(
            parse_filter(filter).map(|f| f.filter()),
            expected.map(|()| filter),
            "parse_filter {filter:?}"
        );
    }
}

/// `$share/...` filters through `parse_filter`, with the exact result.
#[test]
fn topic_shared_filter_table() {
    let table: &[(&str, Result<Filter<'_>, TopicError>)] = &[
        (
            "$share/g/a/b",
            Ok(Filter::Shared {
                group: "g",
                filter: "a/b",
            }),
        ),
        (
            "$share/g/#",
            Ok(Filter::Shared {
                group: "g",
                filter: "#",
            }),
        ),
        (
            "$share/g//",
            Ok(Filter::Shared {
                group: "g",
                filter: "/",
            }),
        ),
        (
            "$share/$g/+",
            Ok(Filter::Shared {
                group: "$g",
                filter: "+",
            }),
        ),
        (
            "$share/g/$share/h/x",
            Ok(Filter::Shared {
                group: "g",
                filter: "$share/h/x",
            }),
        ),
        // Not shared: the prefix is exactly "$share/", case sensitive.
        ("$share", Ok(Filter::Plain("$share"))),
        ("$SHARE/g/a", Ok(Filter::Plain("$SHARE/g/a"))),
        ("$sharex/g/a", Ok(Filter::Plain("$sharex/g/a"))),
        ("a/$share/g/b", Ok(Filter::Plain("a/$share/g/b"))),
        ("$share/", Err(TopicError::InvalidSharedGroup)),
        ("$share//a", Err(TopicError::InvalidSharedGroup)),
        ("$share/+/a", Err(TopicError::InvalidSharedGroup)),
        ("$share/#", Err(TopicError::InvalidSharedGroup)),
        ("$share/g+/a", Err(TopicError::InvalidSharedGroup)),
        ("$share/g", Err(TopicError::MissingSharedFilter)),
        ("$share/g/", Err(TopicError::MissingSharedFilter)),
        ("$share/g/a#", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("$share/g/#/a", Err(TopicError::MisplacedMultiLevelWildcard)),
        ("$share/g/+a", Err(TopicError::MisplacedSingleLevelWildcard)),
        ("$share/g/a\0", Err(TopicError::ContainsNul)),
        ("$share/\0/a", Err(TopicError::ContainsNul)),
    ];
    for &(filter, expected) in table {
        assert_eq!(parse_filter(filter), expected, "filter {filter:?}");
    }
}

#[test]
fn topic_levels_and_wildcard_detection() {
    assert_eq!(
        levels("+/tennis/#").collect::<Vec<_>>(),
        ["+", "tennis", "#"]
    );
    assert_eq!(levels("/finance").count(), 2);
    assert!(is_wildcard_filter("+/tennis/#"));
    assert!(is_wildcard_filter("sport/#"));
    assert!(!is_wildcard_filter("sport/tennis"));
}

/// Property tests: `matches` against a reference written from the definitions, on filters
/// and names built from small level alphabets so that matches are frequent.
mod topic_properties {
    use super::*;
    use proptest::prelude::*;

    /// The reference: a name matches a filter when it has exactly as many levels (or, with a
    /// trailing `#`, at least as many as the levels before it) and each filter level is `+`
    /// or equal to the name's level; plus the `$` rule.
    fn reference(filter: &[&str], name: &[&str]) -> bool {
        let starts_with_wildcard = filter[0] == "+" || filter[0] == "#";
        if name[0].starts_with('$') && starts_with_wildcard {
            return false;
        }
        let (fixed, multi) = match filter.split_last() {
            Some((&"#", before)) => (before, true),
            _ => (filter, false),
        };
        let length_ok = if multi {
            name.len() >= fixed.len()
        } else {
            name.len() == fixed.len()
        };
        length_ok && fixed.iter().zip(name).all(|(f, n)| *f == "+" || f == n)
    }

    fn name_level() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just(""),
            Just("a"),
            Just("b"),
            Just("ab"),
            Just("$"),
            Just("$a")
        ]
    }

    fn filter_level() -> impl Strategy<Value = &'static str> {
        prop_oneof![3 => name_level(), 1 => Just("+")]
    }

    /// A filter's levels: up to five fixed or `+` levels, then maybe `#` (never empty).
    fn filter_levels() -> impl Strategy<Value = Vec<&'static str>> {
        (prop::collection::vec(filter_level(), 0..5), any::<bool>()).prop_map(
            |(mut levels, multi)| {
                // An empty list, or a lone empty level, would be an empty string.
                if multi || levels.is_empty() || levels == [""] {
                    levels.push("#");
                }
                levels
            },
        )
    }

    /// A name's levels: one to five, but never the single empty level (an empty string).
    fn name_levels() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(name_level(), 1..6).prop_filter("empty name", |l| l != &[""])
    }

    /// A filter derived from a name (levels kept, replaced by `+`, cut short by `#`), so
    /// that most pairs match and the interesting boundaries are hit.
    fn derived_pair() -> impl Strategy<Value = (Vec<&'static str>, Vec<&'static str>)> {
        name_levels().prop_flat_map(|name| {
            let n = name.len();
            (
                prop::collection::vec(0u8..4, n),
                0..=n + 1,
                any::<bool>(),
                Just(name),
            )
                .prop_map(move |(choices, cut, multi, name)| {
                    let mut filter: Vec<&str> = name
                        .iter()
                        .zip(&choices)
                        .map(|(level, c)| match c {
                            0 => "+",
                            1 => "b",
                            _ => level,
                        })
                        .collect();
                    filter.truncate(cut);
                    if multi || filter.is_empty() || filter == [""] {
                        filter.push("#");
                    } else if cut > n {
                        // One level too many: only `#` could still match.
                        filter.push("+");
                    }
                    (filter, name)
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn topic_matches_agrees_with_reference(filter in filter_levels(), name in name_levels()) {
            let filter_str = filter.join("/");
            let name_str = name.join("/");
            prop_assert_eq!(validate_filter(&filter_str), Ok(()));
            prop_assert_eq!(validate_name(&name_str), Ok(()));
            prop_assert_eq!(matches(&filter_str, &name_str), reference(&filter, &name),
                "filter {:?} name {:?}", filter_str, name_str);
        }

        #[test]
        fn topic_matches_agrees_with_reference_on_near_misses((filter, name) in derived_pair()) {
            let filter_str = filter.join("/");
            let name_str = name.join("/");
            prop_assert_eq!(validate_filter(&filter_str), Ok(()));
            prop_assert_eq!(matches(&filter_str, &name_str), reference(&filter, &name),
                "filter {:?} name {:?}", filter_str, name_str);
        }

        /// A name used as a filter matches itself, and only names equal to it.
        #[test]
        fn topic_name_as_filter_matches_only_itself(a in name_levels(), b in name_levels()) {
            let (a, b) = (a.join("/"), b.join("/"));
            prop_assert!(matches(&a, &a));
            prop_assert_eq!(matches(&a, &b), a == b);
        }

        /// validate_filter accepts exactly the strings whose every level is `+`, `#` in last
        /// position, or free of wildcards; and it never panics.
        #[test]
        fn topic_validate_filter_agrees_with_level_rules(s in "[ab+#/]{1,10}") {
            let parts: Vec<&str> = s.split('/').collect();
            let valid = parts.iter().enumerate().all(|(i, level)| {
                *level == "+"
                    || (*level == "#" && i == parts.len() - 1)
                    || !level.contains(['+', '#'])
            });
            prop_assert_eq!(validate_filter(&s).is_ok(), valid, "{:?}", s);
        }
    }
}

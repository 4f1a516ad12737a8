//! The ACL file, in mosquitto's format, compiled once into per-user rule tries.
//!
//! ```text
//! # Lines before the first `user` line apply to clients without a username.
//! topic read $SYS/#
//!
//! user alice
//! topic readwrite home/alice/#
//! topic deny home/alice/secret
//!
//! # Pattern lines apply to every client, with %c = client id and %u = username.
//! pattern write devices/%c/state
//! pattern read users/%u/#
//! ```
//!
//! ## The format (as mosquitto reads it)
//!
//! - A line is trimmed of trailing white space. Blank lines are skipped; a line whose first
//!   non-blank character is `#` is a comment (mosquitto only recognises `#` in the first
//!   column and calls an indented one an invalid line; accepting it loses nothing).
//! - `user NAME`: the `topic` lines that follow belong to NAME (the rest of the line,
//!   trimmed, spaces inside included). A name may appear in several `user` lines; its
//!   rules add up.
//! - `topic [read|write|readwrite|deny] FILTER` and `pattern [...] FILTER`: with one word
//!   after the keyword, that word is the filter and the access is `readwrite` — so
//!   `topic read` alone grants read and write on the topic `read`, exactly as in
//!   mosquitto. With more words, the first is the access and the rest of the line, trimmed,
//!   is the filter (it may contain spaces). The filter must be a valid MQTT topic filter.
//! - Words are separated by spaces or tabs (mosquitto: spaces only).
//! - `pattern` lines may use `%c` and `%u` as whole levels. mosquitto ≥ 2.1 and its dynamic
//!   security plugin match them as whole levels only; mosquitto 2.0 substituted them
//!   anywhere in the string, which lets a client id containing `/` reach into another
//!   client's subtree. A `%c` or `%u` inside a longer level (`dev-%c`) is refused with an
//!   error rather than silently read as literal text.
//!
//! Unlike mosquitto, which logs and skips some bad lines, any bad line refuses the whole
//! file with an error naming the line: a reload keeps the rules in force until the file is
//! fixed.
//!
//! ## The decision
//!
//! For a client with username U (or none) and client id C, the rules that apply are U's
//! `topic` rules (the anonymous block's when there is no username) and every `pattern`
//! rule. Then:
//!
//! 1. Writing to `$SYS/...` (or publishing to a `$share/...` name) is refused whatever the
//!    file says; `$SYS` is read-only to clients (mosquitto's `acl__check_dollar`).
//! 2. A matching `deny` rule refuses. Deny wins across the user's rules and the patterns;
//!    mosquitto checks the user's rules first and lets a user allow win over a pattern
//!    deny, which surprises operators who write a pattern deny as a blanket ban.
//! 3. A matching rule with the needed access (write to publish, read to subscribe or
//!    receive) allows.
//! 4. Otherwise refused: with an ACL file, what is not granted is denied.
//!
//! Clients whose username or client id contains `+` or `#` get no grant from pattern rules
//! (mosquitto refuses them outright at the pattern stage); pattern deny rules still apply.
//!
//! A subscription filter is allowed when one rule with read access *covers* it (matches
//! every topic the filter can match), as mosquitto's `mosquitto_sub_matches_acl` decides:
//! `topic read a/#` allows `a/+/b`, `topic read a/+` does not allow `a/#`. A covering deny
//! refuses it. When a deny rule matches only some of the filter's topics (`topic deny
//! a/secret` under `a/#`), the subscription is allowed but every delivery on it must be
//! checked with [`Acl::may_receive`]: [`SubscribeVerdict::Allowed`] says so.
//!
//! ## Cost
//!
//! Each user's rules and the patterns are separate tries in one arena, so a check walks
//! the topic's levels through at most two tries, never every rule. A check allocates
//! nothing (the walk's work list lives on the stack).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::Path;

use ringmq_proto::topic::{self, TopicError};

use super::rules::{self, Access, NodeId, RuleTrie, Who};

/// The largest ACL file accepted, in bytes.
pub const MAX_ACL_FILE_BYTES: usize = 4 << 20;
/// The longest line: a topic filter of 65,535 bytes and its keyword.
pub const MAX_ACL_LINE_BYTES: usize = 65_535 + 64;
/// The most `topic` and `pattern` lines in one file.
pub const MAX_ACL_RULES: usize = 100_000;
/// The most distinct `user` names in one file.
pub const MAX_ACL_USERS: usize = 100_000;
/// The most trie nodes (distinct rule prefixes) in one file: bounds the memory a file of
/// many deep, distinct filters can take (roughly 100 bytes a node).
pub const MAX_ACL_NODES: usize = 1_000_000;

/// What went wrong on one line of an ACL file (or in the file as a whole, line 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclError {
    /// 1-based line number; 0 for the file as a whole.
    pub line: usize,
    pub kind: AclErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AclErrorKind {
    /// The file could not be read.
    Io(String),
    /// The file is longer than [`MAX_ACL_FILE_BYTES`].
    FileTooLarge,
    /// The line is longer than [`MAX_ACL_LINE_BYTES`].
    LineTooLong,
    /// The line is not UTF-8 (topic filters are UTF-8 strings).
    NotUtf8,
    /// The first word is not `user`, `topic` or `pattern`.
    UnknownKeyword(String),
    /// `user` with no name.
    MissingUsername,
    /// `topic` or `pattern` with nothing after it.
    MissingFilter,
    /// The access word is not `read`, `write`, `readwrite` or `deny`.
    UnknownAccess(String),
    /// The filter breaks the MQTT topic filter rules.
    InvalidFilter(TopicError),
    /// `%c` or `%u` inside a longer level of a `pattern` filter.
    PlaceholderInsideLevel,
    /// More than [`MAX_ACL_RULES`] rules.
    TooManyRules,
    /// More than [`MAX_ACL_USERS`] users.
    TooManyUsers,
    /// More than [`MAX_ACL_NODES`] distinct rule prefixes.
    TooManyLevels,
}

impl fmt::Display for AclError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        match &self.kind {
            AclErrorKind::Io(e) => write!(f, "cannot read the ACL file: {e}"),
            AclErrorKind::FileTooLarge => {
                write!(f, "ACL file is larger than {MAX_ACL_FILE_BYTES} bytes")
            }
            AclErrorKind::LineTooLong => write!(f, "longer than {MAX_ACL_LINE_BYTES} bytes"),
            AclErrorKind::NotUtf8 => write!(f, "not valid UTF-8"),
            AclErrorKind::UnknownKeyword(w) => write!(
                f,
                "unknown keyword {w:?} (expected \"user\", \"topic\" or \"pattern\")"
            ),
            AclErrorKind::MissingUsername => write!(f, "\"user\" needs a name"),
            AclErrorKind::MissingFilter => write!(f, "missing topic filter"),
            AclErrorKind::UnknownAccess(w) => write!(
                f,
                "unknown access {w:?} (expected read, write, readwrite or deny)"
            ),
            AclErrorKind::InvalidFilter(e) => write!(f, "invalid topic filter: {e}"),
            AclErrorKind::PlaceholderInsideLevel => write!(
                f,
                "%c and %u must be a whole level of a pattern (devices/%c/#, not devices/dev-%c)"
            ),
            AclErrorKind::TooManyRules => write!(f, "more than {MAX_ACL_RULES} rules"),
            AclErrorKind::TooManyUsers => write!(f, "more than {MAX_ACL_USERS} users"),
            AclErrorKind::TooManyLevels => write!(
                f,
                "more than {MAX_ACL_NODES} distinct topic levels in the rules"
            ),
        }
    }
}

impl std::error::Error for AclError {}

/// What [`Acl::may_subscribe`] decides for one subscription filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeVerdict {
    /// Refuse the filter (SUBACK 0x80 in 3.1.1, 0x87 Not authorized in 5.0).
    Refused,
    /// Accept the filter. With `check_each_delivery`, a deny rule matches some of the
    /// topics it covers: call `may_receive` for every message delivered through it.
    Allowed { check_each_delivery: bool },
}

/// The rules that apply to one client, resolved once (at CONNECT): which user block, and
/// the values of `%c` and `%u`.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    user_root: Option<NodeId>,
    who: Who<'a>,
    /// Pattern rules may grant (false for ids or names containing `+` or `#`).
    patterns_grant: bool,
}

impl<'a> Subject<'a> {
    /// A subject from parts resolved earlier by [`Acl::subject`].
    pub(crate) fn resolved(
        user_root: Option<NodeId>,
        who: Who<'a>,
        patterns_grant: bool,
    ) -> Subject<'a> {
        Subject {
            user_root,
            who,
            patterns_grant,
        }
    }

    pub(crate) fn user_root(&self) -> Option<NodeId> {
        self.user_root
    }

    pub(crate) fn patterns_grant(&self) -> bool {
        self.patterns_grant
    }
}

/// A compiled ACL file.
#[derive(Debug)]
pub struct Acl {
    trie: RuleTrie,
    /// The rules before the first `user` line: clients without a username.
    anonymous: Option<NodeId>,
    users: HashMap<Box<str>, NodeId>,
    patterns: Option<NodeId>,
    rules: usize,
}

impl Acl {
    /// Reads and compiles an ACL file.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let bytes = super::read_bounded(path, MAX_ACL_FILE_BYTES).map_err(|e| AclError {
            line: 0,
            kind: match e {
                super::ReadError::TooLarge => AclErrorKind::FileTooLarge,
                super::ReadError::Io(e) => AclErrorKind::Io(e.to_string()),
            },
        })?;
        Acl::parse(&bytes)
    }

    /// Compiles the text of an ACL file.
    pub fn parse(text: &[u8]) -> Result<Acl, AclError> {
        if text.len() > MAX_ACL_FILE_BYTES {
            return Err(AclError {
                line: 0,
                kind: AclErrorKind::FileTooLarge,
            });
        }
        let mut acl = Acl {
            trie: RuleTrie::new(),
            anonymous: None,
            users: HashMap::new(),
            patterns: None,
            rules: 0,
        };
        // `None` until the first `user` line: the anonymous block.
        let mut current_user: Option<NodeId> = None;
        for (index, raw) in text.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let fail = |kind| AclError { line, kind };
            if raw.len() > MAX_ACL_LINE_BYTES {
                return Err(fail(AclErrorKind::LineTooLong));
            }
            let raw = std::str::from_utf8(raw).map_err(|_| fail(AclErrorKind::NotUtf8))?;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_word(trimmed);
            match keyword {
                "user" => {
                    let name = rest.trim();
                    if name.is_empty() {
                        return Err(fail(AclErrorKind::MissingUsername));
                    }
                    let users = acl.users.len();
                    let root = match acl.users.entry(name.into()) {
                        Entry::Occupied(e) => *e.get(),
                        Entry::Vacant(e) => {
                            if users >= MAX_ACL_USERS {
                                return Err(fail(AclErrorKind::TooManyUsers));
                            }
                            *e.insert(acl.trie.add_root())
                        }
                    };
                    current_user = Some(root);
                }
                "topic" | "pattern" => {
                    let pattern = keyword == "pattern";
                    let (access, filter) = parse_rule(rest).map_err(fail)?;
                    if pattern {
                        check_placeholders(filter).map_err(fail)?;
                    }
                    if acl.rules >= MAX_ACL_RULES {
                        return Err(fail(AclErrorKind::TooManyRules));
                    }
                    acl.rules += 1;
                    let root = if pattern {
                        *acl.patterns.get_or_insert_with(|| acl.trie.add_root())
                    } else {
                        match current_user {
                            Some(root) => root,
                            None => *acl.anonymous.get_or_insert_with(|| acl.trie.add_root()),
                        }
                    };
                    acl.trie.insert(root, filter, access, pattern);
                    if acl.trie.node_count() > MAX_ACL_NODES {
                        return Err(fail(AclErrorKind::TooManyLevels));
                    }
                }
                other => return Err(fail(AclErrorKind::UnknownKeyword(other.to_owned()))),
            }
        }
        acl.trie.finish();
        Ok(acl)
    }

    /// How many `topic` and `pattern` rules the file holds.
    pub fn rule_count(&self) -> usize {
        self.rules
    }

    /// How many distinct `user` names the file names.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Resolves the rules for a client, once per connection.
    pub fn subject<'a>(&self, username: Option<&'a str>, client_id: &'a str) -> Subject<'a> {
        let user_root = match username {
            Some(name) => self.users.get(name).copied(),
            None => self.anonymous,
        };
        Subject {
            user_root,
            who: Who::new(client_id, username),
            patterns_grant: !rules::has_wildcard(client_id)
                && !username.is_some_and(rules::has_wildcard),
        }
    }

    /// Whether `username` (or an anonymous client) with `client_id` may publish to the
    /// topic name `topic`.
    pub fn may_publish(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.subject_may_publish(&self.subject(username, client_id), topic)
    }

    /// Whether a message published on `topic` may be delivered to this client: live,
    /// retained, queued while it was away, or resent after a reconnect.
    pub fn may_receive(&self, username: Option<&str>, client_id: &str, topic: &str) -> bool {
        self.subject_may_receive(&self.subject(username, client_id), topic)
    }

    /// Whether this client may subscribe to `filter` (a shared subscription's
    /// `$share/{group}/` prefix is looked through).
    pub fn may_subscribe(
        &self,
        username: Option<&str>,
        client_id: &str,
        filter: &str,
    ) -> SubscribeVerdict {
        self.subject_may_subscribe(&self.subject(username, client_id), filter)
    }

    /// [`Acl::may_publish`] for a resolved subject.
    pub fn subject_may_publish(&self, subject: &Subject<'_>, topic: &str) -> bool {
        !is_reserved_for_broker(topic) && self.verdict(subject, topic, Access::WRITE)
    }

    /// [`Acl::may_receive`] for a resolved subject.
    pub fn subject_may_receive(&self, subject: &Subject<'_>, topic: &str) -> bool {
        self.verdict(subject, topic, Access::READ)
    }

    /// [`Acl::may_subscribe`] for a resolved subject.
    pub fn subject_may_subscribe(&self, subject: &Subject<'_>, filter: &str) -> SubscribeVerdict {
        let Ok(parsed) = topic::parse_filter(filter) else {
            return SubscribeVerdict::Refused;
        };
        let filter = parsed.filter();
        let covering = self.covering_access(subject, filter);
        if covering.denies() || !covering.contains(Access::READ) {
            return SubscribeVerdict::Refused;
        }
        SubscribeVerdict::Allowed {
            check_each_delivery: self.deny_overlaps(subject, filter),
        }
    }

    /// The deny bit of every rule covering `filter` and the grants of those that may grant.
    pub(crate) fn covering_access(&self, subject: &Subject<'_>, filter: &str) -> Access {
        let mut access = Access::NONE;
        if let Some(root) = subject.user_root {
            access |= self.trie.covering_access(root, filter, Who::NOBODY);
        }
        if let Some(root) = self.patterns {
            let found = self.trie.covering_access(root, filter, subject.who);
            access |= if subject.patterns_grant {
                found
            } else {
                found.deny_only()
            };
        }
        access
    }

    /// Whether a deny rule for this subject matches some topic that `filter` matches.
    pub(crate) fn deny_overlaps(&self, subject: &Subject<'_>, filter: &str) -> bool {
        subject
            .user_root
            .is_some_and(|root| self.trie.deny_overlaps(root, filter, Who::NOBODY))
            || self
                .patterns
                .is_some_and(|root| self.trie.deny_overlaps(root, filter, subject.who))
    }

    /// The access this subject's rules give on a topic name.
    pub(crate) fn topic_access(&self, subject: &Subject<'_>, topic: &str) -> Access {
        let mut access = Access::NONE;
        if let Some(root) = subject.user_root {
            // `topic` lines take no placeholders: `%c` there is literal text.
            access |= self.trie.topic_access(root, topic, Who::NOBODY);
            if access.denies() {
                return access;
            }
        }
        if let Some(root) = self.patterns {
            let found = self.trie.topic_access(root, topic, subject.who);
            access |= if subject.patterns_grant {
                found
            } else {
                found.deny_only()
            };
        }
        access
    }

    fn verdict(&self, subject: &Subject<'_>, topic: &str, needed: Access) -> bool {
        let access = self.topic_access(subject, topic);
        !access.denies() && access.contains(needed)
    }
}

/// Topics no client may publish to, whatever any rule says: the broker's own `$SYS` tree
/// (read-only to clients), and `$share/...`, which names a shared subscription, not a topic.
pub fn is_reserved_for_broker(topic: &str) -> bool {
    topic.starts_with("$SYS") || topic.starts_with("$share/") || topic == "$share"
}

/// The first word of `s` (split on spaces or tabs) and the rest after it.
fn split_word(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    }
}

/// `[access] FILTER` after `topic` or `pattern`.
fn parse_rule(rest: &str) -> Result<(Access, &str), AclErrorKind> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(AclErrorKind::MissingFilter);
    }
    let (first, after) = split_word(rest);
    let after = after.trim();
    let (access, filter) = if after.is_empty() {
        // One word: it is the filter, with read and write (mosquitto's default).
        (Access::READ_WRITE, first)
    } else {
        let access = match first {
            "read" => Access::READ,
            "write" => Access::WRITE,
            "readwrite" => Access::READ_WRITE,
            "deny" => Access::DENY,
            other => return Err(AclErrorKind::UnknownAccess(other.to_owned())),
        };
        (access, after)
    };
    topic::validate_filter(filter).map_err(AclErrorKind::InvalidFilter)?;
    Ok((access, filter))
}

/// `%c` and `%u` must be whole levels of a pattern.
fn check_placeholders(filter: &str) -> Result<(), AclErrorKind> {
    for level in topic::levels(filter) {
        if level != "%c" && level != "%u" && (level.contains("%c") || level.contains("%u")) {
            return Err(AclErrorKind::PlaceholderInsideLevel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Acl {
        Acl::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> AclError {
        Acl::parse(text.as_bytes()).expect_err(text)
    }

    #[test]
    fn acl_parse_malformed_lines_name_the_line() {
        let cases: &[(&str, usize, AclErrorKind)] = &[
            ("topic", 1, AclErrorKind::MissingFilter),
            ("pattern   ", 1, AclErrorKind::MissingFilter),
            ("\n\nuser", 3, AclErrorKind::MissingUsername),
            ("user   \t", 1, AclErrorKind::MissingUsername),
            (
                "topic rw a/b",
                1,
                AclErrorKind::UnknownAccess("rw".to_owned()),
            ),
            (
                "topic read a/#/b",
                1,
                AclErrorKind::InvalidFilter(TopicError::MisplacedMultiLevelWildcard),
            ),
            (
                "topic read a+",
                1,
                AclErrorKind::InvalidFilter(TopicError::MisplacedSingleLevelWildcard),
            ),
            (
                "# ok\nusers bob",
                2,
                AclErrorKind::UnknownKeyword("users".to_owned()),
            ),
            (
                "Topic read a",
                1,
                AclErrorKind::UnknownKeyword("Topic".to_owned()),
            ),
            (
                "pattern read dev-%c/#",
                1,
                AclErrorKind::PlaceholderInsideLevel,
            ),
            (
                "pattern read a/%us",
                1,
                AclErrorKind::PlaceholderInsideLevel,
            ),
        ];
        for (text, line, kind) in cases {
            assert_eq!(
                error(text),
                AclError {
                    line: *line,
                    kind: kind.clone()
                },
                "{text:?}"
            );
        }
        let bad = b"topic read a\ntopic read \xff\n";
        assert_eq!(
            Acl::parse(bad).unwrap_err(),
            AclError {
                line: 2,
                kind: AclErrorKind::NotUtf8
            }
        );
        let long = format!("topic read {}", "a".repeat(MAX_ACL_LINE_BYTES));
        assert_eq!(error(&long).kind, AclErrorKind::LineTooLong);
        assert_eq!(
            error("user bob\ntopic deny a/+x").to_string(),
            "line 2: invalid topic filter: '+' must be alone in its level of a topic filter"
        );
    }

    #[test]
    fn acl_parse_valid_lines_like_mosquitto() {
        let acl = parse(
            "# comment\n\
             \n\
             \x20  # indented comment\n\
             topic read $SYS/#\r\n\
             user alice smith  \n\
             topic\thome/a\n\
             topic read\n\
             topic read  with space/x  \n\
             user bob\n\
             topic deny b/#\n\
             user alice smith\n\
             topic write more/a\n\
             pattern write dev/%c/state\n",
        );
        assert_eq!(acl.rule_count(), 7);
        assert_eq!(acl.user_count(), 2);
        let alice = Some("alice smith");
        // One word after `topic`: that word is the filter, read and write.
        assert!(acl.may_publish(alice, "c", "home/a"));
        assert!(acl.may_receive(alice, "c", "home/a"));
        assert!(acl.may_publish(alice, "c", "read"));
        // The filter is the rest of the line, spaces inside kept.
        assert!(acl.may_receive(alice, "c", "with space/x"));
        assert!(!acl.may_publish(alice, "c", "with space/x"));
        // A second `user alice smith` block adds to the first.
        assert!(acl.may_publish(alice, "c", "more/a"));
        // Anonymous clients get the block before the first `user` line.
        assert!(acl.may_receive(None, "c", "$SYS/broker/uptime"));
        assert!(!acl.may_receive(alice, "c", "$SYS/broker/uptime"));
        // Patterns apply to everybody, anonymous included.
        assert!(acl.may_publish(None, "k1", "dev/k1/state"));
        assert!(acl.may_publish(Some("bob"), "k2", "dev/k2/state"));
        assert!(!acl.may_publish(Some("bob"), "k2", "dev/k1/state"));
    }

    /// (username, client id, topic or filter, may publish, may receive, subscribe verdict)
    type Row<'a> = (
        Option<&'a str>,
        &'a str,
        &'a str,
        bool,
        bool,
        SubscribeVerdict,
    );

    /// Each rule kind × publish / subscribe / receive, placeholders, anonymous, deny
    /// precedence and `$SYS`.
    #[test]
    fn acl_decision_table() {
        let acl = parse(
            "topic read public/#\n\
             topic read $SYS/broker/#\n\
             topic write $SYS/anon/#\n\
             user ann\n\
             topic read r/#\n\
             topic write w/#\n\
             topic readwrite rw/#\n\
             topic deny rw/secret\n\
             topic readwrite $SYS/#\n\
             topic readwrite both/#\n\
             user bob\n\
             topic readwrite pat/bob/blocked\n\
             pattern readwrite pat/%u/#\n\
             pattern read cid/%c\n\
             pattern deny both/banned\n\
             pattern deny pat/+/blocked\n",
        );
        use SubscribeVerdict::*;
        let ann = Some("ann");
        let bob = Some("bob");
        let ok = Allowed {
            check_each_delivery: false,
        };
        let filtered = Allowed {
            check_each_delivery: true,
        };
        // (user, client id, topic or filter, publish, receive, subscribe)
        let table: &[Row] = &[
            // read / write / readwrite
            (ann, "c1", "r/x", false, true, ok),
            (ann, "c1", "w/x", true, false, Refused),
            (ann, "c1", "rw/x", true, true, ok),
            // deny beats the broader readwrite, for every operation
            (ann, "c1", "rw/secret", false, false, Refused),
            // a subscription that includes a denied topic: allowed, checked per delivery
            (ann, "c1", "rw/#", true, true, filtered),
            (ann, "c1", "rw/+", true, true, filtered),
            // not granted at all
            (ann, "c1", "other", false, false, Refused),
            // `$SYS`: readable when granted, never writable
            (ann, "c1", "$SYS/broker/load", false, true, ok),
            (None, "c1", "$SYS/broker/load", false, true, ok),
            (None, "c1", "$SYS/anon/x", false, false, Refused),
            // anonymous block
            (None, "c1", "public/news", false, true, ok),
            (bob, "c1", "public/news", false, false, Refused),
            // %u and %c patterns
            (bob, "c1", "pat/bob/x", true, true, ok),
            (ann, "c1", "pat/bob/x", false, false, Refused),
            (ann, "c1", "pat/ann/x", true, true, ok),
            (None, "c1", "pat/ann/x", false, false, Refused),
            (None, "c1", "cid/c1", false, true, ok),
            (None, "c2", "cid/c1", false, false, Refused),
            // a pattern deny wins over a user's allow
            (ann, "c1", "both/banned", false, false, Refused),
            (ann, "c1", "both/ok", true, true, ok),
            (bob, "c1", "pat/bob/blocked", false, false, Refused),
            (bob, "c1", "pat/bob/#", true, true, filtered),
            // unknown user: only patterns
            (Some("zed"), "c9", "cid/c9", false, true, ok),
            (Some("zed"), "c9", "r/x", false, false, Refused),
        ];
        for &(user, cid, topic, publish, receive, subscribe) in table {
            let is_filter = topic.contains(['+', '#']);
            if !is_filter {
                assert_eq!(
                    acl.may_publish(user, cid, topic),
                    publish,
                    "publish {user:?} {cid} {topic}"
                );
                assert_eq!(
                    acl.may_receive(user, cid, topic),
                    receive,
                    "receive {user:?} {cid} {topic}"
                );
            }
            assert_eq!(
                acl.may_subscribe(user, cid, topic),
                subscribe,
                "subscribe {user:?} {cid} {topic}"
            );
        }
    }

    #[test]
    fn acl_subscription_must_be_covered_by_one_read_rule() {
        let acl = parse("user u\ntopic read a/+\ntopic read b/#\ntopic write c/#\n");
        let u = Some("u");
        let sub = |f| acl.may_subscribe(u, "c", f);
        let ok = SubscribeVerdict::Allowed {
            check_each_delivery: false,
        };
        assert_eq!(sub("a/x"), ok);
        assert_eq!(sub("a/+"), ok);
        assert_eq!(sub("a/#"), SubscribeVerdict::Refused); // `a/+` does not cover `a/x/y`
        assert_eq!(sub("b/+/z"), ok);
        assert_eq!(sub("#"), SubscribeVerdict::Refused);
        assert_eq!(sub("c/x"), SubscribeVerdict::Refused); // write only
        // A shared subscription is judged by its filter.
        assert_eq!(sub("$share/g/b/x"), ok);
        assert_eq!(sub("$share/g/c/x"), SubscribeVerdict::Refused);
        assert_eq!(sub("bad/#/filter"), SubscribeVerdict::Refused);
    }

    #[test]
    fn acl_sys_and_share_are_never_writable() {
        let acl = parse(
            "topic readwrite #\ntopic readwrite $SYS/#\ntopic readwrite $share/#\n\
             topic write $other/#\n",
        );
        assert!(!acl.may_publish(None, "c", "$SYS/broker/x"));
        assert!(!acl.may_publish(None, "c", "$SYSTEM"));
        assert!(!acl.may_publish(None, "c", "$share/g/t"));
        assert!(acl.may_receive(None, "c", "$SYS/broker/x"));
        assert!(acl.may_publish(None, "c", "$other/x"));
        // `#` does not reach `$` topics, and `$other/#` only grants write.
        assert!(!acl.may_receive(None, "c", "$other/x"));
    }

    #[test]
    fn acl_dangerous_ids_get_no_pattern_grants() {
        let acl = parse("pattern readwrite dev/%c/#\npattern readwrite any/#\npattern deny x/#\n");
        assert!(acl.may_publish(None, "k1", "dev/k1/a"));
        assert!(acl.may_publish(None, "k1", "any/a"));
        // A `+` in the client id: no grant from any pattern, as in mosquitto.
        assert!(!acl.may_publish(None, "k+", "any/a"));
        assert!(!acl.may_publish(Some("a#"), "k1", "any/a"));
        // A `/` in the client id cannot reach another client's subtree.
        assert!(!acl.may_publish(None, "k1/a", "dev/k1/a"));
    }

    #[test]
    fn acl_limits_are_enforced() {
        let many_users: String = (0..=MAX_ACL_USERS)
            .map(|i| format!("user u{i}\n"))
            .collect();
        assert_eq!(
            error(&many_users),
            AclError {
                line: MAX_ACL_USERS + 1,
                kind: AclErrorKind::TooManyUsers
            }
        );
        let many_rules = "topic read a\n".repeat(MAX_ACL_RULES + 1);
        assert_eq!(
            error(&many_rules),
            AclError {
                line: MAX_ACL_RULES + 1,
                kind: AclErrorKind::TooManyRules
            }
        );
        let huge = vec![b'\n'; MAX_ACL_FILE_BYTES + 1];
        assert_eq!(
            Acl::parse(&huge).unwrap_err().kind,
            AclErrorKind::FileTooLarge
        );
    }
}

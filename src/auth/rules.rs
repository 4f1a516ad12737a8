//! Topic rules compiled into a trie: the one matcher behind the ACL file and a token's
//! `acl` claim.
//!
//! A rule is a topic filter with an [`Access`] (read, write, both, or deny). Its levels may
//! be literal, `+`, a final `#`, or — in rules that allow placeholders — exactly `%c` (the
//! client id) or `%u` (the username). The trie keeps one node per distinct prefix, so a
//! check walks the levels of one topic instead of scanning every rule; rules with a
//! placeholder are matched without substituting anything: a `%c` level matches the level
//! that equals the asking client's id, so a thousand clients share one compiled form.
//!
//! Three questions are answered, each as the union of the access of every rule involved
//! (deny, read and write are independent bits; the caller decides what wins):
//!
//! - [`RuleTrie::topic_access`]: the rules whose filter matches a topic name (PUBLISH, and
//!   every delivery).
//! - [`RuleTrie::covering_access`]: the rules that *cover* a subscription's filter, that is
//!   match every topic the filter can match (mosquitto's `mosquitto_sub_matches_acl`): rule
//!   `a/#` covers `a/+/b`, rule `a/+` does not cover `a/#`.
//! - [`RuleTrie::deny_overlaps`]: whether some deny rule matches at least one topic the
//!   subscription's filter can match, so its deliveries must be checked one by one.
//!
//! `$` topics follow MQTT-4.7.2-1 everywhere: a first level that is `+`, `#` or a
//! placeholder never matches a topic whose first level starts with `$`.
//!
//! [`topic_access`](RuleTrie::topic_access) must agree with
//! [`ringmq_proto::topic::matches`] applied to each rule after substitution; the tests
//! check exactly that on generated rules and topics.

// hashbrown's default hasher (foldhash) is several times faster than SipHash on short
// keys. Its weaker collision resistance does not matter here: the keys are the ACL file's
// levels, and clients only look up, never insert.
use hashbrown::HashMap;
use smallvec::SmallVec;
use std::ops::{BitOr, BitOrAssign};

/// What a rule grants or refuses. Bits combine: a client may hold read from one rule and
/// write from another; a deny bit refuses whatever else is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Access(u8);

impl Access {
    pub const NONE: Access = Access(0);
    /// Receive messages published on matching topics (and subscribe to them).
    pub const READ: Access = Access(1);
    /// Publish to matching topics.
    pub const WRITE: Access = Access(2);
    pub const READ_WRITE: Access = Access(3);
    /// Refused, whatever another rule grants.
    pub const DENY: Access = Access(4);

    /// Whether every bit of `other` is held.
    pub const fn contains(self, other: Access) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn denies(self) -> bool {
        self.0 & Access::DENY.0 != 0
    }

    /// Only the deny bit of `self`.
    pub const fn deny_only(self) -> Access {
        Access(self.0 & Access::DENY.0)
    }
}

impl BitOr for Access {
    type Output = Access;
    fn bitor(self, rhs: Access) -> Access {
        Access(self.0 | rhs.0)
    }
}

impl BitOrAssign for Access {
    fn bitor_assign(&mut self, rhs: Access) {
        self.0 |= rhs.0;
    }
}

/// The values `%c` and `%u` levels stand for, for one client.
///
/// A value takes part only when it can be a single topic level that is not a wildcard:
/// non-empty, without `/`, `+` or `#`. Otherwise a placeholder level matches nothing for
/// this client (a client id `a/b` must not reach `devices/a/b/#` through `devices/%c/#`,
/// a client id `+` must not reach every device).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Who<'a> {
    client_id: Option<&'a str>,
    username: Option<&'a str>,
}

impl<'a> Who<'a> {
    /// Nobody: placeholder levels match nothing.
    pub const NOBODY: Who<'static> = Who {
        client_id: None,
        username: None,
    };

    pub fn new(client_id: &'a str, username: Option<&'a str>) -> Who<'a> {
        Who {
            client_id: Some(client_id).filter(|v| usable_level(v)),
            username: username.filter(|v| usable_level(v)),
        }
    }

    fn client_id_is(&self, level: &str) -> bool {
        self.client_id == Some(level)
    }

    fn username_is(&self, level: &str) -> bool {
        self.username == Some(level)
    }
}

/// Whether a client id or username can stand for one literal topic level.
pub fn usable_level(value: &str) -> bool {
    !value.is_empty() && !value.bytes().any(|b| matches!(b, b'/' | b'+' | b'#'))
}

/// Whether a client id or username contains a wildcard character, which mosquitto treats
/// as an attempt to widen a pattern rule: such a client gets nothing from pattern rules.
pub fn has_wildcard(value: &str) -> bool {
    value.bytes().any(|b| b == b'+' || b == b'#')
}

/// A node's index in the arena. Roots are nodes too.
pub type NodeId = u32;

/// One level of a rule, as [`RuleTrie::insert`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleLevel<'a> {
    Literal(&'a str),
    Plus,
    Hash,
    ClientId,
    Username,
}

fn rule_level(level: &str, placeholders: bool) -> RuleLevel<'_> {
    match level {
        "+" => RuleLevel::Plus,
        "#" => RuleLevel::Hash,
        "%c" if placeholders => RuleLevel::ClientId,
        "%u" if placeholders => RuleLevel::Username,
        literal => RuleLevel::Literal(literal),
    }
}

/// A node's literal children. Most nodes have one or two, which a short list finds faster
/// than any hash; a level with many names (one per site, per user) gets a map.
#[derive(Debug)]
enum Literals {
    Few(Vec<(Box<str>, NodeId)>),
    Many(HashMap<Box<str>, NodeId>),
}

/// Past this many names a node's literal children move into a map.
const FEW_LITERALS: usize = 8;

impl Default for Literals {
    fn default() -> Literals {
        Literals::Few(Vec::new())
    }
}

impl Literals {
    fn get(&self, level: &str) -> Option<NodeId> {
        match self {
            Literals::Few(list) => list
                .iter()
                .find(|(name, _)| **name == *level)
                .map(|&(_, id)| id),
            Literals::Many(map) => map.get(level).copied(),
        }
    }

    fn insert(&mut self, level: &str, id: NodeId) {
        match self {
            Literals::Few(list) if list.len() < FEW_LITERALS => list.push((level.into(), id)),
            Literals::Few(list) => {
                let mut map: HashMap<Box<str>, NodeId> = std::mem::take(list).into_iter().collect();
                map.insert(level.into(), id);
                *self = Literals::Many(map);
            }
            Literals::Many(map) => {
                map.insert(level.into(), id);
            }
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&str, NodeId)> + '_> {
        match self {
            Literals::Few(list) => Box::new(list.iter().map(|(name, id)| (&**name, *id))),
            Literals::Many(map) => Box::new(map.iter().map(|(name, id)| (&**name, *id))),
        }
    }
}

#[derive(Debug, Default)]
struct Node {
    literals: Literals,
    plus: Option<NodeId>,
    client_id: Option<NodeId>,
    username: Option<NodeId>,
    /// Rules that end exactly here.
    exact: Access,
    /// Rules `<this prefix>/#`, which also match the prefix itself.
    hash: Access,
    /// Everything at and below this node: lets a walk skip subtrees with no deny rule.
    subtree: Access,
    parent: Option<NodeId>,
}

/// Rules in a trie; several independent rule sets (one per user, one for patterns) share
/// one arena, each under its own root.
#[derive(Debug, Default)]
pub struct RuleTrie {
    nodes: Vec<Node>,
}

/// A depth-first work list that lives on the stack for ordinary topics and spills to the
/// heap only for unusually deep or branching walks (a `SmallVec`: nothing to initialise,
/// which matters at tens of nanoseconds a check).
struct WorkList<'a>(SmallVec<[(NodeId, Option<&'a str>); 16]>);

impl<'a> WorkList<'a> {
    fn new(root: NodeId, rest: &'a str) -> WorkList<'a> {
        let mut list = WorkList(SmallVec::new());
        list.push(root, Some(rest));
        list
    }

    fn push(&mut self, node: NodeId, rest: Option<&'a str>) {
        self.0.push((node, rest));
    }

    fn pop(&mut self) -> Option<(NodeId, Option<&'a str>)> {
        self.0.pop()
    }
}

/// The first level of `rest` and what follows its `/` (`None` when it was the last).
fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((level, next)) => (level, Some(next)),
        None => (rest, None),
    }
}

impl RuleTrie {
    pub fn new() -> RuleTrie {
        RuleTrie::default()
    }

    /// How many nodes the arena holds (for the bound on a file's size in memory).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Starts an empty rule set and returns its root.
    pub fn add_root(&mut self) -> NodeId {
        self.push_node(None)
    }

    fn push_node(&mut self, parent: Option<NodeId>) -> NodeId {
        let id = NodeId::try_from(self.nodes.len()).expect("rule trie node count fits in u32");
        self.nodes.push(Node {
            parent,
            ..Node::default()
        });
        id
    }

    /// Adds a rule under `root`. `filter` must be a valid topic filter
    /// ([`ringmq_proto::topic::validate_filter`]); with `placeholders`, levels that are
    /// exactly `%c` or `%u` stand for the client id and username.
    pub fn insert(&mut self, root: NodeId, filter: &str, access: Access, placeholders: bool) {
        let mut node = root;
        for level in ringmq_proto::topic::levels(filter) {
            let next = match rule_level(level, placeholders) {
                RuleLevel::Hash => {
                    self.nodes[node as usize].hash |= access;
                    return;
                }
                RuleLevel::Literal(name) => self.nodes[node as usize].literals.get(name),
                RuleLevel::Plus => self.nodes[node as usize].plus,
                RuleLevel::ClientId => self.nodes[node as usize].client_id,
                RuleLevel::Username => self.nodes[node as usize].username,
            };
            node = match next {
                Some(child) => child,
                None => {
                    let child = self.push_node(Some(node));
                    let parent = &mut self.nodes[node as usize];
                    match rule_level(level, placeholders) {
                        RuleLevel::Literal(name) => {
                            parent.literals.insert(name, child);
                        }
                        RuleLevel::Plus => parent.plus = Some(child),
                        RuleLevel::ClientId => parent.client_id = Some(child),
                        RuleLevel::Username => parent.username = Some(child),
                        RuleLevel::Hash => unreachable!("handled above"),
                    }
                    child
                }
            };
        }
        self.nodes[node as usize].exact |= access;
    }

    /// Computes each node's subtree summary. Call once after the last insert.
    pub fn finish(&mut self) {
        for node in &mut self.nodes {
            node.subtree = node.exact | node.hash;
        }
        // Children are always created after their parent, so walking backwards folds
        // every subtree into its parent before the parent is folded further up.
        for i in (0..self.nodes.len()).rev() {
            if let Some(parent) = self.nodes[i].parent {
                let below = self.nodes[i].subtree;
                self.nodes[parent as usize].subtree |= below;
            }
        }
    }

    /// The union of the access of every rule under `root` whose filter matches the topic
    /// name `topic`. Stops early once a deny bit is found.
    pub fn topic_access(&self, root: NodeId, topic: &str, who: Who<'_>) -> Access {
        let dollar = topic.starts_with('$');
        let mut access = Access::NONE;
        let mut work = WorkList::new(root, topic);
        while let Some((id, rest)) = work.pop() {
            let node = &self.nodes[id as usize];
            // MQTT-4.7.2-1: wildcards and placeholders in the first level never match `$`.
            let guarded = dollar && id == root;
            if !guarded {
                access |= node.hash;
            }
            match rest {
                None => access |= node.exact,
                Some(rest) => {
                    let (level, next) = split_level(rest);
                    if let Some(child) = node.literals.get(level) {
                        work.push(child, next);
                    }
                    if !guarded {
                        self.push_wildcards(&mut work, node, level, next, who);
                    }
                }
            }
            if access.denies() {
                break;
            }
        }
        access
    }

    /// Pushes the `+`, `%c` and `%u` children of `node` that match the literal `level`.
    fn push_wildcards<'t>(
        &self,
        work: &mut WorkList<'t>,
        node: &Node,
        level: &str,
        next: Option<&'t str>,
        who: Who<'_>,
    ) {
        if let Some(child) = node.plus {
            work.push(child, next);
        }
        if let Some(child) = node.client_id.filter(|_| who.client_id_is(level)) {
            work.push(child, next);
        }
        if let Some(child) = node.username.filter(|_| who.username_is(level)) {
            work.push(child, next);
        }
    }

    /// The union of the access of every rule under `root` that covers the topic filter
    /// `filter`: matches every topic name `filter` matches.
    pub fn covering_access(&self, root: NodeId, filter: &str, who: Who<'_>) -> Access {
        let dollar = filter.starts_with('$');
        let mut access = Access::NONE;
        let mut work = WorkList::new(root, filter);
        while let Some((id, rest)) = work.pop() {
            let node = &self.nodes[id as usize];
            let guarded = dollar && id == root;
            // `prefix/#` covers whatever follows the prefix, `#` and `+` included.
            if !guarded {
                access |= node.hash;
            }
            match rest {
                None => access |= node.exact,
                Some(rest) => match split_level(rest) {
                    // Only a `#` rule covers a `#` level, and it was counted above.
                    ("#", _) => {}
                    // Only a `+` (or `#`) rule covers a `+` level: a literal or a
                    // placeholder covers one name, not every name.
                    ("+", next) => {
                        if let Some(child) = node.plus {
                            work.push(child, next);
                        }
                    }
                    (level, next) => {
                        if let Some(child) = node.literals.get(level) {
                            work.push(child, next);
                        }
                        if !guarded {
                            self.push_wildcards(&mut work, node, level, next, who);
                        }
                    }
                },
            }
        }
        access
    }

    /// Whether a deny rule under `root` matches at least one topic name that `filter`
    /// also matches.
    pub fn deny_overlaps(&self, root: NodeId, filter: &str, who: Who<'_>) -> bool {
        let dollar = filter.starts_with('$');
        let mut work = WorkList::new(root, filter);
        while let Some((id, rest)) = work.pop() {
            let node = &self.nodes[id as usize];
            if !node.subtree.denies() {
                continue;
            }
            let at_root = id == root;
            // A `$` filter meets no first-level wildcard; a filter starting with a
            // wildcard meets no first level that starts with `$`.
            if node.hash.denies() && !(dollar && at_root) {
                return true;
            }
            let Some(rest) = rest else {
                if node.exact.denies() {
                    return true;
                }
                continue;
            };
            match split_level(rest) {
                ("#", _) if !at_root => return true, // the subtree has a deny rule
                (level @ ("#" | "+"), next) => {
                    // `#` meets every rule below; `+` meets every child of this level.
                    // At the root neither reaches a `$` first level.
                    let below = if level == "#" { None } else { Some(next) };
                    let children = node
                        .literals
                        .iter()
                        .filter(|(name, _)| !(at_root && name.starts_with('$')))
                        .map(|(_, child)| child)
                        .chain(node.plus)
                        .chain(node.client_id.filter(|_| who.client_id.is_some()))
                        .chain(node.username.filter(|_| who.username.is_some()));
                    for child in children {
                        match below {
                            None if self.nodes[child as usize].subtree.denies() => return true,
                            None => {}
                            Some(next) => work.push(child, next),
                        }
                    }
                    // `a/#` also matches `a` itself.
                    if level == "#" && node.exact.denies() {
                        return true;
                    }
                }
                (level, next) => {
                    if let Some(child) = node.literals.get(level) {
                        work.push(child, next);
                    }
                    if !(dollar && at_root) {
                        self.push_wildcards(&mut work, node, level, next, who);
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use ringmq_proto::topic::matches;

    fn trie(rules: &[(&str, Access)], placeholders: bool) -> (RuleTrie, NodeId) {
        let mut trie = RuleTrie::new();
        let root = trie.add_root();
        for (filter, access) in rules {
            trie.insert(root, filter, *access, placeholders);
        }
        trie.finish();
        (trie, root)
    }

    #[test]
    fn rules_topic_access_unions_matching_rules() {
        let (t, root) = trie(
            &[
                ("a/+", Access::READ),
                ("a/b", Access::WRITE),
                ("a/#", Access::NONE),
                ("x/secret", Access::DENY),
                ("#", Access::READ),
            ],
            false,
        );
        let none = Who::NOBODY;
        assert_eq!(t.topic_access(root, "a/b", none), Access::READ_WRITE);
        assert_eq!(t.topic_access(root, "a/c", none), Access::READ);
        assert_eq!(t.topic_access(root, "a", none), Access::READ); // `#` (a/# grants nothing)
        assert!(t.topic_access(root, "x/secret", none).denies());
        assert_eq!(t.topic_access(root, "$SYS/x", none), Access::NONE);
    }

    #[test]
    fn rules_placeholders_match_whole_levels_of_safe_values_only() {
        let (t, root) = trie(
            &[
                ("dev/%c/#", Access::READ_WRITE),
                ("user/%u", Access::WRITE),
                ("x/%cx", Access::WRITE),
            ],
            true,
        );
        let who = Who::new("k1", Some("ann"));
        assert_eq!(t.topic_access(root, "dev/k1/t", who), Access::READ_WRITE);
        assert_eq!(t.topic_access(root, "dev/k1", who), Access::READ_WRITE);
        assert_eq!(t.topic_access(root, "dev/k2/t", who), Access::NONE);
        assert_eq!(t.topic_access(root, "user/ann", who), Access::WRITE);
        assert_eq!(t.topic_access(root, "user/bob", who), Access::NONE);
        // `%cx` is not a placeholder level: it is literal.
        assert_eq!(t.topic_access(root, "x/k1x", who), Access::NONE);
        assert_eq!(t.topic_access(root, "x/%cx", who), Access::WRITE);
        // A client id that is not one plain level matches no placeholder.
        let slash = Who::new("k1/t", None);
        assert_eq!(t.topic_access(root, "dev/k1/t", slash), Access::NONE);
        let plus = Who::new("+", None);
        assert_eq!(t.topic_access(root, "dev/+/t", plus), Access::NONE);
        // No username: `%u` matches nothing, not the empty level.
        assert_eq!(
            t.topic_access(root, "user/", Who::new("k1", None)),
            Access::NONE
        );
        // Without placeholders `%c` is an ordinary level.
        let (literal, root2) = trie(&[("dev/%c", Access::READ)], false);
        assert_eq!(literal.topic_access(root2, "dev/k1", who), Access::NONE);
        assert_eq!(literal.topic_access(root2, "dev/%c", who), Access::READ);
    }

    #[test]
    fn rules_covering_follows_mosquitto_sub_matches_acl() {
        // (rule, subscription filter, covered): cases from mosquitto's topic tests.
        let cases = [
            ("$SYS/#", "$SYS/broker/#", true),
            ("$SYS/broker/uptime", "$SYS/broker/#", false),
            ("#", "$SYS/#", false),
            ("+/#", "$SYS/x", false),
            ("a/#", "a/+/b", true),
            ("a/#", "a", true),
            ("a/#", "a/#", true),
            ("a/+", "a/#", false),
            ("a/+", "a/+", true),
            ("a/+", "a/b", true),
            ("a/b", "a/+", false),
            ("a/+/#", "a/b", true),
            ("a/+/#", "a", false),
            ("#", "#", true),
            ("#", "+/+", true),
            ("+", "#", false),
            ("a", "a/b", false),
            ("a/b", "a", false),
        ];
        for (rule, filter, covered) in cases {
            let (t, root) = trie(&[(rule, Access::READ)], true);
            assert_eq!(
                t.covering_access(root, filter, Who::NOBODY) == Access::READ,
                covered,
                "rule {rule} filter {filter}"
            );
        }
        let (t, root) = trie(&[("%c/test/#", Access::READ)], true);
        assert_eq!(
            t.covering_access(root, "cid/test/+", Who::new("cid", None)),
            Access::READ
        );
        assert_eq!(
            t.covering_access(root, "cid/test/+", Who::new("other", None)),
            Access::NONE
        );
        assert_eq!(
            t.covering_access(root, "+/test/x", Who::new("cid", None)),
            Access::NONE
        );
    }

    #[test]
    fn rules_deny_overlaps_cases() {
        let cases = [
            ("a/secret", "a/#", true),
            ("a/secret", "a/+", true),
            ("a/secret", "a/public", false),
            ("a/secret", "#", true),
            ("a/#", "a", true),
            ("a/+/c", "a/b/+", true),
            ("a/+/c", "a/b/d", false),
            ("$SYS/#", "#", false),
            ("$SYS/#", "+/x", false),
            ("#", "$SYS/x", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/x", "$SYS/+", true),
            ("a", "a/#", true),
            ("a/b/c", "a/#", true),
            ("x", "a/#", false),
        ];
        for (deny, filter, overlaps) in cases {
            let (t, root) = trie(&[(deny, Access::DENY), ("#", Access::READ)], true);
            assert_eq!(
                t.deny_overlaps(root, filter, Who::NOBODY),
                overlaps,
                "deny {deny} filter {filter}"
            );
        }
    }

    #[test]
    fn rules_deep_and_wide_walks_spill_without_losing_rules() {
        // Along `+/+/…`, every node also has a literal `x` child (rules `+/…/+/x` of every
        // length): each level leaves one pending entry behind, so walking a 40-level topic
        // holds ~40 entries and spills past the inline capacity.
        let plus_chain = vec!["+"; 40].join("/");
        let mut rules = vec![(plus_chain, Access::READ)];
        for i in 0..40 {
            let mut levels = vec!["+"; i];
            levels.push("x");
            rules.push((levels.join("/"), Access::WRITE));
        }
        let refs: Vec<(&str, Access)> = rules.iter().map(|(r, a)| (r.as_str(), *a)).collect();
        let (t, root) = trie(&refs, false);
        let topic = vec!["x"; 40].join("/");
        assert_eq!(
            t.topic_access(root, &topic, Who::NOBODY),
            Access::READ_WRITE
        );
        assert_eq!(
            t.covering_access(root, &topic, Who::NOBODY),
            Access::READ_WRITE
        );
        let shorter = vec!["x"; 39].join("/");
        assert_eq!(t.topic_access(root, &shorter, Who::NOBODY), Access::WRITE);
    }

    // Generated rules and topics over a small alphabet, checked against proto's matcher.

    const LEVELS: &[&str] = &["a", "b", "$s", "k1", ""];
    const RULE_LEVELS: &[&str] = &["a", "b", "$s", "+", "%c", ""];

    fn level_strategy(levels: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(levels).prop_map(str::to_owned)
    }

    fn rule_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(level_strategy(RULE_LEVELS), 1..4),
            any::<bool>(),
        )
            .prop_map(|(mut levels, hash)| {
                if hash {
                    levels.push("#".into());
                }
                levels.join("/")
            })
            .prop_filter("a valid filter", |f| {
                ringmq_proto::topic::validate_filter(f).is_ok()
            })
    }

    fn filter_strategy() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(
                proptest::sample::select(&["a", "b", "$s", "+", "k1", ""][..]),
                1..4,
            ),
            any::<bool>(),
        )
            .prop_map(|(levels, hash)| {
                let mut levels: Vec<String> = levels.into_iter().map(str::to_owned).collect();
                if hash {
                    levels.push("#".into());
                }
                levels.join("/")
            })
            .prop_filter("a valid filter", |f| {
                ringmq_proto::topic::validate_filter(f).is_ok()
            })
    }

    /// Every level sequence of 1 to 5 levels over the alphabet plus one level no rule names.
    /// The single empty level (the string "") is kept: it is not a valid topic name, but
    /// matching is defined on levels, and leaving it out would make `/#` look disjoint
    /// from `+` when the two share exactly that sequence.
    fn universe() -> Vec<String> {
        let alphabet: Vec<&str> = LEVELS.iter().copied().chain(["zz"]).collect();
        let mut all: Vec<String> = alphabet.iter().map(|s| s.to_string()).collect();
        let mut layer = all.clone();
        for _ in 1..5 {
            let mut next = Vec::new();
            for t in &layer {
                for l in &alphabet {
                    next.push(format!("{t}/{l}"));
                }
            }
            all.extend(next.iter().cloned());
            layer = next;
        }
        all
    }

    /// The reference for one rule: substitute `%c` whole levels, then proto's matcher.
    fn reference_matches(rule: &str, topic: &str, client_id: &str) -> bool {
        let substituted: Vec<&str> = rule
            .split('/')
            .map(|l| if l == "%c" { client_id } else { l })
            .collect();
        matches(&substituted.join("/"), topic)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn rules_topic_access_agrees_with_proto_matches(
            rules in proptest::collection::vec((rule_strategy(), 0u8..3), 1..6),
            topic_index in 0usize..10_000,
        ) {
            let access = [Access::READ, Access::WRITE, Access::DENY];
            let rules: Vec<(String, Access)> =
                rules.into_iter().map(|(r, a)| (r, access[a as usize])).collect();
            let refs: Vec<(&str, Access)> = rules.iter().map(|(r, a)| (r.as_str(), *a)).collect();
            let (t, root) = trie(&refs, true);
            let universe = universe();
            let topic = &universe[topic_index % universe.len()];
            let who = Who::new("k1", None);
            let mut expected = Access::NONE;
            for (rule, a) in &rules {
                if reference_matches(rule, topic, "k1") {
                    expected |= *a;
                }
            }
            let got = t.topic_access(root, topic, who);
            // topic_access stops at the first deny; compare deny, and allow bits when
            // nothing denies.
            prop_assert_eq!(got.denies(), expected.denies(), "topic {}", topic);
            if !expected.denies() {
                prop_assert_eq!(got, expected, "topic {}", topic);
            }
        }

        #[test]
        fn rules_covering_and_overlap_agree_with_enumeration(
            rule in rule_strategy(),
            filter in filter_strategy(),
        ) {
            let who = Who::new("k1", None);
            let (allow, root) = trie(&[(rule.as_str(), Access::READ)], true);
            let (deny, deny_root) = trie(&[(rule.as_str(), Access::DENY)], true);
            let universe = universe();
            let matched: Vec<&String> =
                universe.iter().filter(|t| matches(&filter, t)).collect();
            let covered = matched.iter().all(|t| reference_matches(&rule, t, "k1"));
            let overlaps = matched.iter().any(|t| reference_matches(&rule, t, "k1"));
            prop_assert_eq!(
                allow.covering_access(root, &filter, who) == Access::READ,
                covered,
                "rule {} filter {}", rule, filter
            );
            prop_assert_eq!(
                deny.deny_overlaps(deny_root, &filter, who),
                overlaps,
                "rule {} filter {}", rule, filter
            );
        }
    }
}

//! Other nodes' interest, as every shard reads it on a publish: which nodes have plain
//! subscribers for a topic, and which nodes have members of each shared group that
//! matches it.
//!
//! The link builds a new table when the interest bucket changes (a batch of changes at a
//! time) and swaps it in whole ([`arc_swap::ArcSwap`]); shards only read it, without a
//! lock. Nodes are numbered in the table (a bit each in a `u64`), so at most
//! [`MAX_NODES`] nodes are routed to.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Nodes a cluster routes to (sets of nodes are 64-bit masks).
pub const MAX_NODES: usize = 64;

/// What a filter is in another node's interest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Plain subscriptions (the advertised prefix of the node's filters).
    Plain,
    /// A shared group (`$share/G/F`, matched by its filter `F`).
    Group,
}

/// One trie level: the nodes whose filters end here, those with `#` here, and the
/// levels below; shared groups likewise, each with the nodes that have members.
#[derive(Default, Debug)]
struct Level {
    here: u64,
    groups_here: Vec<(Arc<str>, u64)>,
    /// `#` at this level (also matches the parent: `a/#` matches `a`).
    hash: u64,
    groups_hash: Vec<(Arc<str>, u64)>,
    plus: Option<Box<Level>>,
    children: HashMap<Box<str>, Level>,
}

/// Which other nodes a topic goes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reach {
    /// Nodes with plain interest (bits index [`RemoteInterest::node`]).
    pub nodes: u64,
    /// Some other node has a shared group that matches ([`RemoteInterest::groups`]
    /// says which, and where).
    pub groups: bool,
}

/// Adds node `bit` to group `share` of `groups`.
fn add_member(groups: &mut Vec<(Arc<str>, u64)>, share: &str, bit: u64) {
    match groups.iter_mut().find(|(s, _)| **s == *share) {
        Some((_, nodes)) => *nodes |= bit,
        None => groups.push((share.into(), bit)),
    }
}

/// Other nodes' interest, immutable once built.
#[derive(Debug, Default)]
pub struct RemoteInterest {
    nodes: Vec<Arc<str>>,
    root: Level,
    filters: usize,
}

impl RemoteInterest {
    /// The table of `interest`: node → its filters (a group by its whole `$share/G/F`).
    /// Nodes past [`MAX_NODES`] are left out (counted by the caller).
    pub fn build<'a>(
        interest: impl IntoIterator<Item = (&'a Arc<str>, &'a BTreeSet<(Kind, Box<str>)>)>,
    ) -> RemoteInterest {
        let mut t = RemoteInterest::default();
        for (i, (node, filters)) in interest.into_iter().take(MAX_NODES).enumerate() {
            t.nodes.push(node.clone());
            for (kind, filter) in filters {
                t.insert(1u64 << i, *kind, filter);
                t.filters += 1;
            }
        }
        t
    }

    fn insert(&mut self, bit: u64, kind: Kind, filter: &str) {
        let share = filter;
        let filter = match kind {
            Kind::Plain => filter,
            Kind::Group => match ringmq_proto::topic::parse_filter(share) {
                Ok(p) if p.group().is_some() => p.filter(),
                _ => return,
            },
        };
        let mut level = &mut self.root;
        let mut levels = filter.split('/').peekable();
        while let Some(l) = levels.next() {
            if l == "#" && levels.peek().is_none() {
                match kind {
                    Kind::Plain => level.hash |= bit,
                    Kind::Group => add_member(&mut level.groups_hash, share, bit),
                }
                return;
            }
            level = if l == "+" {
                level.plus.get_or_insert_with(Box::default)
            } else {
                level.children.entry(l.into()).or_default()
            };
        }
        match kind {
            Kind::Plain => level.here |= bit,
            Kind::Group => add_member(&mut level.groups_here, share, bit),
        }
    }

    /// The name of node `i` of a [`Reach`].
    pub fn node(&self, i: usize) -> Option<&Arc<str>> {
        self.nodes.get(i)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn filter_count(&self) -> usize {
        self.filters
    }

    pub fn is_empty(&self) -> bool {
        self.filters == 0
    }

    /// Which nodes `topic` goes to. Topics starting with `$` never cross nodes (`$SYS`
    /// is each node's own), so they match nothing.
    pub fn reach(&self, topic: &str) -> Reach {
        let mut r = Reach::default();
        self.walk(topic, |level, end| {
            r.nodes |= level.hash;
            r.groups |= !level.groups_hash.is_empty();
            if end {
                r.nodes |= level.here;
                r.groups |= !level.groups_here.is_empty();
            }
        });
        r
    }

    /// The shared groups that match `topic`, each with the nodes that have members,
    /// into `out` (each group once: its filter is at one place in the trie).
    pub fn groups(&self, topic: &str, out: &mut Vec<(Arc<str>, u64)>) {
        self.walk(topic, |level, end| {
            out.extend(level.groups_hash.iter().cloned());
            if end {
                out.extend(level.groups_here.iter().cloned());
            }
        });
    }

    /// Calls `f` with every level whose filters may match `topic`, and whether the
    /// topic ends there (its `#` filters match in any case).
    fn walk<'a>(&'a self, topic: &str, mut f: impl FnMut(&'a Level, bool)) {
        if self.filters == 0 || topic.starts_with('$') {
            return;
        }
        // An explicit stack of (level, levels left): no recursion however deep the topic.
        let mut stack: Vec<(&Level, Option<&str>)> = vec![(&self.root, Some(topic))];
        while let Some((level, rest)) = stack.pop() {
            let Some(rest) = rest else {
                f(level, true);
                continue;
            };
            f(level, false);
            let (l, next) = match rest.split_once('/') {
                Some((l, n)) => (l, Some(n)),
                None => (rest, None),
            };
            if let Some(c) = level.children.get(l) {
                stack.push((c, next));
            }
            if let Some(p) = &level.plus {
                stack.push((p, next));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn table(entries: &[(&str, Kind, &str)]) -> RemoteInterest {
        let mut m: BTreeMap<Arc<str>, BTreeSet<(Kind, Box<str>)>> = BTreeMap::new();
        for (node, kind, f) in entries {
            m.entry((*node).into())
                .or_default()
                .insert((*kind, (*f).into()));
        }
        RemoteInterest::build(&m)
    }

    #[test]
    fn examples() {
        let t = table(&[
            ("a", Kind::Plain, "x/#"),
            ("b", Kind::Plain, "x/+/z"),
            ("c", Kind::Group, "$share/g/y"),
            ("a", Kind::Group, "$share/g/y"),
            ("a", Kind::Group, "$share/h/#"),
        ]);
        assert_eq!(t.reach("x").nodes, 0b01);
        assert_eq!(t.reach("x/q/z").nodes, 0b11);
        assert_eq!(t.reach("q").nodes, 0);
        assert!(t.reach("y").groups);
        assert!(t.reach("y/z").groups);
        assert!(!t.reach("$y").groups);
        let mut g = Vec::new();
        t.groups("y", &mut g);
        g.sort();
        assert_eq!(
            g,
            vec![("$share/g/y".into(), 0b101), ("$share/h/#".into(), 0b001)]
        );
        g.clear();
        t.groups("y/z", &mut g);
        assert_eq!(g, vec![("$share/h/#".into(), 0b001)]);
        assert_eq!(t.reach("$x/q").nodes, 0);
        assert_eq!(t.node(1).map(|n| &**n), Some("b"));
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "[ab]"]
    }

    fn filter() -> impl Strategy<Value = String> {
        let fl = prop_oneof![3 => level(), 1 => Just("+".to_string())];
        (proptest::collection::vec(fl, 1..4), any::<bool>()).prop_map(|(mut l, h)| {
            if h {
                l.push("#".into());
            }
            l.join("/")
        })
    }

    proptest! {
        /// The table reaches exactly the nodes one of whose filters MQTT matches.
        #[test]
        fn reach_is_mqtt_matching(
            filters in proptest::collection::vec((0usize..3, any::<bool>(), filter()), 0..8),
            topic in proptest::collection::vec(level(), 1..5).prop_map(|l| l.join("/")),
        ) {
            let names = ["n0", "n1", "n2"];
            // A group's name is its node's index modulo 2: two nodes may share one.
            let filters: Vec<(usize, Option<String>, String)> = filters
                .into_iter()
                .map(|(n, g, f)| (n, g.then(|| format!("$share/g{}/{f}", n % 2)), f))
                .collect();
            let entries: Vec<(&str, Kind, &str)> = filters
                .iter()
                .map(|(n, share, f)| match share {
                    Some(s) => (names[*n], Kind::Group, s.as_str()),
                    None => (names[*n], Kind::Plain, f.as_str()),
                })
                .collect();
            let t = table(&entries);
            let mut want = Reach::default();
            let mut want_groups: BTreeMap<String, u64> = BTreeMap::new();
            for ((_, share, f), (node, kind, _)) in filters.iter().zip(&entries) {
                if ringmq_proto::topic::matches(f, &topic) {
                    let i = (0..t.node_count()).find(|&i| &**t.node(i).unwrap() == *node).unwrap();
                    match kind {
                        Kind::Plain => want.nodes |= 1 << i,
                        // A share without a filter is no subscription (nothing takes one).
                        Kind::Group if f.is_empty() => {}
                        Kind::Group => {
                            want.groups = true;
                            *want_groups.entry(share.clone().unwrap()).or_default() |= 1 << i;
                        }
                    }
                }
            }
            prop_assert_eq!(t.reach(&topic), want);
            let mut groups = Vec::new();
            t.groups(&topic, &mut groups);
            let groups: BTreeMap<String, u64> =
                groups.into_iter().map(|(s, m)| (s.to_string(), m)).collect();
            prop_assert_eq!(groups, want_groups);
        }
    }
}

//! The topic trie of a shard: one node per topic level, each holding a value `V`.
//!
//! The same structure serves three tables:
//! - subscriptions: filters (with `+` and `#`) → the sessions subscribed here;
//! - interest: filters other shards have subscribers for → which shards (routing);
//! - retained messages: topic names → the retained message.
//!
//! Matching walks the levels of a topic with an explicit stack (no recursion, so a topic
//! of thousands of levels cannot overflow the thread's stack) and visits every node
//! whose filter matches, following MQTT's rules: `+` is one level, `#` is this level and
//! everything below (so `a/#` matches `a`), and neither wildcard at the first level
//! matches a topic that starts with `$`.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;
use slab::Slab;

/// A node id; `NONE` marks an absent child.
pub type NodeId = u32;
const NONE: NodeId = u32::MAX;
/// The root node (the empty filter; it never holds a value).
pub const ROOT: NodeId = 0;
/// A node switches from a list of children to a hash table at this many children.
const FEW_CHILDREN: usize = 8;

/// What a node holds; a node whose value is empty and that has no children is pruned.
pub trait NodeValue: Default {
    fn is_empty(&self) -> bool;
}

/// One topic level, stored in the node: up to 22 bytes inline (no allocation: most
/// levels — device ids, numbers, words — fit), longer ones on the heap.
enum Level {
    Inline { len: u8, bytes: [u8; 22] },
    Heap(Box<str>),
}

impl Level {
    fn new(s: &str) -> Level {
        let mut bytes = [0u8; 22];
        match bytes.get_mut(..s.len()) {
            Some(dst) => {
                dst.copy_from_slice(s.as_bytes());
                Level::Inline {
                    len: s.len() as u8,
                    bytes,
                }
            }
            None => Level::Heap(s.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Level::Inline { len, bytes } => &bytes[..*len as usize],
            Level::Heap(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // Always made from a `&str` in `new`.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// The children of an inner node. Leaves (most nodes, when every client has a topic of
/// its own) have none, so this lives apart from the nodes.
struct Children {
    /// The `+` child and the `#` child, kept apart so matching finds them directly.
    plus: NodeId,
    hash: NodeId,
    named: Named,
}

/// The children of a node but `+` and `#`.
enum Named {
    /// Few children: found by comparing each child's level, no hashing.
    Few(Vec<NodeId>),
    /// Many children (a topic per device): child ids hashed by their level, which lives
    /// in the child node only (no second copy of the string).
    Many(HashTable<NodeId>),
}

impl Children {
    fn is_empty(&self) -> bool {
        self.plus == NONE
            && self.hash == NONE
            && match &self.named {
                Named::Few(ids) => ids.is_empty(),
                Named::Many(table) => table.is_empty(),
            }
    }
}

struct Node<V> {
    parent: NodeId,
    /// Index of this node's entry in `Trie::children`, or `NONE` for a leaf.
    children: u32,
    level: Level,
    value: V,
}

impl<V: NodeValue> Node<V> {
    fn new(parent: NodeId, level: &str) -> Self {
        Node {
            parent,
            children: NONE,
            level: Level::new(level),
            value: V::default(),
        }
    }
}

/// A trie of topic levels with a value per node. A leaf (most nodes, when every client
/// has a topic of its own) costs its `Node` and nothing else.
pub struct Trie<V> {
    nodes: Slab<Node<V>>,
    /// Children of inner nodes, kept apart so the hash table can read its nodes' levels.
    children: Slab<Children>,
    hasher: RandomState,
    /// Scratch stack for matching, kept to avoid allocating per match.
    stack: Vec<(NodeId, u32)>,
    levels: Vec<(u32, u32)>,
}

impl<V: NodeValue> Default for Trie<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: NodeValue> Trie<V> {
    pub fn new() -> Self {
        let mut nodes = Slab::new();
        let root = nodes.insert(Node::new(NONE, ""));
        debug_assert_eq!(root as NodeId, ROOT);
        Trie {
            nodes,
            children: Slab::new(),
            hasher: RandomState::new(),
            stack: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Nodes in the trie, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The children of `node`, if it has any.
    fn kids(&self, node: NodeId) -> Option<&Children> {
        match self.nodes[node as usize].children {
            NONE => None,
            slot => Some(&self.children[slot as usize]),
        }
    }

    fn child(&self, node: NodeId, level: &str) -> NodeId {
        let Some(kids) = self.kids(node) else {
            return NONE;
        };
        match level {
            "+" => kids.plus,
            "#" => kids.hash,
            _ => match &kids.named {
                Named::Few(ids) => ids
                    .iter()
                    .copied()
                    .find(|&c| self.nodes[c as usize].level.as_bytes() == level.as_bytes())
                    .unwrap_or(NONE),
                Named::Many(table) => {
                    let h = self.hasher.hash_one(level.as_bytes());
                    let eq =
                        |c: &NodeId| self.nodes[*c as usize].level.as_bytes() == level.as_bytes();
                    table.find(h, eq).copied().unwrap_or(NONE)
                }
            },
        }
    }

    /// The node for `path` (a filter or a topic name), if present.
    pub fn find(&self, path: &str) -> Option<NodeId> {
        let mut node = ROOT;
        for level in path.split('/') {
            node = self.child(node, level);
            if node == NONE {
                return None;
            }
        }
        Some(node)
    }

    /// The node for `path`, created with its parents as needed.
    pub fn insert(&mut self, path: &str) -> NodeId {
        let mut node = ROOT;
        for level in path.split('/') {
            let c = self.child(node, level);
            node = if c != NONE {
                c
            } else {
                self.add_child(node, level)
            };
        }
        node
    }

    fn add_child(&mut self, parent: NodeId, level: &str) -> NodeId {
        let id = self.nodes.insert(Node::new(parent, level)) as NodeId;
        let Trie {
            nodes,
            children,
            hasher,
            ..
        } = self;
        let mut slot = nodes[parent as usize].children;
        if slot == NONE {
            slot = children.insert(Children {
                plus: NONE,
                hash: NONE,
                named: Named::Few(Vec::new()),
            }) as u32;
            nodes[parent as usize].children = slot;
        }
        let kids = &mut children[slot as usize];
        match level {
            "+" => kids.plus = id,
            "#" => kids.hash = id,
            _ => {
                let rehash = |c: &NodeId| hasher.hash_one(nodes[*c as usize].level.as_bytes());
                if let Named::Few(ids) = &kids.named
                    && ids.len() >= FEW_CHILDREN
                {
                    let mut table = HashTable::with_capacity(ids.len() * 2);
                    for &c in ids.iter() {
                        table.insert_unique(rehash(&c), c, rehash);
                    }
                    kids.named = Named::Many(table);
                }
                match &mut kids.named {
                    Named::Few(ids) => ids.push(id),
                    Named::Many(table) => {
                        table.insert_unique(hasher.hash_one(level.as_bytes()), id, rehash);
                    }
                }
            }
        }
        id
    }

    pub fn get(&self, node: NodeId) -> &V {
        &self.nodes[node as usize].value
    }

    pub fn get_mut(&mut self, node: NodeId) -> &mut V {
        &mut self.nodes[node as usize].value
    }

    /// Visits the values of up to `n` node slots from slot `from` on; returns the slot to
    /// go on from, or `None` past the last. A listing walks the trie this way a piece per
    /// loop turn.
    pub fn scan(&self, from: usize, n: usize, mut visit: impl FnMut(&V)) -> Option<usize> {
        let end = from.saturating_add(n).min(self.nodes.capacity());
        for index in from..end {
            if let Some(node) = self.nodes.get(index) {
                visit(&node.value);
            }
        }
        (end < self.nodes.capacity()).then_some(end)
    }

    /// The filter or topic a node stands for.
    pub fn path_of(&self, node: NodeId) -> String {
        let mut parts = Vec::new();
        let mut n = node;
        while n != ROOT && n != NONE {
            parts.push(self.nodes[n as usize].level.as_str());
            n = self.nodes[n as usize].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// How many levels the path of `node` has, and its length in bytes (what `path_of`
    /// would return), without building it.
    pub fn depth_and_len(&self, node: NodeId) -> (usize, usize) {
        let (mut levels, mut bytes) = (0, 0);
        let mut n = node;
        while n != ROOT && n != NONE {
            levels += 1;
            bytes += self.nodes[n as usize].level.as_bytes().len();
            n = self.nodes[n as usize].parent;
        }
        (levels, bytes + levels.saturating_sub(1))
    }

    /// Removes `node` and then its ancestors while they hold nothing and have no children.
    pub fn prune(&mut self, mut node: NodeId) {
        while node != ROOT {
            let n = &self.nodes[node as usize];
            if !n.value.is_empty() || n.children != NONE {
                return;
            }
            let parent = n.parent;
            let removed = self.nodes.remove(node as usize);
            let level = removed.level.as_bytes();
            let slot = self.nodes[parent as usize].children;
            let kids = &mut self.children[slot as usize];
            if level == b"+" {
                kids.plus = NONE;
            } else if level == b"#" {
                kids.hash = NONE;
            } else {
                match &mut kids.named {
                    Named::Few(ids) => ids.retain(|&c| c != node),
                    Named::Many(table) => {
                        let h = self.hasher.hash_one(level);
                        if let Ok(e) = table.find_entry(h, |&c| c == node) {
                            e.remove();
                        }
                    }
                }
            }
            if kids.is_empty() {
                self.children.remove(slot as usize);
                self.nodes[parent as usize].children = NONE;
            }
            node = parent;
        }
    }

    /// Calls `visit` for every node whose filter matches the topic name `topic`.
    pub fn match_topic(&mut self, topic: &str, mut visit: impl FnMut(NodeId, &V)) {
        self.split_levels(topic);
        let dollar = topic.starts_with('$');
        let n_levels = self.levels.len() as u32;
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((node, depth)) = stack.pop() {
            let (plus, hash) = self.kids(node).map_or((NONE, NONE), |k| (k.plus, k.hash));
            // `#` matches this level and everything below it, but not `$` topics from
            // the first level.
            if hash != NONE && !(depth == 0 && dollar) {
                visit(hash, &self.nodes[hash as usize].value);
            }
            if depth == n_levels {
                if node != ROOT {
                    visit(node, &self.nodes[node as usize].value);
                }
                continue;
            }
            let (start, end) = self.levels[depth as usize];
            let level = &topic[start as usize..end as usize];
            let exact = self.child(node, level);
            if exact != NONE {
                stack.push((exact, depth + 1));
            }
            if plus != NONE && !(depth == 0 && dollar) {
                stack.push((plus, depth + 1));
            }
        }
        self.stack = stack;
    }

    /// Calls `visit` for every node (holding a topic name, as in the retained table) that
    /// the filter `filter` matches.
    pub fn match_filter(&mut self, filter: &str, mut visit: impl FnMut(NodeId, &V)) {
        self.split_levels(filter);
        let n_levels = self.levels.len() as u32;
        let mut stack = std::mem::take(&mut self.stack);
        stack.clear();
        stack.push((ROOT, 0));
        while let Some((node, depth)) = stack.pop() {
            if depth == n_levels {
                if node != ROOT {
                    visit(node, &self.nodes[node as usize].value);
                }
                continue;
            }
            let (start, end) = self.levels[depth as usize];
            match &filter[start as usize..end as usize] {
                "#" => {
                    // This node (the parent level, `a/#` matches `a`) and its whole subtree;
                    // at the first level, not the `$` topics.
                    if node != ROOT {
                        visit(node, &self.nodes[node as usize].value);
                    }
                    let mut sub = Vec::new();
                    self.push_children(node, depth == 0, &mut sub);
                    while let Some(c) = sub.pop() {
                        visit(c, &self.nodes[c as usize].value);
                        self.push_children(c, false, &mut sub);
                    }
                }
                "+" => {
                    let mut sub = Vec::new();
                    self.push_children(node, depth == 0, &mut sub);
                    stack.extend(sub.into_iter().map(|c| (c, depth + 1)));
                }
                level => {
                    let c = self.child(node, level);
                    if c != NONE {
                        stack.push((c, depth + 1));
                    }
                }
            }
        }
        self.stack = stack;
    }

    fn push_children(&self, node: NodeId, skip_dollar: bool, out: &mut Vec<NodeId>) {
        let Some(kids) = self.kids(node) else {
            return;
        };
        let keep = |c: &NodeId| {
            !(skip_dollar && self.nodes[*c as usize].level.as_bytes().starts_with(b"$"))
        };
        match &kids.named {
            Named::Few(ids) => out.extend(ids.iter().copied().filter(keep)),
            Named::Many(table) => out.extend(table.iter().copied().filter(keep)),
        }
    }

    fn split_levels(&mut self, s: &str) {
        self.levels.clear();
        let mut start = 0u32;
        for (i, b) in s.bytes().enumerate() {
            if b == b'/' {
                self.levels.push((start, i as u32));
                start = i as u32 + 1;
            }
        }
        self.levels.push((start, s.len() as u32));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Debug)]
    struct Names(Vec<&'static str>);

    impl NodeValue for Names {
        fn is_empty(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn trie_with(filters: &[&'static str]) -> Trie<Names> {
        let mut t: Trie<Names> = Trie::new();
        for f in filters {
            let n = t.insert(f);
            t.get_mut(n).0.push(f);
        }
        t
    }

    fn matched(t: &mut Trie<Names>, topic: &str) -> Vec<&'static str> {
        let mut out = Vec::new();
        t.match_topic(topic, |_, v| out.extend(v.0.iter().copied()));
        out.sort();
        out
    }

    #[test]
    fn matching_agrees_with_the_reference_matcher() {
        let filters = [
            "sport/tennis/player1",
            "sport/tennis/player1/#",
            "sport/#",
            "sport/+",
            "sport/tennis/+",
            "+/+",
            "/+",
            "+",
            "#",
            "$SYS/#",
            "$SYS/+",
            "+/monitor/Clients",
            "a/b/c/d",
            "a/+/c/+",
            "a//c",
            "",
        ];
        let mut t = trie_with(&filters);
        let topics = [
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport",
            "sport/",
            "/finance",
            "finance",
            "$SYS/monitor/Clients",
            "$SYS/x",
            "a/b/c/d",
            "a/x/c/y",
            "a//c",
            "",
            "/",
        ];
        for topic in topics {
            let mut want: Vec<&str> = filters
                .iter()
                .copied()
                .filter(|f| ringmq_proto::topic::matches(f, topic))
                .collect();
            want.sort();
            assert_eq!(matched(&mut t, topic), want, "topic {topic:?}");
        }
    }

    #[test]
    fn many_children_switch_to_a_map_and_still_match_and_prune() {
        let mut t: Trie<Names> = Trie::new();
        let names: Vec<String> = (0..100).map(|i| format!("dev/{i}/up")).collect();
        let leaked: Vec<&'static str> = names.into_iter().map(|s| &*s.leak()).collect();
        for f in &leaked {
            let n = t.insert(f);
            t.get_mut(n).0.push(f);
        }
        assert_eq!(matched(&mut t, "dev/57/up"), vec!["dev/57/up"]);
        for f in &leaked {
            let n = t.find(f).unwrap();
            t.get_mut(n).0.clear();
            t.prune(n);
        }
        assert_eq!(t.node_count(), 1, "everything but the root is pruned");
    }

    #[test]
    fn prune_keeps_nodes_with_values_or_children() {
        let mut t = trie_with(&["a/b", "a/b/c"]);
        let c = t.find("a/b/c").unwrap();
        let b = t.find("a/b").unwrap();
        t.get_mut(b).0.clear();
        t.prune(b);
        assert!(t.find("a/b").is_some(), "a/b still has a child");
        t.get_mut(c).0.clear();
        t.prune(c);
        assert!(t.find("a").is_none());
        let n = t.insert("x/+/#");
        assert_eq!(t.path_of(n), "x/+/#");
        assert_eq!(t.depth_and_len(n), (3, 5));
        let n = t.insert("/");
        assert_eq!(t.depth_and_len(n), (2, t.path_of(n).len()));
    }

    #[test]
    fn wildcard_children_are_pruned_with_the_rest() {
        let filters = ["a/+", "a/#", "a/+/b", "+", "#", "a/b"];
        let mut t = trie_with(&filters);
        assert_eq!(matched(&mut t, "a/x"), vec!["#", "a/#", "a/+"]);
        for f in filters {
            let n = t.find(f).unwrap();
            t.get_mut(n).0.clear();
            t.prune(n);
        }
        assert_eq!(t.node_count(), 1);
        assert!(t.children.is_empty(), "no child list is left behind");
    }

    #[test]
    fn filters_find_retained_topic_names() {
        let mut t = trie_with(&["a/b", "a/c/d", "a", "$SYS/up", "b"]);
        let mut found = |f: &str| {
            let mut out = Vec::new();
            t.match_filter(f, |_, v| out.extend(v.0.iter().copied()));
            out.sort();
            out
        };
        assert_eq!(found("a/#"), vec!["a", "a/b", "a/c/d"]);
        assert_eq!(found("a/+"), vec!["a/b"]);
        assert_eq!(found("#"), vec!["a", "a/b", "a/c/d", "b"]);
        assert_eq!(found("+"), vec!["a", "b"]);
        assert_eq!(found("$SYS/#"), vec!["$SYS/up"]);
        assert_eq!(found("+/+/d"), vec!["a/c/d"]);
    }

    #[test]
    fn long_and_short_levels_are_told_apart() {
        let long = "x".repeat(22);
        let longer = "x".repeat(23);
        let filters: Vec<&'static str> = [
            format!("a/{long}"),
            format!("a/{longer}"),
            format!("a/{longer}y"),
            "a/é".to_string(),
        ]
        .into_iter()
        .map(|f| &*f.leak())
        .collect();
        let mut t = trie_with(&filters);
        for f in &filters {
            assert_eq!(matched(&mut t, f), vec![*f]);
            let n = t.find(f).unwrap();
            assert_eq!(t.path_of(n), *f);
        }
        assert!(t.find("a/x").is_none());
    }

    #[test]
    fn deep_topics_do_not_recurse() {
        let deep = vec!["x"; 50_000].join("/");
        let mut t = trie_with(&["#"]);
        assert_eq!(matched(&mut t, &deep), vec!["#"]);
    }
}

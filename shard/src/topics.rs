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

use std::collections::HashMap;

use slab::Slab;

/// A node id; `NONE` marks an absent child.
pub type NodeId = u32;
const NONE: NodeId = u32::MAX;
/// The root node (the empty filter; it never holds a value).
pub const ROOT: NodeId = 0;
/// A node switches from a list of children to a hash map at this many children.
const FEW_CHILDREN: usize = 8;

/// What a node holds; a node whose value is empty and that has no children is pruned.
pub trait NodeValue: Default {
    fn is_empty(&self) -> bool;
}

enum Children {
    /// Child ids, found by comparing each child's level (few children: no hashing).
    Few(Vec<NodeId>),
    /// Level → child id, for nodes with many children (a topic per device).
    Many(HashMap<Box<str>, NodeId>),
}

struct Node<V> {
    parent: NodeId,
    level: Box<str>,
    children: Children,
    /// The `+` child and the `#` child, kept apart so matching finds them directly.
    plus: NodeId,
    hash: NodeId,
    value: V,
}

impl<V: NodeValue> Node<V> {
    fn new(parent: NodeId, level: &str) -> Self {
        Node {
            parent,
            level: level.into(),
            children: Children::Few(Vec::new()),
            plus: NONE,
            hash: NONE,
            value: V::default(),
        }
    }

    fn has_children(&self) -> bool {
        self.plus != NONE
            || self.hash != NONE
            || match &self.children {
                Children::Few(v) => !v.is_empty(),
                Children::Many(m) => !m.is_empty(),
            }
    }
}

/// A trie of topic levels with a value per node.
pub struct Trie<V> {
    nodes: Slab<Node<V>>,
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
            stack: Vec::new(),
            levels: Vec::new(),
        }
    }

    /// Nodes in the trie, the root included.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn child(&self, node: NodeId, level: &str) -> NodeId {
        let n = &self.nodes[node as usize];
        match level {
            "+" => n.plus,
            "#" => n.hash,
            _ => match &n.children {
                Children::Few(ids) => ids
                    .iter()
                    .copied()
                    .find(|&c| &*self.nodes[c as usize].level == level)
                    .unwrap_or(NONE),
                Children::Many(map) => map.get(level).copied().unwrap_or(NONE),
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
        match level {
            "+" => self.nodes[parent as usize].plus = id,
            "#" => self.nodes[parent as usize].hash = id,
            _ => {
                let few_full = matches!(
                    &self.nodes[parent as usize].children,
                    Children::Few(ids) if ids.len() >= FEW_CHILDREN
                );
                if few_full {
                    let Children::Few(ids) = std::mem::replace(
                        &mut self.nodes[parent as usize].children,
                        Children::Few(Vec::new()),
                    ) else {
                        unreachable!()
                    };
                    let map: HashMap<Box<str>, NodeId> = ids
                        .iter()
                        .map(|&c| (self.nodes[c as usize].level.clone(), c))
                        .collect();
                    self.nodes[parent as usize].children = Children::Many(map);
                }
                match &mut self.nodes[parent as usize].children {
                    Children::Few(ids) => ids.push(id),
                    Children::Many(map) => {
                        map.insert(level.into(), id);
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

    /// The filter or topic a node stands for.
    pub fn path_of(&self, node: NodeId) -> String {
        let mut parts = Vec::new();
        let mut n = node;
        while n != ROOT && n != NONE {
            parts.push(&*self.nodes[n as usize].level);
            n = self.nodes[n as usize].parent;
        }
        parts.reverse();
        parts.join("/")
    }

    /// Removes `node` and then its ancestors while they hold nothing and have no children.
    pub fn prune(&mut self, mut node: NodeId) {
        while node != ROOT {
            let n = &self.nodes[node as usize];
            if !n.value.is_empty() || n.has_children() {
                return;
            }
            let parent = n.parent;
            let removed = self.nodes.remove(node as usize);
            let p = &mut self.nodes[parent as usize];
            match &*removed.level {
                "+" => p.plus = NONE,
                "#" => p.hash = NONE,
                level => match &mut p.children {
                    Children::Few(ids) => ids.retain(|&c| c != node),
                    Children::Many(map) => {
                        map.remove(level);
                    }
                },
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
            let n = &self.nodes[node as usize];
            // `#` matches this level and everything below it, but not `$` topics from
            // the first level.
            if n.hash != NONE && !(depth == 0 && dollar) {
                visit(n.hash, &self.nodes[n.hash as usize].value);
            }
            if depth == n_levels {
                if node != ROOT {
                    visit(node, &n.value);
                }
                continue;
            }
            let (start, end) = self.levels[depth as usize];
            let level = &topic[start as usize..end as usize];
            let exact = self.child(node, level);
            if exact != NONE {
                stack.push((exact, depth + 1));
            }
            if n.plus != NONE && !(depth == 0 && dollar) {
                stack.push((n.plus, depth + 1));
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
        let n = &self.nodes[node as usize];
        let keep = |c: &NodeId| !(skip_dollar && self.nodes[*c as usize].level.starts_with('$'));
        match &n.children {
            Children::Few(ids) => out.extend(ids.iter().copied().filter(keep)),
            Children::Many(map) => out.extend(map.values().copied().filter(keep)),
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
    fn deep_topics_do_not_recurse() {
        let deep = vec!["x"; 50_000].join("/");
        let mut t = trie_with(&["#"]);
        assert_eq!(matched(&mut t, &deep), vec!["#"]);
    }
}

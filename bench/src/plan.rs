//! Who does what in a scenario: which clients subscribe to which topic, which publish and
//! to which topics, and how topics and client identifiers are named. Topics are numbers
//! in the swarm and names only on the wire.

use std::fmt::Write;

use crate::backoff::Rng;
use crate::config::{Config, Scenario};

/// The part one client plays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The topic it subscribes to.
    pub subscribe: Option<u32>,
    /// Its publisher number and the topics it publishes to.
    pub publish: Option<(u32, Vec<u32>)>,
}

/// The layout of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    /// Subscribers (fanout), publishers (fanin), clients (others).
    pub connections: u32,
    pub publishers: u32,
    pub peers: u32,
    pub subscribe_own: bool,
    /// The one topic (fanout, fanin) or the prefix of `<topic>/<i>`.
    pub topic: String,
    pub client_id_prefix: String,
}

impl Plan {
    pub fn new(cfg: &Config) -> Plan {
        Plan {
            scenario: cfg.scenario,
            connections: cfg.connections,
            publishers: cfg.publishers,
            peers: cfg.peers,
            subscribe_own: cfg.subscribe_own,
            topic: cfg.topic.clone(),
            client_id_prefix: cfg.client_id_prefix.clone(),
        }
    }

    pub fn clients(&self) -> u32 {
        match self.scenario {
            Scenario::Fanout => self.connections + self.publishers,
            Scenario::Fanin => self.connections + 1,
            _ => self.connections,
        }
    }

    /// Whether every topic is the same one (the topic name does not carry a number).
    pub fn single_topic(&self) -> bool {
        matches!(self.scenario, Scenario::Fanout | Scenario::Fanin)
    }

    /// Whether client `i` only publishes (fanout's and fanin's publishers).
    pub fn publishes_only(&self, i: u32) -> bool {
        match self.scenario {
            Scenario::Fanout => i >= self.connections,
            Scenario::Fanin => i >= 1,
            _ => false,
        }
    }

    /// The role of client `i`. Fanout: subscribers first, then publishers. Fanin: the
    /// subscriber is client 0, publisher `k` is client `k + 1`. Pairs: client `i`
    /// subscribes to topic `i`, is publisher `i`, and publishes to `peers` other clients'
    /// topics drawn with `rng`.
    pub fn role(&self, i: u32, rng: &mut Rng) -> Role {
        match self.scenario {
            Scenario::Fanout if i < self.connections => Role {
                subscribe: Some(0),
                publish: None,
            },
            Scenario::Fanout => Role {
                subscribe: None,
                publish: Some((i - self.connections, vec![0])),
            },
            Scenario::Fanin if i == 0 => Role {
                subscribe: Some(0),
                publish: None,
            },
            Scenario::Fanin => Role {
                subscribe: None,
                publish: Some((i - 1, vec![0])),
            },
            Scenario::Pairs => Role {
                subscribe: Some(i),
                publish: Some((i, self.pick_peers(i, rng))),
            },
            Scenario::Idle if self.subscribe_own => Role {
                subscribe: Some(i),
                publish: None,
            },
            Scenario::Idle | Scenario::Connect => Role {
                subscribe: None,
                publish: None,
            },
        }
    }

    /// `peers` distinct clients other than `i`.
    fn pick_peers(&self, i: u32, rng: &mut Rng) -> Vec<u32> {
        let n = self.connections;
        let k = self.peers.min(n - 1) as usize;
        let mut out = Vec::with_capacity(k);
        if k as u32 == n - 1 {
            out.extend((0..n).filter(|&j| j != i));
            return out;
        }
        while out.len() < k {
            // An offset in 1..n never lands on i itself.
            let j = (i + 1 + rng.below(u64::from(n - 1)) as u32) % n;
            if !out.contains(&j) {
                out.push(j);
            }
        }
        out
    }

    /// Writes the name of topic `t` into `out` (cleared first).
    pub fn topic_name(&self, t: u32, out: &mut String) {
        out.clear();
        out.push_str(&self.topic);
        if !self.single_topic() {
            let _ = write!(out, "/{t}");
        }
    }

    /// Writes the client identifier of client `i` into `out` (cleared first).
    pub fn client_id(&self, i: u32, out: &mut String) {
        out.clear();
        let _ = write!(out, "{}-{i}", self.client_id_prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(scenario: Scenario, connections: u32, publishers: u32, peers: u32) -> Plan {
        Plan {
            scenario,
            connections,
            publishers,
            peers,
            subscribe_own: true,
            topic: "t".into(),
            client_id_prefix: "c".into(),
        }
    }

    #[test]
    fn fanout_and_fanin_roles() {
        let mut rng = Rng::new(1);
        let p = plan(Scenario::Fanout, 3, 2, 0);
        assert_eq!(p.clients(), 5);
        assert_eq!(p.role(2, &mut rng).subscribe, Some(0));
        assert_eq!(p.role(4, &mut rng).publish, Some((1, vec![0])));
        let p = plan(Scenario::Fanin, 4, 4, 0);
        assert_eq!(p.clients(), 5);
        assert_eq!(p.role(0, &mut rng).subscribe, Some(0));
        assert_eq!(p.role(4, &mut rng).publish, Some((3, vec![0])));
        let mut name = String::new();
        p.topic_name(0, &mut name);
        assert_eq!(name, "t");
    }

    #[test]
    fn pairs_publish_to_distinct_others() {
        let mut rng = Rng::new(7);
        let p = plan(Scenario::Pairs, 50, 50, 8);
        for i in 0..50 {
            let r = p.role(i, &mut rng);
            assert_eq!(r.subscribe, Some(i));
            let (id, peers) = r.publish.unwrap();
            assert_eq!(id, i);
            assert_eq!(peers.len(), 8);
            assert!(peers.iter().all(|&j| j != i && j < 50));
            let mut sorted = peers.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), 8);
        }
        // Fewer clients than peers: everyone else.
        let p = plan(Scenario::Pairs, 3, 3, 8);
        assert_eq!(p.role(1, &mut rng).publish.unwrap().1, [0, 2]);
        let mut name = String::new();
        p.topic_name(17, &mut name);
        assert_eq!(name, "t/17");
        p.client_id(3, &mut name);
        assert_eq!(name, "c-3");
    }
}

//! The health state machine: pure, no I/O, so every rule is a unit test.
//!
//! Per real server:
//! - first failed probe: drain (weight 0: no new connections, existing ones
//!   finish);
//! - `fall` consecutive failures: remove;
//! - `rise` consecutive successes: restore with its configured weight.
//!
//! One rule overrides those: if a round would leave no server taking
//! traffic while some did before, the round is a local problem (this node's
//! network, DNS, a firewall) far more often than every master dying at once.
//! The servers that were active stay active, the event is logged once, and
//! normal rules resume when any probe succeeds again.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// In the table with its weight.
    Active,
    /// In the table with weight 0.
    Drained,
    /// Not in the table.
    Removed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub weight: u32,
    pub phase: Phase,
    pub fails: u32,
    pub oks: u32,
}

/// One probe outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Ok,
    Fail(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fall: u32,
    pub rise: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Drained {
        rs: SocketAddr,
        reason: String,
    },
    Removed {
        rs: SocketAddr,
        reason: String,
        fails: u32,
    },
    Restored {
        rs: SocketAddr,
        oks: u32,
    },
    /// Every probe that ran failed; these servers are kept as they were.
    HeldLastGood {
        kept: Vec<SocketAddr>,
        reason: String,
    },
    /// A probe succeeded again after a hold.
    HoldEnded,
    Added {
        rs: SocketAddr,
    },
    Forgotten {
        rs: SocketAddr,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Drained { rs, reason } => write!(f, "drained {rs} (weight 0): {reason}"),
            Event::Removed { rs, reason, fails } => {
                write!(f, "removed {rs} after {fails} failed probes: {reason}")
            }
            Event::Restored { rs, oks } => {
                write!(f, "restored {rs} after {oks} good probes")
            }
            Event::HeldLastGood { kept, reason } => write!(
                f,
                "every real server failed its probe at once ({reason}); this looks like the \
                 local network, so keeping the last good set: {}",
                join(kept)
            ),
            Event::HoldEnded => write!(f, "probes succeed again; normal health rules resume"),
            Event::Added { rs } => write!(f, "config added {rs}"),
            Event::Forgotten { rs } => write!(f, "config no longer lists {rs}; removed"),
        }
    }
}

fn join(v: &[SocketAddr]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, Clone)]
pub struct Pool {
    servers: BTreeMap<SocketAddr, Server>,
    th: Thresholds,
    holding: bool,
}

impl Pool {
    /// Every server starts active: a fresh node gets a working VIP at once,
    /// and the first round corrects the picture within one interval.
    pub fn new(rs: &[(SocketAddr, u32)], th: Thresholds) -> Self {
        let servers = rs
            .iter()
            .map(|(a, w)| {
                (
                    *a,
                    Server {
                        weight: *w,
                        phase: Phase::Active,
                        fails: 0,
                        oks: 0,
                    },
                )
            })
            .collect();
        Pool {
            servers,
            th,
            holding: false,
        }
    }

    /// Same servers and states, new thresholds (config reload).
    pub fn with_thresholds(mut self, th: Thresholds) -> Self {
        self.th = th;
        self
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.servers.keys().copied().collect()
    }

    #[cfg(test)]
    pub fn holding(&self) -> bool {
        self.holding
    }

    fn active(map: &BTreeMap<SocketAddr, Server>) -> Vec<SocketAddr> {
        map.iter()
            .filter(|(_, s)| s.phase == Phase::Active)
            .map(|(a, _)| *a)
            .collect()
    }

    /// The destinations the data plane should hold: active ones with their
    /// weight, drained ones with 0, removed ones absent.
    pub fn desired(&self) -> BTreeMap<SocketAddr, u32> {
        self.servers
            .iter()
            .filter_map(|(a, s)| match s.phase {
                Phase::Active => Some((*a, s.weight)),
                Phase::Drained => Some((*a, 0)),
                Phase::Removed => None,
            })
            .collect()
    }

    /// Applies one round of probe results and returns what changed.
    /// Servers missing from `results` were not probed and keep their state.
    pub fn observe(&mut self, results: &BTreeMap<SocketAddr, Probe>) -> Vec<Event> {
        let before = Self::active(&self.servers);
        let mut next = self.servers.clone();
        let mut events = Vec::new();
        for (addr, s) in next.iter_mut() {
            match results.get(addr) {
                None => {}
                Some(Probe::Ok) => {
                    s.oks = s.oks.saturating_add(1);
                    s.fails = 0;
                    if s.phase != Phase::Active && s.oks >= self.th.rise {
                        s.phase = Phase::Active;
                        events.push(Event::Restored {
                            rs: *addr,
                            oks: s.oks,
                        });
                    }
                }
                Some(Probe::Fail(reason)) => {
                    s.fails = s.fails.saturating_add(1);
                    s.oks = 0;
                    if s.phase != Phase::Removed && s.fails >= self.th.fall {
                        s.phase = Phase::Removed;
                        events.push(Event::Removed {
                            rs: *addr,
                            reason: reason.clone(),
                            fails: s.fails,
                        });
                    } else if s.phase == Phase::Active {
                        s.phase = Phase::Drained;
                        events.push(Event::Drained {
                            rs: *addr,
                            reason: reason.clone(),
                        });
                    }
                }
            }
        }
        if Self::active(&next).is_empty() && !before.is_empty() {
            // Freeze the servers that were carrying traffic, counters included,
            // so one good probe after the outage does not find them half-way
            // to removal.
            for addr in &before {
                if let Some(old) = self.servers.get(addr) {
                    next.insert(*addr, old.clone());
                }
            }
            events.retain(|e| match e {
                Event::Drained { rs, .. } | Event::Removed { rs, .. } => !before.contains(rs),
                _ => true,
            });
            if !self.holding {
                self.holding = true;
                let reason = before
                    .iter()
                    .filter_map(|a| match results.get(a) {
                        Some(Probe::Fail(r)) => Some(format!("{a}: {r}")),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("; ");
                events.push(Event::HeldLastGood {
                    kept: before,
                    reason,
                });
            }
        } else if self.holding && results.values().any(|p| *p == Probe::Ok) {
            self.holding = false;
            events.push(Event::HoldEnded);
        }
        self.servers = next;
        events
    }

    /// Takes a new server list (config reload). New servers wait for `rise`
    /// good probes, unless nothing would be active, in which case they start
    /// active for the same reason a fresh pool does.
    pub fn set_servers(&mut self, rs: &[(SocketAddr, u32)]) -> Vec<Event> {
        let mut events = Vec::new();
        let wanted: BTreeMap<SocketAddr, u32> = rs.iter().copied().collect();
        self.servers.retain(|a, _| {
            let keep = wanted.contains_key(a);
            if !keep {
                events.push(Event::Forgotten { rs: *a });
            }
            keep
        });
        let mut added = Vec::new();
        for (a, w) in &wanted {
            match self.servers.get_mut(a) {
                Some(s) => s.weight = *w,
                None => {
                    self.servers.insert(
                        *a,
                        Server {
                            weight: *w,
                            phase: Phase::Removed,
                            fails: 0,
                            oks: 0,
                        },
                    );
                    added.push(*a);
                    events.push(Event::Added { rs: *a });
                }
            }
        }
        if Self::active(&self.servers).is_empty() {
            for a in added {
                if let Some(s) = self.servers.get_mut(&a) {
                    s.phase = Phase::Active;
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 88, 0, i], 6443))
    }

    fn pool(n: u8, fall: u32, rise: u32) -> Pool {
        let rs: Vec<_> = (1..=n).map(|i| (a(i), 1)).collect();
        Pool::new(&rs, Thresholds { fall, rise })
    }

    fn round(p: &mut Pool, fails: &[u8], n: u8) -> Vec<Event> {
        let r = (1..=n)
            .map(|i| {
                let pr = if fails.contains(&i) {
                    Probe::Fail("connection refused".into())
                } else {
                    Probe::Ok
                };
                (a(i), pr)
            })
            .collect();
        p.observe(&r)
    }

    #[test]
    fn first_failure_drains_to_weight_zero() {
        let mut p = pool(3, 2, 1);
        let ev = round(&mut p, &[2], 3);
        assert_eq!(
            ev,
            vec![Event::Drained {
                rs: a(2),
                reason: "connection refused".into()
            }]
        );
        assert_eq!(p.desired().get(&a(2)), Some(&0));
        assert_eq!(p.desired().len(), 3);
    }

    #[test]
    fn fall_consecutive_failures_remove() {
        let mut p = pool(3, 2, 1);
        round(&mut p, &[2], 3);
        let ev = round(&mut p, &[2], 3);
        assert!(matches!(ev[0], Event::Removed { fails: 2, .. }));
        assert!(!p.desired().contains_key(&a(2)));
        // Further failures do not repeat the event.
        assert!(round(&mut p, &[2], 3).is_empty());
    }

    #[test]
    fn fall_of_one_removes_at_once() {
        let mut p = pool(2, 1, 1);
        let ev = round(&mut p, &[1], 2);
        assert!(matches!(ev[0], Event::Removed { .. }));
    }

    #[test]
    fn rise_consecutive_successes_restore() {
        let mut p = pool(3, 2, 2);
        round(&mut p, &[3], 3);
        round(&mut p, &[3], 3);
        assert!(
            round(&mut p, &[], 3).is_empty(),
            "one success is not enough"
        );
        let ev = round(&mut p, &[], 3);
        assert_eq!(ev, vec![Event::Restored { rs: a(3), oks: 2 }]);
        assert_eq!(p.desired().get(&a(3)), Some(&1));
    }

    #[test]
    fn a_failure_resets_rise_progress() {
        let mut p = pool(2, 1, 2);
        round(&mut p, &[2], 2);
        round(&mut p, &[], 2);
        round(&mut p, &[2], 2);
        assert!(round(&mut p, &[], 2).is_empty());
    }

    #[test]
    fn drained_server_recovers_without_removal() {
        let mut p = pool(2, 3, 1);
        round(&mut p, &[1], 2);
        let ev = round(&mut p, &[], 2);
        assert_eq!(ev, vec![Event::Restored { rs: a(1), oks: 1 }]);
    }

    #[test]
    fn all_fail_keeps_last_good_set_and_says_so_once() {
        let mut p = pool(3, 2, 1);
        let before = p.desired();
        let ev = round(&mut p, &[1, 2, 3], 3);
        assert_eq!(ev.len(), 1);
        assert!(matches!(&ev[0], Event::HeldLastGood { kept, .. } if kept.len() == 3));
        assert_eq!(p.desired(), before);
        for _ in 0..5 {
            assert!(round(&mut p, &[1, 2, 3], 3).is_empty());
        }
        assert_eq!(p.desired(), before);
        assert!(p.holding());
        let ev = round(&mut p, &[2, 3], 3);
        assert!(ev.contains(&Event::HoldEnded));
        assert!(ev
            .iter()
            .any(|e| matches!(e, Event::Drained { rs, .. } if *rs == a(2))));
        assert_eq!(p.desired().get(&a(1)), Some(&1));
    }

    #[test]
    fn last_healthy_server_is_never_removed() {
        let mut p = pool(3, 2, 1);
        round(&mut p, &[1, 2], 3);
        round(&mut p, &[1, 2], 3);
        assert_eq!(p.desired().keys().copied().collect::<Vec<_>>(), vec![a(3)]);
        let ev = round(&mut p, &[1, 2, 3], 3);
        assert!(matches!(&ev[..], [Event::HeldLastGood { kept, .. }] if kept == &vec![a(3)]));
        round(&mut p, &[1, 2, 3], 3);
        assert_eq!(p.desired().get(&a(3)), Some(&1));
    }

    #[test]
    fn reload_adds_pending_and_forgets_missing() {
        let mut p = pool(2, 2, 1);
        let ev = p.set_servers(&[(a(1), 1), (a(3), 1)]);
        assert!(ev.contains(&Event::Forgotten { rs: a(2) }));
        assert!(ev.contains(&Event::Added { rs: a(3) }));
        assert!(!p.desired().contains_key(&a(3)), "waits for rise");
        round(&mut p, &[], 3);
        assert!(p.desired().contains_key(&a(3)));
    }

    #[test]
    fn reload_with_only_new_servers_starts_them_active() {
        let mut p = pool(1, 2, 1);
        p.set_servers(&[(a(5), 2)]);
        assert_eq!(p.desired().get(&a(5)), Some(&2));
    }
}

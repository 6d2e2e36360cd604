//! A leader's view of its followers, as pure logic: each follower's log end offset (learnt
//! from its fetches), when it was last caught up, the high watermark that follows from the
//! ISR, and which ISR changes to ask the controller for. The leader never changes its ISR
//! itself: it proposes, and applies what the controller commits.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A broker id, as the controller gives it.
pub type BrokerId = i32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The follower's log end offset: its last fetch asked from here, so it has all below.
    log_end_offset: i64,
    /// The last moment the follower was known to have everything the leader had (Kafka's
    /// lastCaughtUpTime).
    caught_up_at: Instant,
    /// The leader's log end offset, and the time, at the follower's previous fetch.
    leader_end_at_last_fetch: i64,
    last_fetch_at: Instant,
}

/// What the leader wants the controller to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsrProposal {
    /// These followers lag more than `replica.lag.time.max.ms`.
    Shrink(Vec<BrokerId>),
    /// These followers have caught up to the high watermark.
    Expand(Vec<BrokerId>),
}

/// The leader's state for one partition at one leader epoch.
#[derive(Debug, Clone)]
pub struct LeaderView {
    pub me: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// The ISR as the controller last committed it.
    pub isr: Vec<BrokerId>,
    pub replicas: Vec<BrokerId>,
    followers: BTreeMap<BrokerId, Progress>,
    high_watermark: i64,
    /// Where this leader's epoch starts in its log: a follower joins the ISR only once it
    /// has reached it too, since a new leader's high watermark may lag what was committed
    /// (KAFKA-7128).
    epoch_start: i64,
}

/// A leadership as the controller decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    pub me: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

impl LeaderView {
    /// A new leadership: followers count as caught up as of now (they get a full lag
    /// allowance), and the high watermark starts where this replica had it; the leader's
    /// epoch starts at `epoch_start` in its log.
    pub fn new(
        leadership: Leadership,
        high_watermark: i64,
        epoch_start: i64,
        now: Instant,
    ) -> LeaderView {
        let Leadership {
            me,
            leader_epoch,
            partition_epoch,
            replicas,
            isr,
        } = leadership;
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                (
                    r,
                    Progress {
                        log_end_offset: -1,
                        caught_up_at: now,
                        leader_end_at_last_fetch: -1,
                        last_fetch_at: now,
                    },
                )
            })
            .collect();
        LeaderView {
            me,
            leader_epoch,
            partition_epoch,
            isr,
            replicas,
            followers,
            high_watermark,
            epoch_start,
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Takes a new replica set at the same leader epoch (a reassignment adds or drops
    /// replicas): an added replica is tracked from its first fetch (it has not caught up:
    /// it joins the ISR only once it does), a dropped one is forgotten.
    pub fn set_replicas(&mut self, replicas: Vec<BrokerId>, now: Instant) {
        self.followers.retain(|r, _| replicas.contains(r));
        for &r in &replicas {
            if r != self.me {
                self.followers.entry(r).or_insert(Progress {
                    log_end_offset: -1,
                    caught_up_at: now,
                    leader_end_at_last_fetch: -1,
                    last_fetch_at: now,
                });
            }
        }
        self.replicas = replicas;
    }

    /// Takes a new committed ISR and partition epoch (same leader epoch); returns the high
    /// watermark, which may have moved.
    pub fn set_isr(&mut self, isr: Vec<BrokerId>, partition_epoch: i32, leader_end: i64) -> i64 {
        self.isr = isr;
        self.partition_epoch = partition_epoch;
        self.advance(leader_end)
    }

    /// Records a follower's fetch from `fetch_offset` while the leader's log ends at
    /// `leader_end`; returns the high watermark, which may have moved. A fetch from a broker
    /// that is not a replica is ignored.
    pub fn on_fetch(
        &mut self,
        follower: BrokerId,
        fetch_offset: i64,
        leader_end: i64,
        now: Instant,
    ) -> i64 {
        if let Some(progress) = self.followers.get_mut(&follower) {
            if fetch_offset >= leader_end {
                progress.caught_up_at = now;
            } else if fetch_offset >= progress.leader_end_at_last_fetch {
                progress.caught_up_at = progress.caught_up_at.max(progress.last_fetch_at);
            }
            progress.log_end_offset = fetch_offset;
            progress.leader_end_at_last_fetch = leader_end;
            progress.last_fetch_at = now;
        }
        self.advance(leader_end)
    }

    /// After the leader's own append: with an ISR of the leader alone, the high watermark
    /// follows its log end.
    pub fn on_append(&mut self, leader_end: i64) -> i64 {
        self.advance(leader_end)
    }

    /// The high watermark is the least log end offset over the ISR (the leader's own
    /// included); it never moves back.
    fn advance(&mut self, leader_end: i64) -> i64 {
        let least = self
            .isr
            .iter()
            .map(|r| {
                if *r == self.me {
                    leader_end
                } else {
                    self.followers.get(r).map_or(-1, |p| p.log_end_offset)
                }
            })
            .min()
            .unwrap_or(leader_end);
        self.high_watermark = self.high_watermark.max(least.min(leader_end));
        self.high_watermark
    }

    /// The ISR change to ask for now, if any: followers in the ISR that have not been caught
    /// up for `max_lag` leave it; followers outside it whose log reaches the high watermark
    /// join it. Shrinks come first.
    pub fn proposal(&self, max_lag: Duration, now: Instant) -> Option<IsrProposal> {
        let lagging: Vec<BrokerId> = self
            .isr
            .iter()
            .filter(|&&r| r != self.me)
            .filter(|r| {
                self.followers
                    .get(r)
                    .is_none_or(|p| now.duration_since(p.caught_up_at) > max_lag)
            })
            .copied()
            .collect();
        if !lagging.is_empty() {
            return Some(IsrProposal::Shrink(lagging));
        }
        let joining: Vec<BrokerId> = self
            .followers
            .iter()
            .filter(|(r, p)| {
                !self.isr.contains(r)
                    && p.log_end_offset >= self.high_watermark
                    && p.log_end_offset >= self.epoch_start
                    // Still fetching: a replica that stopped (it died) would have the
                    // controller refuse the whole change.
                    && now.duration_since(p.last_fetch_at) <= max_lag
            })
            .map(|(r, _)| *r)
            .collect();
        (!joining.is_empty()).then_some(IsrProposal::Expand(joining))
    }

    /// The ISR a proposal asks for.
    pub fn proposed_isr(&self, proposal: &IsrProposal) -> Vec<BrokerId> {
        match proposal {
            IsrProposal::Shrink(out) => self
                .isr
                .iter()
                .copied()
                .filter(|r| !out.contains(r))
                .collect(),
            IsrProposal::Expand(joining) => self
                .replicas
                .iter()
                .copied()
                .filter(|r| self.isr.contains(r) || joining.contains(r))
                .collect(),
        }
    }

    /// Each follower's log end offset as last reported (-1 before its first fetch).
    pub fn follower_ends(&self) -> impl Iterator<Item = (BrokerId, i64)> + '_ {
        self.followers.iter().map(|(r, p)| (*r, p.log_end_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_secs(10);

    fn view(now: Instant) -> LeaderView {
        let leadership = Leadership {
            me: 1,
            leader_epoch: 3,
            partition_epoch: 7,
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
        };
        LeaderView::new(leadership, 0, 0, now)
    }

    #[test]
    fn high_watermark_is_the_least_end_over_the_isr() {
        let now = Instant::now();
        let mut v = view(now);
        assert_eq!(v.on_append(10), 0, "followers have not fetched yet");
        assert_eq!(v.on_fetch(2, 10, 10, now), 0, "follower 3 has nothing");
        assert_eq!(v.on_fetch(3, 6, 10, now), 6);
        assert_eq!(v.on_fetch(3, 10, 10, now), 10);
        // It never goes back, even when the ISR is set to members that know less.
        v.set_isr(vec![1, 2], 8, 10);
        assert_eq!(v.high_watermark(), 10);
        // With the leader alone in the ISR, it follows the leader's end.
        v.set_isr(vec![1], 9, 12);
        assert_eq!(v.high_watermark(), 12);
        assert_eq!(v.on_append(15), 15);
    }

    #[test]
    fn a_replica_added_by_a_reassignment_joins_once_it_caught_up() {
        let now = Instant::now();
        let mut v = view(now);
        v.on_append(100);
        v.on_fetch(2, 100, 100, now);
        v.on_fetch(3, 100, 100, now);
        // Broker 4 fetches before the leader knows it is a replica: ignored.
        v.on_fetch(4, 100, 100, now);
        assert_eq!(v.proposal(LAG, now), None);
        v.set_replicas(vec![4, 1, 2, 3], now);
        v.on_fetch(4, 40, 100, now);
        assert_eq!(v.proposal(LAG, now), None, "not caught up yet");
        v.on_fetch(4, 100, 100, now);
        assert_eq!(v.proposal(LAG, now), Some(IsrProposal::Expand(vec![4])));
        // A replica dropped by the move is forgotten.
        v.set_replicas(vec![4, 1, 2], now);
        assert!(!v.followers.contains_key(&3));
    }

    #[test]
    fn a_follower_that_stops_fetching_is_proposed_out_and_back_in() {
        let start = Instant::now();
        let mut v = view(start);
        v.on_append(100);
        v.on_fetch(2, 100, 100, start);
        v.on_fetch(3, 100, 100, start);
        assert_eq!(v.proposal(LAG, start + Duration::from_secs(5)), None);
        // Follower 2 keeps up; follower 3 goes quiet.
        let later = start + Duration::from_secs(11);
        v.on_append(200);
        v.on_fetch(2, 200, 200, later);
        let proposal = v.proposal(LAG, later).expect("a shrink");
        assert_eq!(proposal, IsrProposal::Shrink(vec![3]));
        assert_eq!(v.proposed_isr(&proposal), vec![1, 2]);
        v.set_isr(vec![1, 2], 8, 200);
        assert_eq!(v.high_watermark(), 200);
        // It comes back behind, then reaches the high watermark.
        v.on_fetch(3, 150, 200, later);
        assert_eq!(v.proposal(LAG, later), None);
        v.on_fetch(3, 200, 200, later);
        let proposal = v.proposal(LAG, later).expect("an expansion");
        assert_eq!(proposal, IsrProposal::Expand(vec![3]));
        assert_eq!(v.proposed_isr(&proposal), vec![1, 2, 3]);
    }

    #[test]
    fn a_follower_fetching_steadily_behind_a_busy_leader_stays_in() {
        // Each fetch reaches what the leader had at the previous fetch: Kafka counts that as
        // caught up as of the previous fetch, so a busy leader does not shrink its ISR.
        let start = Instant::now();
        let mut v = view(start);
        let mut leader_end = 0;
        for second in 1..=30u64 {
            let now = start + Duration::from_secs(second);
            let previous = leader_end;
            leader_end += 1000;
            v.on_append(leader_end);
            v.on_fetch(2, previous, leader_end, now);
            v.on_fetch(3, previous, leader_end, now);
            assert_eq!(v.proposal(LAG, now), None, "second {second}");
        }
    }

    #[test]
    fn strangers_are_ignored() {
        let now = Instant::now();
        let mut v = view(now);
        v.on_append(5);
        assert_eq!(v.on_fetch(9, 5, 5, now), 0);
        assert_eq!(v.follower_ends().count(), 2);
    }
}

//! The leader's view of one follower's log, as etcd has it: probing for the match point, pipelining
//! once found, or sending a snapshot.

use std::collections::VecDeque;

use concord_core::event::FollowerProgress;
use concord_core::id::LogIndex;
use concord_core::time::Instant;

/// How the leader replicates to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplicationState {
    /// The match point is unknown: one append at a time, then wait for the answer (or a heartbeat).
    Probe,
    /// The match point is known: appends are pipelined within the in-flight window.
    Replicate,
    /// The follower needs entries the leader compacted: a snapshot is under way.
    Snapshot,
}

/// A snapshot transfer to one follower, one chunk in flight at a time.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotTransfer {
    /// Identifies the snapshot sent.
    pub(crate) last_index: LogIndex,
    /// Where the next chunk starts (the follower says where it wants to resume).
    pub(crate) offset: u64,
    /// When the last chunk went out (a lost chunk is resent a heartbeat interval later).
    pub(crate) sent_at: Instant,
}

/// Replication progress of one follower.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In `Probe`: an append is out and unanswered.
    pub(crate) probe_sent: bool,
    /// In `Replicate`: last index and bytes of each append in flight, oldest first.
    inflight: VecDeque<(LogIndex, u64)>,
    inflight_bytes: u64,
    pub(crate) snapshot: Option<SnapshotTransfer>,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Highest heartbeat round the follower acknowledged.
    pub(crate) acked_round: u64,
    /// The commit index the last append to this follower carried.
    pub(crate) commit_sent: LogIndex,
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Progress {
            match_index: LogIndex::ZERO,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            snapshot: None,
            recent_active: true,
            acked_round: 0,
            commit_sent: LogIndex::ZERO,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.clear_inflight();
        self.snapshot = None;
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ReplicationState::Replicate;
        self.next_index = self.match_index.next();
        self.probe_sent = false;
        self.clear_inflight();
        self.snapshot = None;
    }

    pub(crate) fn become_snapshot(&mut self, last_index: LogIndex, now: Instant) {
        self.state = ReplicationState::Snapshot;
        self.probe_sent = false;
        self.clear_inflight();
        self.snapshot = Some(SnapshotTransfer { last_index, offset: 0, sent_at: now });
    }

    fn clear_inflight(&mut self) {
        self.inflight.clear();
        self.inflight_bytes = 0;
    }

    /// Records an acknowledged match. Returns whether it moved forward.
    pub(crate) fn update_match(&mut self, index: LogIndex) -> bool {
        self.probe_sent = false;
        if index <= self.match_index {
            return false;
        }
        self.match_index = index;
        self.next_index = self.next_index.max(index.next());
        while self.inflight.front().is_some_and(|(last, _)| *last <= index) {
            if let Some((_, bytes)) = self.inflight.pop_front() {
                self.inflight_bytes -= bytes;
            }
        }
        true
    }

    /// Whether no append may go out now.
    pub(crate) fn is_paused(&self, inflight_messages_max: usize, inflight_bytes_max: u64) -> bool {
        match self.state {
            ReplicationState::Probe => self.probe_sent,
            ReplicationState::Replicate => {
                self.inflight.len() >= inflight_messages_max || self.inflight_bytes >= inflight_bytes_max
            }
            ReplicationState::Snapshot => true,
        }
    }

    /// Bytes that may still go out in `Replicate` before the window is full.
    pub(crate) fn inflight_bytes_left(&self, inflight_bytes_max: u64) -> u64 {
        inflight_bytes_max.saturating_sub(self.inflight_bytes)
    }

    /// Records an append carrying entries up to `last_index` (`bytes` of them).
    pub(crate) fn sent_entries(&mut self, last_index: LogIndex, bytes: u64) {
        match self.state {
            ReplicationState::Replicate => {
                self.next_index = last_index.next();
                self.inflight.push_back((last_index, bytes));
                self.inflight_bytes += bytes;
            }
            ReplicationState::Probe => self.probe_sent = true,
            ReplicationState::Snapshot => {}
        }
    }

    #[cfg(test)]
    pub(crate) fn inflight_messages(&self) -> usize {
        self.inflight.len()
    }

    pub(crate) fn debug(&self) -> FollowerProgress {
        FollowerProgress {
            match_index: self.match_index,
            next_index: self.next_index,
            state: match self.state {
                ReplicationState::Probe => "probe",
                ReplicationState::Replicate => "replicate",
                ReplicationState::Snapshot => "snapshot",
            }
            .to_owned(),
            inflight_messages: self.inflight.len() + usize::from(self.probe_sent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_window_fills_and_drains() {
        let mut progress = Progress::new(LogIndex(1));
        progress.update_match(LogIndex(0));
        progress.become_replicate();
        for last in 1..=3 {
            assert!(!progress.is_paused(3, 1000));
            progress.sent_entries(LogIndex(last), 10);
        }
        assert!(progress.is_paused(3, 1000));
        assert_eq!(progress.next_index, LogIndex(4));
        assert!(progress.update_match(LogIndex(2)));
        assert_eq!(progress.inflight_messages(), 1);
        assert!(!progress.is_paused(3, 1000));
        assert!(!progress.update_match(LogIndex(1)), "an old ack does not move match back");
    }

    #[test]
    fn byte_window_pauses() {
        let mut progress = Progress::new(LogIndex(1));
        progress.become_replicate();
        progress.sent_entries(LogIndex(1), 600);
        assert!(!progress.is_paused(10, 1000));
        progress.sent_entries(LogIndex(2), 600);
        assert!(progress.is_paused(10, 1000));
    }

    #[test]
    fn probe_sends_one_at_a_time() {
        let mut progress = Progress::new(LogIndex(5));
        assert!(!progress.is_paused(10, 1000));
        progress.sent_entries(LogIndex(5), 10);
        assert!(progress.is_paused(10, 1000));
        assert_eq!(progress.next_index, LogIndex(5), "probing does not move next optimistically");
    }
}

//! The in-memory log: the entries after the last snapshot, and the snapshot's index and term.
//!
//! Storage is write-only from the mechanism's point of view, so this is the node's only readable
//! copy of the log. Every change here is mirrored into a pending [`Persist`](concord_core::storage::Persist)
//! by the caller.

use std::collections::VecDeque;

use concord_core::id::{LogIndex, Term};
use concord_core::message::Entry;

/// Entries after the snapshot, contiguous, `entries[0].index == snapshot_index + 1`.
#[derive(Debug, Default)]
pub(crate) struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<Entry>,
}

impl RaftLog {
    /// A log that starts right after a snapshot (or at the beginning: index 0, term 0).
    pub(crate) fn new(snapshot_index: LogIndex, snapshot_term: Term) -> Self {
        RaftLog { snapshot_index, snapshot_term, entries: VecDeque::new() }
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot_index.next()
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.back().map_or(self.snapshot_index, |entry| entry.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot_term, |entry| entry.term)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The term at `index`: known for the snapshot's index and every entry after it.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|entry| entry.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        let offset = usize::try_from(index.0 - self.snapshot_index.0 - 1).ok()?;
        self.entries.get(offset)
    }

    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Entries from `from` on, at most `count_max` of them and, beyond the first, at most
    /// `bytes_max` bytes in total (one entry always goes, or the log could never move forward),
    /// with their total size (`Entry::size_bytes`, which the caller would otherwise add up again).
    pub(crate) fn slice(&self, from: LogIndex, count_max: usize, bytes_max: usize) -> (Vec<Entry>, usize) {
        // Reserved up front (this runs for every append), bounded by what the byte budget can hold:
        // an entry is at least `ENTRY_BYTES_MIN` bytes.
        const ENTRY_BYTES_MIN: usize = 24;
        let available = self.last_index().0.saturating_sub(from.0.saturating_sub(1));
        let capacity = count_max
            .min(usize::try_from(available).unwrap_or(usize::MAX))
            .min(bytes_max / ENTRY_BYTES_MIN + 1);
        let mut slice = Vec::with_capacity(capacity);
        let mut bytes = 0usize;
        let mut index = from;
        while slice.len() < count_max {
            let Some(entry) = self.entry(index) else { break };
            let size = entry.size_bytes();
            if !slice.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            slice.push(entry.clone());
            index = index.next();
        }
        (slice, bytes)
    }

    /// Appends one entry right after the last.
    pub(crate) fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next(), "log entries are contiguous");
        assert!(entry.term >= self.last_term(), "terms never decrease along the log");
        self.entries.push_back(entry);
    }

    /// Appends entries the caller has checked to continue the log (contiguous, terms not
    /// decreasing); into an empty log the vector is taken over without copying.
    pub(crate) fn extend_checked(&mut self, entries: Vec<Entry>) {
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            assert_eq!(first.index, self.last_index().next(), "log entries are contiguous");
            assert!(first.term >= self.last_term(), "terms never decrease along the log");
            assert_eq!(last.index.0 - first.index.0 + 1, entries.len() as u64, "log entries are contiguous");
        }
        if self.entries.is_empty() {
            self.entries = VecDeque::from(entries);
        } else {
            self.entries.extend(entries);
        }
    }

    /// Drops `from` and everything after it.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(from > self.snapshot_index, "a snapshot's entries are committed and never truncated");
        let keep = usize::try_from(from.0 - self.snapshot_index.0 - 1).unwrap_or(usize::MAX);
        self.entries.truncate(keep);
    }

    /// Drops the entries up to `index` (a snapshot now covers them).
    pub(crate) fn compact_to(&mut self, index: LogIndex, term: Term) {
        assert!(index > self.snapshot_index, "compaction moves forward");
        assert_eq!(self.term_at(index), Some(term), "compaction point must be in the log");
        while self.entries.front().is_some_and(|entry| entry.index <= index) {
            self.entries.pop_front();
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the log by a snapshot's position, keeping the entries after it if they continue it
    /// (same term at the snapshot's index, so by the log matching property the prefix is equal).
    /// Returns whether the suffix was kept.
    pub(crate) fn restore_to(&mut self, index: LogIndex, term: Term) -> bool {
        let continues = index > self.snapshot_index && self.term_at(index) == Some(term);
        if continues {
            self.compact_to(index, term);
        } else {
            self.entries.clear();
            self.snapshot_index = index;
            self.snapshot_term = term;
        }
        continues
    }

    /// The first index of the log holding `term`, scanning back from `from` (the fast back-tracking
    /// hint of §5.3). Stops at the log's first index.
    pub(crate) fn first_index_of_term(&self, from: LogIndex, term: Term) -> LogIndex {
        let mut index = from;
        while index > self.first_index() && self.term_at(index.prev()) == Some(term) {
            index = index.prev();
        }
        index
    }

    /// The last index holding a term at most `term`, at or before `from`, for the leader's side of
    /// fast back-tracking.
    pub(crate) fn last_index_with_term_at_most(&self, from: LogIndex, term: Term) -> LogIndex {
        let mut index = from.min(self.last_index());
        while index > self.snapshot_index {
            match self.term_at(index) {
                Some(found) if found <= term => return index,
                _ => index = index.prev(),
            }
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use concord_core::message::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index: LogIndex(index), term: Term(term), timestamp_ms: 0, payload: EntryPayload::Noop }
    }

    fn log_of(terms: &[u64]) -> RaftLog {
        let mut log = RaftLog::new(LogIndex::ZERO, Term(0));
        for (position, term) in terms.iter().enumerate() {
            log.push(entry(position as u64 + 1, *term));
        }
        log
    }

    #[test]
    fn terms_and_indexes() {
        let log = log_of(&[1, 1, 2, 3]);
        assert_eq!(log.last_index(), LogIndex(4));
        assert_eq!(log.last_term(), Term(3));
        assert_eq!(log.term_at(LogIndex(0)), Some(Term(0)));
        assert_eq!(log.term_at(LogIndex(3)), Some(Term(2)));
        assert_eq!(log.term_at(LogIndex(5)), None);
    }

    #[test]
    fn compaction_keeps_terms_of_the_snapshot_point() {
        let mut log = log_of(&[1, 1, 2, 3]);
        log.compact_to(LogIndex(2), Term(1));
        assert_eq!(log.first_index(), LogIndex(3));
        assert_eq!(log.term_at(LogIndex(2)), Some(Term(1)));
        assert_eq!(log.term_at(LogIndex(1)), None);
        assert_eq!(log.len(), 2);
        assert_eq!(log.slice(LogIndex(3), 10, 1 << 20).0.len(), 2);
    }

    #[test]
    fn restore_keeps_a_continuing_suffix_only() {
        let mut log = log_of(&[1, 1, 2, 3]);
        assert!(log.restore_to(LogIndex(3), Term(2)));
        assert_eq!(log.last_index(), LogIndex(4));
        let mut log = log_of(&[1, 1, 2, 3]);
        assert!(!log.restore_to(LogIndex(3), Term(5)));
        assert_eq!(log.last_index(), LogIndex(3));
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn back_tracking_hints() {
        let log = log_of(&[1, 1, 2, 2, 2, 4]);
        assert_eq!(log.first_index_of_term(LogIndex(5), Term(2)), LogIndex(3));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(6), Term(3)), LogIndex(5));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(6), Term(1)), LogIndex(2));
        assert_eq!(log.last_index_with_term_at_most(LogIndex(6), Term(0)), LogIndex(0));
    }

    #[test]
    fn slice_respects_count_and_bytes_but_sends_one() {
        let log = log_of(&[1, 1, 1, 1]);
        assert_eq!(log.slice(LogIndex(1), 2, 1 << 20).0.len(), 2);
        let (one, one_bytes) = log.slice(LogIndex(1), 10, 1);
        assert_eq!(one.len(), 1);
        assert_eq!(one_bytes, one[0].size_bytes());
        assert_eq!(log.slice(LogIndex(5), 10, 1 << 20), (Vec::new(), 0));
    }
}

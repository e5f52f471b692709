//! The queue of proposal deadlines: which pending proposal times out first.
//!
//! Every proposal goes in once and comes out once, so this runs per write. Deadlines are `now` plus
//! one fixed timeout, and `now` only grows, so they arrive in order: a queue in arrival order
//! replaces an ordered map (no tree search to insert, a binary search to remove). Removal leaves a
//! hole that is dropped when it reaches the front, and the queue is compacted when holes
//! outnumber live deadlines, so its length stays within twice the pending proposals (plus a
//! constant) even when one stuck proposal holds the front.

use std::collections::VecDeque;

use concord_core::id::ProposalId;
use concord_core::time::Instant;

/// A deadline and its registration number, unique per node (ties between equal instants).
pub(crate) type DeadlineKey = (Instant, u64);

/// Holes tolerated before a compaction regardless of the live count, so a small queue is not
/// compacted on every removal.
const HOLES_TOLERATED_MIN: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct DeadlineQueue {
    /// Ordered by key; `None` is a removed deadline.
    slots: VecDeque<(DeadlineKey, Option<ProposalId>)>,
    /// Slots that are not holes.
    live: usize,
    /// The largest key pushed so far: a later deadline is never ordered before it.
    last: Option<DeadlineKey>,
}

impl DeadlineQueue {
    /// Adds `id` with deadline `at`, registration `number` (strictly increasing per call). Returns
    /// its key. A deadline earlier than one already queued (a clock that stepped back) is moved up
    /// to it: the proposal then times out a little later, never out of order.
    pub(crate) fn push(&mut self, at: Instant, number: u64, id: ProposalId) -> DeadlineKey {
        let at = self.last.map_or(at, |(last_at, _)| at.max(last_at));
        let key = (at, number);
        assert!(self.last.map_or(true, |last| key > last), "registration numbers increase");
        self.last = Some(key);
        self.slots.push_back((key, Some(id)));
        self.live += 1;
        key
    }

    /// Removes the deadline with `key`, if still queued.
    pub(crate) fn remove(&mut self, key: &DeadlineKey) {
        // Proposals mostly finish in the order they were made: the front is the usual case.
        if self.slots.front().is_some_and(|(front, _)| front == key) {
            self.slots.pop_front();
            self.live -= 1;
            self.drop_front_holes();
            return;
        }
        let Ok(position) = self.slots.binary_search_by(|(slot_key, _)| slot_key.cmp(key)) else { return };
        if self.slots[position].1.take().is_some() {
            self.live -= 1;
        }
        self.drop_front_holes();
        if self.slots.len() - self.live > self.live.max(HOLES_TOLERATED_MIN) {
            self.slots.retain(|(_, id)| id.is_some());
        }
    }

    /// The earliest queued deadline.
    pub(crate) fn first(&self) -> Option<Instant> {
        self.slots.front().map(|((at, _), _)| *at)
    }

    /// Removes and returns the earliest proposal whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<ProposalId> {
        let ((at, _), _) = self.slots.front()?;
        if *at > now {
            return None;
        }
        let (_, id) = self.slots.pop_front()?;
        self.live -= 1;
        self.drop_front_holes();
        id
    }

    /// Queued deadlines (holes not counted).
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn drop_front_holes(&mut self) {
        while self.slots.front().is_some_and(|(_, id)| id.is_none()) {
            self.slots.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use concord_core::id::NodeId;

    use super::*;

    fn id(sequence: u64) -> ProposalId {
        ProposalId { origin: NodeId::new("n1"), sequence }
    }

    fn at(milliseconds: u64) -> Instant {
        Instant::ZERO + Duration::from_millis(milliseconds)
    }

    #[test]
    fn due_deadlines_come_out_in_order_and_removed_ones_never() {
        let mut queue = DeadlineQueue::default();
        let first = queue.push(at(10), 1, id(1));
        queue.push(at(20), 2, id(2));
        let third = queue.push(at(20), 3, id(3));
        queue.push(at(30), 4, id(4));
        queue.remove(&third);
        queue.remove(&third);
        assert_eq!(queue.len(), 3);
        assert_eq!(queue.first(), Some(at(10)));
        assert_eq!(queue.pop_due(at(5)), None);
        assert_eq!(queue.pop_due(at(25)), Some(id(1)));
        assert_eq!(queue.pop_due(at(25)), Some(id(2)));
        assert_eq!(queue.pop_due(at(25)), None, "3 was removed, 4 is not due");
        assert_eq!(queue.first(), Some(at(30)));
        queue.remove(&first);
        assert_eq!(queue.pop_due(at(30)), Some(id(4)));
        assert_eq!(queue.first(), None);
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn a_deadline_before_a_queued_one_waits_for_it() {
        let mut queue = DeadlineQueue::default();
        queue.push(at(50), 1, id(1));
        let key = queue.push(at(40), 2, id(2));
        assert_eq!(key, (at(50), 2));
        assert_eq!(queue.pop_due(at(45)), None);
        assert_eq!(queue.pop_due(at(50)), Some(id(1)));
        assert_eq!(queue.pop_due(at(50)), Some(id(2)));
    }

    #[test]
    fn holes_behind_a_stuck_front_are_compacted() {
        let mut queue = DeadlineQueue::default();
        queue.push(at(1), 0, id(0));
        for number in 1..10_000 {
            let key = queue.push(at(1 + number), number, id(number));
            queue.remove(&key);
        }
        assert_eq!(queue.len(), 1);
        assert!(queue.slots.len() <= 2 + HOLES_TOLERATED_MIN, "{} slots", queue.slots.len());
        assert_eq!(queue.pop_due(at(20_000)), Some(id(0)));
        assert_eq!(queue.pop_due(at(20_000)), None);
    }
}

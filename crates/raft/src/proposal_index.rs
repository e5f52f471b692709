//! Values kept per proposal id: where each proposal of the in-memory log sits, and which
//! compacted proposals were seen.
//!
//! Every appended entry goes in, on every node, so this runs per write and holds the whole
//! in-memory log. A hash map over all ids spends most of its time on cache misses once it is large
//! (each insert lands on a random cache line, and growing moves every slot), and a B-tree spends
//! hundreds of instructions per insert searching from its root.
//!
//! Ids are an origin and a sequence number that origin hands out in increasing order, and the log
//! takes them nearly in that order. So each origin keeps a queue of (sequence, value) strictly
//! increasing by sequence: an insert above the newest is a push at the back, compaction removes
//! from the front and truncation from the back, all in O(1) on hot cache lines. An id that arrives
//! a little late (proposals in flight together reach the log in a slightly different order) is
//! shifted into place, moving at most [`SHIFTED_MAX`] newer slots. The rare ids far below the
//! newest (an origin that restarted and counts from 1 again) go to an ordered map beside the queue.
//! Removals inside the queue leave a hole, dropped when it reaches either end.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use concord_core::id::{LogIndex, NodeId, ProposalId};

/// Where each proposal of the in-memory log sits.
pub(crate) type ProposalIndex = ProposalMap<LogIndex>;

/// At most this many newer slots move to make room for a late id; an id later than that goes to
/// the ordered map instead. Late ids are usually a few places behind (as many as the proposals in
/// flight at once), and moving 32 slots is one short copy. Before this bound, every late id went
/// to the map, which a log replayed at start filled with hundreds of thousands of ids, each insert
/// and removal a search from its root.
const SHIFTED_MAX: usize = 32;

#[derive(Debug)]
pub(crate) struct ProposalMap<V> {
    by_origin: BTreeMap<NodeId, Sequences<V>>,
}

impl<V> Default for ProposalMap<V> {
    fn default() -> Self {
        ProposalMap { by_origin: BTreeMap::new() }
    }
}

#[derive(Debug)]
struct Sequences<V> {
    /// Strictly increasing by sequence. A slot whose sequence is in `holes` was removed; never at
    /// either end.
    in_order: VecDeque<(u64, V)>,
    /// The removed slots inside `in_order`. Kept apart instead of as an `Option` in every slot:
    /// removals come almost always at the ends (compaction at the front, truncation at the back),
    /// and the queue holds one slot per entry of the log, 16 bytes instead of 24 with the index.
    holes: BTreeSet<u64>,
    /// Sequences that came below the newest of `in_order` and are not in it.
    out_of_order: BTreeMap<u64, V>,
}

impl<V> Default for Sequences<V> {
    fn default() -> Self {
        Sequences { in_order: VecDeque::new(), holes: BTreeSet::new(), out_of_order: BTreeMap::new() }
    }
}

impl<V: Copy> Sequences<V> {
    fn find(&self, sequence: u64) -> Result<usize, usize> {
        // Most look-ups are for recent proposals: check the back, then the last few slots (where
        // late ids land), before searching everything. Compaction forgets ids from the oldest on,
        // so it finds each at the front: checked next.
        let length = self.in_order.len();
        match self.in_order.back() {
            None => return Err(0),
            Some((last, _)) if *last < sequence => return Err(length),
            Some((last, _)) if *last == sequence => return Ok(length - 1),
            Some(_) => {}
        }
        match self.in_order.front() {
            Some((first, _)) if *first == sequence => return Ok(0),
            Some((first, _)) if *first > sequence => return Err(0),
            _ => {}
        }
        let tail_start = length.saturating_sub(SHIFTED_MAX + 1);
        let (mut low, mut high) =
            if self.in_order[tail_start].0 <= sequence { (tail_start, length) } else { (0, tail_start) };
        while low < high {
            let middle = low + (high - low) / 2;
            match self.in_order[middle].0.cmp(&sequence) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Equal => return Ok(middle),
                std::cmp::Ordering::Greater => high = middle,
            }
        }
        Err(low)
    }

    fn insert(&mut self, sequence: u64, value: V) {
        // The common case first: newer than every id here.
        if self.in_order.back().map_or(true, |(last, _)| *last < sequence) {
            if !self.out_of_order.is_empty() {
                self.remove_out_of_order(sequence);
            }
            self.in_order.push_back((sequence, value));
            return;
        }
        match self.find(sequence) {
            Ok(position) => {
                self.in_order[position].1 = value;
                if !self.holes.is_empty() {
                    self.holes.remove(&sequence);
                }
            }
            Err(position) if self.in_order.len() - position <= SHIFTED_MAX => {
                // The id may have been kept beside the queue before (it was far from the newest
                // then); it lives in one place only.
                self.remove_out_of_order(sequence);
                if position == self.in_order.len() {
                    self.in_order.push_back((sequence, value));
                } else {
                    self.in_order.insert(position, (sequence, value));
                }
            }
            Err(_) => {
                self.out_of_order.insert(sequence, value);
            }
        }
    }

    /// Removes `sequence` from beside the queue, without searching when it cannot be there (the
    /// common case: nothing there, or only ids of an earlier life of the origin, all lower).
    fn remove_out_of_order(&mut self, sequence: u64) {
        if self.out_of_order.last_key_value().is_some_and(|(highest, _)| *highest >= sequence) {
            self.out_of_order.remove(&sequence);
        }
    }

    fn remove(&mut self, sequence: u64) {
        if let Ok(position) = self.find(sequence) {
            if position == 0 {
                self.in_order.pop_front();
                while let Some((first, _)) = self.in_order.front() {
                    if !self.holes.remove(first) {
                        break;
                    }
                    self.in_order.pop_front();
                }
            } else if position + 1 == self.in_order.len() {
                self.in_order.pop_back();
                while let Some((last, _)) = self.in_order.back() {
                    if !self.holes.remove(last) {
                        break;
                    }
                    self.in_order.pop_back();
                }
            } else {
                self.holes.insert(sequence);
            }
        }
        self.remove_out_of_order(sequence);
    }

    fn get(&self, sequence: u64) -> Option<V> {
        match self.find(sequence) {
            Ok(_) if self.holes.contains(&sequence) => None,
            Ok(position) => Some(self.in_order[position].1),
            // An id is in one place only: a removed slot is filled again by its own id.
            Err(_) => self.out_of_order.get(&sequence).copied(),
        }
    }

    fn is_empty(&self) -> bool {
        self.in_order.is_empty() && self.out_of_order.is_empty()
    }
}

impl<V: Copy> ProposalMap<V> {
    /// Records `value` for proposal `id` (replacing an older value of the same id).
    pub(crate) fn insert(&mut self, id: &ProposalId, value: V) {
        let sequences = match self.by_origin.get_mut(&id.origin) {
            Some(sequences) => sequences,
            None => self.by_origin.entry(id.origin.clone()).or_default(),
        };
        sequences.insert(id.sequence, value);
    }

    pub(crate) fn remove(&mut self, id: &ProposalId) {
        let Some(sequences) = self.by_origin.get_mut(&id.origin) else { return };
        sequences.remove(id.sequence);
        if sequences.is_empty() {
            self.by_origin.remove(&id.origin);
        }
    }

    pub(crate) fn get(&self, id: &ProposalId) -> Option<V> {
        self.by_origin.get(&id.origin)?.get(id.sequence)
    }

    pub(crate) fn clear(&mut self) {
        self.by_origin.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn id(origin: &str, sequence: u64) -> ProposalId {
        ProposalId { origin: NodeId::new(origin), sequence }
    }

    #[test]
    fn ids_of_several_origins_are_found_replaced_and_removed() {
        let mut index = ProposalIndex::default();
        index.insert(&id("n1", 1), LogIndex(5));
        index.insert(&id("n2", 1), LogIndex(6));
        index.insert(&id("n1", 2), LogIndex(7));
        assert_eq!(index.get(&id("n1", 1)), Some(LogIndex(5)));
        assert_eq!(index.get(&id("n2", 1)), Some(LogIndex(6)));
        assert_eq!(index.get(&id("n2", 2)), None);
        assert_eq!(index.get(&id("n3", 1)), None);
        index.insert(&id("n1", 1), LogIndex(9));
        assert_eq!(index.get(&id("n1", 1)), Some(LogIndex(9)), "the same id again replaces its position");
        index.remove(&id("n2", 1));
        index.remove(&id("n2", 1));
        assert_eq!(index.get(&id("n2", 1)), None);
        assert!(!index.by_origin.contains_key(&NodeId::new("n2")), "an emptied origin is dropped");
        index.clear();
        assert_eq!(index.get(&id("n1", 2)), None);
    }

    #[test]
    fn late_ids_are_shifted_into_place_and_restarted_sequences_are_kept_beside_the_queue() {
        let mut index = ProposalIndex::default();
        for (sequence, position) in [(10, 1), (12, 2), (11, 3), (13, 4)] {
            index.insert(&id("n1", sequence), LogIndex(position));
        }
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.in_order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [10, 11, 12, 13]);
        assert!(sequences.out_of_order.is_empty(), "a late id near the newest moves into the queue");
        // More than SHIFTED_MAX newer ids: a restarted origin's 1 and 2 go beside the queue.
        for sequence in 14..14 + SHIFTED_MAX as u64 {
            index.insert(&id("n1", sequence), LogIndex(sequence));
        }
        index.insert(&id("n1", 1), LogIndex(5));
        index.insert(&id("n1", 2), LogIndex(6));
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.out_of_order.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(sequences.in_order.len(), 4 + SHIFTED_MAX);
        for (sequence, position) in [(10, 1), (12, 2), (11, 3), (13, 4), (1, 5), (2, 6), (20, 20)] {
            assert_eq!(index.get(&id("n1", sequence)), Some(LogIndex(position)), "sequence {sequence}");
        }
        // A hole inside the queue, then the ends: holes never stay at an end.
        index.remove(&id("n1", 12));
        assert_eq!(index.get(&id("n1", 12)), None);
        for sequence in 13..14 + SHIFTED_MAX as u64 {
            index.remove(&id("n1", sequence));
        }
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.in_order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [10, 11]);
        // Near the newest again, 2 moves from beside the queue into it: one place only.
        index.insert(&id("n1", 2), LogIndex(7));
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.in_order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [2, 10, 11]);
        assert_eq!(sequences.out_of_order.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(index.get(&id("n1", 2)), Some(LogIndex(7)));
        index.remove(&id("n1", 2));
        assert_eq!(index.get(&id("n1", 2)), None);
        assert_eq!(index.get(&id("n1", 1)), Some(LogIndex(5)));
    }

    /// Sequences drawn by the model test: wider than `SHIFTED_MAX`, so that late ids take both
    /// paths.
    const SEQUENCES: u64 = 3 * SHIFTED_MAX as u64;

    #[derive(Clone, Debug)]
    enum Operation {
        Insert(u8, u64, u64),
        Remove(u8, u64),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            3 => (0..3u8, 0..SEQUENCES, 1..1_000u64).prop_map(|(o, s, i)| Operation::Insert(o, s, i)),
            1 => (0..3u8, 0..SEQUENCES).prop_map(|(o, s)| Operation::Remove(o, s)),
        ]
    }

    proptest! {
        /// Any sequence of inserts and removals (in order, out of order, repeated, of absent ids)
        /// leaves the index answering exactly like a plain map.
        #[test]
        fn agrees_with_a_map(operations in proptest::collection::vec(operation(), 0..200)) {
            let origins = ["n1", "n2", "n3"];
            let mut index = ProposalIndex::default();
            let mut model: HashMap<(u8, u64), u64> = HashMap::new();
            for operation in operations {
                match operation {
                    Operation::Insert(origin, sequence, position) => {
                        index.insert(&id(origins[origin as usize], sequence), LogIndex(position));
                        model.insert((origin, sequence), position);
                    }
                    Operation::Remove(origin, sequence) => {
                        index.remove(&id(origins[origin as usize], sequence));
                        model.remove(&(origin, sequence));
                    }
                }
                for origin in 0..3u8 {
                    for sequence in 0..SEQUENCES {
                        let expected = model.get(&(origin, sequence)).copied().map(LogIndex);
                        prop_assert_eq!(index.get(&id(origins[origin as usize], sequence)), expected);
                    }
                }
            }
            for sequences in index.by_origin.values() {
                prop_assert!(sequences.in_order.front().map_or(true, |(first, _)| !sequences.holes.contains(first)));
                prop_assert!(sequences.in_order.back().map_or(true, |(last, _)| !sequences.holes.contains(last)));
                prop_assert!(sequences.holes.iter().all(|hole| sequences.in_order.iter().any(|(s, _)| s == hole)));
                prop_assert!(sequences.in_order.iter().zip(sequences.in_order.iter().skip(1)).all(|(a, b)| a.0 < b.0));
            }
        }
    }
}

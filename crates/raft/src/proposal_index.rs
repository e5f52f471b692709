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
//! from the front and truncation from the back, all in O(1) on hot cache lines. The few ids that
//! arrive out of order (proposals in flight together, an origin that restarted and counts from 1
//! again) go to a small ordered map beside it. Removals inside the queue leave a hole, dropped when
//! it reaches either end, so nothing is ever shifted.

use std::collections::{BTreeMap, VecDeque};

use concord_core::id::{LogIndex, NodeId, ProposalId};

/// Where each proposal of the in-memory log sits.
pub(crate) type ProposalIndex = ProposalMap<LogIndex>;

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
    /// Strictly increasing by sequence; `None` is a removed slot, never at either end.
    in_order: VecDeque<(u64, Option<V>)>,
    /// Sequences that came below the newest of `in_order` and are not in it.
    out_of_order: BTreeMap<u64, V>,
}

impl<V> Default for Sequences<V> {
    fn default() -> Self {
        Sequences { in_order: VecDeque::new(), out_of_order: BTreeMap::new() }
    }
}

impl<V: Copy> Sequences<V> {
    fn find(&self, sequence: u64) -> Result<usize, usize> {
        // Most look-ups are for recent proposals: check the back before searching.
        match self.in_order.back() {
            Some((last, _)) if *last < sequence => Err(self.in_order.len()),
            Some((last, _)) if *last == sequence => Ok(self.in_order.len() - 1),
            _ => self.in_order.binary_search_by_key(&sequence, |(stored, _)| *stored),
        }
    }

    fn insert(&mut self, sequence: u64, value: V) {
        match self.find(sequence) {
            Ok(position) => self.in_order[position].1 = Some(value),
            Err(position) if position == self.in_order.len() => {
                if !self.out_of_order.is_empty() {
                    self.out_of_order.remove(&sequence);
                }
                self.in_order.push_back((sequence, Some(value)));
            }
            Err(_) => {
                self.out_of_order.insert(sequence, value);
            }
        }
    }

    fn remove(&mut self, sequence: u64) {
        if let Ok(position) = self.find(sequence) {
            self.in_order[position].1 = None;
            while self.in_order.front().is_some_and(|(_, value)| value.is_none()) {
                self.in_order.pop_front();
            }
            while self.in_order.back().is_some_and(|(_, value)| value.is_none()) {
                self.in_order.pop_back();
            }
        }
        if !self.out_of_order.is_empty() {
            self.out_of_order.remove(&sequence);
        }
    }

    fn get(&self, sequence: u64) -> Option<V> {
        match self.find(sequence) {
            Ok(position) => self.in_order[position].1,
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
    fn out_of_order_and_restarted_sequences_are_kept_beside_the_queue() {
        let mut index = ProposalIndex::default();
        for (sequence, position) in [(10, 1), (12, 2), (11, 3), (13, 4), (1, 5), (2, 6)] {
            index.insert(&id("n1", sequence), LogIndex(position));
        }
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.in_order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [10, 12, 13]);
        assert_eq!(sequences.out_of_order.keys().copied().collect::<Vec<_>>(), [1, 2, 11]);
        for (sequence, position) in [(10, 1), (12, 2), (11, 3), (13, 4), (1, 5), (2, 6)] {
            assert_eq!(index.get(&id("n1", sequence)), Some(LogIndex(position)), "sequence {sequence}");
        }
        // A hole inside the queue, then the ends: holes never stay at an end.
        index.remove(&id("n1", 12));
        assert_eq!(index.get(&id("n1", 12)), None);
        index.remove(&id("n1", 13));
        let sequences = &index.by_origin[&NodeId::new("n1")];
        assert_eq!(sequences.in_order.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [10]);
    }

    #[derive(Clone, Debug)]
    enum Operation {
        Insert(u8, u64, u64),
        Remove(u8, u64),
    }

    fn operation() -> impl Strategy<Value = Operation> {
        prop_oneof![
            3 => (0..3u8, 0..40u64, 1..1_000u64).prop_map(|(o, s, i)| Operation::Insert(o, s, i)),
            1 => (0..3u8, 0..40u64).prop_map(|(o, s)| Operation::Remove(o, s)),
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
                    for sequence in 0..40u64 {
                        let expected = model.get(&(origin, sequence)).copied().map(LogIndex);
                        prop_assert_eq!(index.get(&id(origins[origin as usize], sequence)), expected);
                    }
                }
            }
            for sequences in index.by_origin.values() {
                prop_assert!(sequences.in_order.front().map_or(true, |(_, value)| value.is_some()));
                prop_assert!(sequences.in_order.back().map_or(true, |(_, value)| value.is_some()));
                prop_assert!(sequences.in_order.iter().zip(sequences.in_order.iter().skip(1)).all(|(a, b)| a.0 < b.0));
            }
        }
    }
}

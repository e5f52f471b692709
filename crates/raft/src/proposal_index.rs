//! Where each proposal of the in-memory log sits, by proposal id.
//!
//! Every appended entry goes in, on every node, so this runs per write and holds the whole
//! in-memory log. A hash map over all ids spends most of its time on cache misses once it is large
//! (each insert lands on a random cache line, and growing moves every slot). Ids are an origin and
//! a sequence number that origin hands out in increasing order, so one ordered map of sequences
//! per origin takes inserts at its right edge and compaction removes from its left edge: both
//! touch the same few hot nodes.

use std::collections::BTreeMap;

use concord_core::id::{LogIndex, NodeId, ProposalId};

#[derive(Debug, Default)]
pub(crate) struct ProposalIndex {
    by_origin: BTreeMap<NodeId, BTreeMap<u64, LogIndex>>,
    len: usize,
}

impl ProposalIndex {
    /// Records that proposal `id` sits at `index` (replacing an older position of the same id).
    pub(crate) fn insert(&mut self, id: &ProposalId, index: LogIndex) {
        let sequences = match self.by_origin.get_mut(&id.origin) {
            Some(sequences) => sequences,
            None => self.by_origin.entry(id.origin.clone()).or_default(),
        };
        if sequences.insert(id.sequence, index).is_none() {
            self.len += 1;
        }
    }

    pub(crate) fn remove(&mut self, id: &ProposalId) {
        let Some(sequences) = self.by_origin.get_mut(&id.origin) else { return };
        if sequences.remove(&id.sequence).is_some() {
            self.len -= 1;
        }
        if sequences.is_empty() {
            self.by_origin.remove(&id.origin);
        }
    }

    pub(crate) fn get(&self, id: &ProposalId) -> Option<LogIndex> {
        self.by_origin.get(&id.origin)?.get(&id.sequence).copied()
    }

    pub(crate) fn clear(&mut self) {
        self.by_origin.clear();
        self.len = 0;
    }

    /// Ids indexed.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(index.len(), 3);
        assert_eq!(index.get(&id("n1", 1)), Some(LogIndex(5)));
        assert_eq!(index.get(&id("n2", 1)), Some(LogIndex(6)));
        assert_eq!(index.get(&id("n2", 2)), None);
        assert_eq!(index.get(&id("n3", 1)), None);
        index.insert(&id("n1", 1), LogIndex(9));
        assert_eq!(index.len(), 3, "the same id again replaces its position");
        assert_eq!(index.get(&id("n1", 1)), Some(LogIndex(9)));
        index.remove(&id("n2", 1));
        index.remove(&id("n2", 1));
        assert_eq!(index.len(), 2);
        assert_eq!(index.get(&id("n2", 1)), None);
        assert!(!index.by_origin.contains_key(&NodeId::new("n2")), "an emptied origin is dropped");
        index.clear();
        assert_eq!(index.len(), 0);
        assert_eq!(index.get(&id("n1", 2)), None);
    }
}

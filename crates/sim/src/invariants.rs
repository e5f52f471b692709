//! Invariants checked while a simulation runs, and the built-in ones for log-based mechanisms.
//!
//! An invariant sees every `Ready` batch before the driver acts on it, every persist once it is
//! durable, and the whole cluster after every step. Only the node [`SimView::touched`] names can
//! have changed in a step, so the built-ins look at that node alone and stay cheap enough to run
//! after every step of thousands of seeds.

use std::collections::BTreeMap;

use concord_core::event::Role;
use concord_core::id::{LogIndex, NodeId, Term};
use concord_core::mechanism::Ready;
use concord_core::message::Entry;
use concord_core::storage::Persist;

use crate::simulation::SimView;

/// A property that must hold throughout a run. Return `Err` with a readable description to stop
/// the run with a [`Violation`](crate::Violation).
pub trait Invariant {
    /// Called with each `Ready` a node hands out, before the driver carries it out.
    fn after_ready(&mut self, node: &NodeId, ready: &Ready, view: &SimView<'_>) -> Result<(), String> {
        let _ = (node, ready, view);
        Ok(())
    }

    /// Called once a persist of `node` is durable (its durable store already includes it).
    fn after_persist(&mut self, node: &NodeId, persist: &Persist, view: &SimView<'_>) -> Result<(), String> {
        let _ = (node, persist, view);
        Ok(())
    }

    /// Called after every step, crash and restart.
    fn after_step(&mut self, view: &SimView<'_>) -> Result<(), String> {
        let _ = view;
        Ok(())
    }
}

/// A node's term never goes down while it runs; its durable term never goes down at all; a
/// restarted node starts at least at its durable term.
#[derive(Debug, Default)]
pub struct TermsNeverDecrease {
    // Per node: (incarnation, last seen in-memory term), and the last seen durable term.
    seen: BTreeMap<NodeId, (u64, Term)>,
    durable: BTreeMap<NodeId, Term>,
}

impl Invariant for TermsNeverDecrease {
    fn after_persist(&mut self, node: &NodeId, _persist: &Persist, view: &SimView<'_>) -> Result<(), String> {
        let Some(durable) = view.durable(node) else { return Ok(()) };
        let term = durable.hard_state.term;
        let previous = self.durable.insert(node.clone(), term).unwrap_or_default();
        if term < previous {
            return Err(format!("{node}: durable term went down from {previous} to {term}"));
        }
        Ok(())
    }

    fn after_step(&mut self, view: &SimView<'_>) -> Result<(), String> {
        let Some((node, state)) = view.touched_state() else { return Ok(()) };
        let Some(incarnation) = view.incarnation(node) else { return Ok(()) };
        let term = state.current_term;
        if let Some((seen_incarnation, seen_term)) = self.seen.get(node) {
            if *seen_incarnation == incarnation && term < *seen_term {
                return Err(format!("{node}: term went down from {seen_term} to {term}"));
            }
        }
        if let Some(durable) = view.durable(node) {
            if term < durable.hard_state.term {
                return Err(format!(
                    "{node}: runs in term {term} below its durable term {}",
                    durable.hard_state.term
                ));
            }
        }
        self.seen.insert(node.clone(), (incarnation, term));
        Ok(())
    }
}

/// A node's commit index never goes down while it runs (it may restart lower: commit is volatile).
#[derive(Debug, Default)]
pub struct CommitNeverDecreases {
    seen: BTreeMap<NodeId, (u64, LogIndex)>,
}

impl Invariant for CommitNeverDecreases {
    fn after_step(&mut self, view: &SimView<'_>) -> Result<(), String> {
        let Some((node, state)) = view.touched_state() else { return Ok(()) };
        let Some(incarnation) = view.incarnation(node) else { return Ok(()) };
        let commit = state.commit_index;
        if let Some((seen_incarnation, seen_commit)) = self.seen.get(node) {
            if *seen_incarnation == incarnation && commit < *seen_commit {
                return Err(format!("{node}: commit index went down from {seen_commit} to {commit}"));
            }
        }
        if state.last_applied > commit {
            return Err(format!("{node}: applied {} beyond its commit index {commit}", state.last_applied));
        }
        self.seen.insert(node.clone(), (incarnation, commit));
        Ok(())
    }
}

/// At most one leader per term (Raft §5.2), judged from the nodes' debug states.
#[derive(Debug, Default)]
pub struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl Invariant for ElectionSafety {
    fn after_step(&mut self, view: &SimView<'_>) -> Result<(), String> {
        let Some((node, state)) = view.touched_state() else { return Ok(()) };
        if state.role != Role::Leader {
            return Ok(());
        }
        match self.leaders.get(&state.current_term) {
            Some(leader) if leader != node => {
                Err(format!("two leaders in term {}: {leader} and {node}", state.current_term))
            }
            Some(_) => Ok(()),
            None => {
                self.leaders.insert(state.current_term, node.clone());
                Ok(())
            }
        }
    }
}

/// For log-based mechanisms: an entry at an index at or below a node's commit index that is in
/// its durable log is the same on every node, and never changes afterwards (Raft's log matching
/// and state machine safety, §5.3–5.4).
#[derive(Debug, Default)]
pub struct CommittedPrefixAgreement {
    /// The entry each committed index holds, as first seen committed on any node.
    committed: BTreeMap<LogIndex, (NodeId, Entry)>,
    /// Per node: durable entries up to this index were checked against `committed`.
    checked_through: BTreeMap<NodeId, LogIndex>,
}

impl Invariant for CommittedPrefixAgreement {
    fn after_persist(&mut self, node: &NodeId, persist: &Persist, _view: &SimView<'_>) -> Result<(), String> {
        // Whatever this write replaced must be checked again at the next step.
        let first_changed = [persist.truncate_from, persist.entries.first().map(|entry| entry.index)]
            .into_iter()
            .flatten()
            .min();
        if let (Some(first), Some(checked)) = (first_changed, self.checked_through.get_mut(node)) {
            if first <= *checked {
                *checked = first.prev();
            }
        }
        Ok(())
    }

    fn after_step(&mut self, view: &SimView<'_>) -> Result<(), String> {
        let Some((node, state)) = view.touched_state() else { return Ok(()) };
        let Some(durable) = view.durable(node) else { return Ok(()) };
        // A node may already count as committed an entry whose write is still under way, while its
        // durable log holds the conflicting entry that write replaces: check only below such writes.
        let rewritten_from = view
            .pending_persists(node)
            .flat_map(|persist| [persist.truncate_from, persist.entries.first().map(|entry| entry.index)])
            .flatten()
            .min()
            .unwrap_or(LogIndex(u64::MAX));
        let commit = state.commit_index.min(rewritten_from.prev());
        let checked = self.checked_through.get(node).copied().unwrap_or(LogIndex::ZERO);
        if commit <= checked {
            return Ok(());
        }
        let start = durable.entries.partition_point(|entry| entry.index <= checked);
        let mut reached = checked;
        for entry in &durable.entries[start..] {
            if entry.index > commit {
                break;
            }
            match self.committed.get(&entry.index) {
                Some((first_node, first)) if first != entry => {
                    return Err(format!(
                        "committed entry {} differs: {first_node} had term {} {:?} committed first, {node} has term {} {:?}",
                        entry.index, first.term, first.payload, entry.term, entry.payload
                    ));
                }
                Some(_) => {}
                None => {
                    self.committed.insert(entry.index, (node.clone(), entry.clone()));
                }
            }
            reached = entry.index;
        }
        self.checked_through.insert(node.clone(), reached);
        Ok(())
    }
}

/// The invariants every Raft run should hold: terms and commit indexes never decrease, one leader
/// per term, committed prefixes agree.
pub fn raft_invariants() -> Vec<Box<dyn Invariant>> {
    vec![
        Box::new(TermsNeverDecrease::default()),
        Box::new(CommitNeverDecreases::default()),
        Box::new(ElectionSafety::default()),
        Box::new(CommittedPrefixAgreement::default()),
    ]
}

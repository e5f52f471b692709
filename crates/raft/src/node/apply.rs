//! Applying committed entries, membership entries taking effect, and log compaction.

use concord_core::command::CommandResult;

use super::*;

impl Raft {
    pub(super) fn try_promote(&mut self, now: Instant) {
        if self.promotions.is_empty() || !self.committed_own_term() || self.membership_change_in_progress() {
            return;
        }
        let ready: Option<(NodeId, ProposalId)> = self
            .promotions
            .iter()
            .find(|(node, _)| {
                self.progress.get(*node).is_some_and(|progress| progress.match_index >= self.commit)
            })
            .map(|(node, id)| (node.clone(), id.clone()));
        let Some((node, id)) = ready else { return };
        self.promotions.remove(&node);
        let mut next = self.membership_now().clone();
        let Some(member) = next.members.get_mut(&node) else { return };
        member.role = MemberRole::Voter;
        let index = self.leader_append(now, EntryPayload::Membership(Box::new(next)));
        self.membership_proposals.insert(index, id);
        self.broadcast_append(now);
    }

    pub(super) fn membership_change_in_progress(&self) -> bool {
        self.memberships.last().is_some_and(|(index, _)| *index > self.commit)
    }

    pub(super) fn apply_committed(&mut self, now: Instant) {
        // Whether `stored_by_voter` holds this call's figures (taken when first needed, again after a
        // membership entry).
        let mut tally_taken = false;
        // Bounded per step: a long committed tail (a restart, a follower catching up) is applied
        // over several Ready batches, and the node answers heartbeats and votes in between.
        let apply_until = LogIndex(
            self.commit
                .0
                .min(self.replica.applied().0.saturating_add(u64::from(self.config.max_apply_entries))),
        );
        while self.replica.applied() < apply_until {
            let index = self.replica.applied().next();
            let Some(entry) = self.log.entry(index) else {
                panic!(
                    "committed entry {index} is missing from the log (snapshot at {})",
                    self.log.snapshot_index()
                );
            };
            // Borrowed, not cloned (this runs for every entry): the log and the replica are
            // separate fields, and what outlives the borrow is copied out.
            match &entry.payload {
                EntryPayload::Noop => self.replica.skip(entry.index, entry.term),
                EntryPayload::Membership(_) => {
                    self.replica.skip(entry.index, entry.term);
                    self.on_membership_committed(now, index);
                    tally_taken = false;
                }
                EntryPayload::Command(proposal) => {
                    let context = ApplyContext {
                        index: entry.index,
                        term: entry.term,
                        timestamp_ms: entry.timestamp_ms,
                    };
                    // Ours when this node still waits for this very proposal (not an older one
                    // that reused its id).
                    let ours = self
                        .pending
                        .get(&proposal.id)
                        .is_some_and(|pending| pending.fingerprint == fingerprint(proposal))
                        .then(|| proposal.id.clone());
                    if ours.is_none() && !self.entry_events_wanted {
                        // Nobody takes this result here (the usual case on a follower).
                        self.replica.apply_unanswered(&context, proposal.session, &proposal.command);
                        continue;
                    }
                    let result = self.replica.apply(&context, proposal.session, &proposal.command);
                    if ours.is_some() && !tally_taken {
                        self.take_tally();
                        tally_taken = true;
                    }
                    self.apply_command(index, ours, result);
                }
            }
        }
        assert!(self.replica.applied() <= self.commit, "applied never passes commit");
        while let Some((index, id)) = self.apply_waits.first().cloned() {
            if index > self.replica.applied() {
                break;
            }
            self.apply_waits.remove(&(index, id));
            self.answer_read(id, Ok(index));
        }
        self.maybe_snapshot();
    }

    /// Fills `stored_by_voter` with the last index each voter is known to store (this node's once
    /// durable), for `apply_command`.
    fn take_tally(&mut self) {
        let mut stored = std::mem::take(&mut self.stored_by_voter);
        self.fill_per_voter(&mut stored, self.persisted.0, |progress| progress.match_index.0);
        self.stored_by_voter = stored;
    }

    /// Reports an applied command: its state changes, and its result when `ours` names the
    /// pending proposal of this node it answers (`stored_by_voter` must then be taken).
    pub(super) fn apply_command(&mut self, index: LogIndex, ours: Option<ProposalId>, result: CommandResult) {
        if let (Ok(output), true) = (&result, self.entry_events_wanted) {
            for change in &output.changes {
                self.events.push(Event::StateChanged {
                    key: change.key.clone(),
                    new_value: change.new_value.clone(),
                    old_value: change.old_value.clone(),
                    version: change.version,
                });
            }
        }
        let Some(id) = ours else { return };
        let Some(pending) = self.pending.remove(&id) else { return };
        self.proposal_deadlines.remove(&pending.deadline);
        let voters = self.stored_by_voter.len();
        let quorum_required = majority(voters);
        let in_favor = if self.state == State::Leader {
            self.stored_by_voter.iter().filter(|stored| **stored >= index.0).count()
        } else {
            quorum_required
        };
        let mut proposal_result = ProposalResult {
            proposal_id: id,
            accepted: true,
            key: pending.key,
            value: pending.value,
            votes: Votes { in_favor, against: 0, total: voters },
            quorum_required,
            error: None,
            output: None,
            index: Some(index),
            advisory: false,
        };
        match result {
            Ok(output) => {
                proposal_result.output = Some(output);
                if self.entry_events_wanted {
                    self.events.push(Event::ConsensusAccepted(proposal_result.clone()));
                }
            }
            Err(failure) => {
                proposal_result.accepted = false;
                proposal_result.error = Some(ProposalError::Command(failure));
            }
        }
        self.results.push(proposal_result);
    }

    /// Voters known to store `index` (this node counts once its copy is durable).
    pub(super) fn holders(&self, index: LogIndex) -> usize {
        self.membership_now()
            .voters()
            .filter(|voter| {
                if **voter == self.id {
                    self.persisted >= index
                } else {
                    self.progress.get(*voter).is_some_and(|progress| progress.match_index >= index)
                }
            })
            .count()
    }

    pub(super) fn on_membership_committed(&mut self, now: Instant, index: LogIndex) {
        if let Some(id) = self.membership_proposals.remove(&index) {
            if let Some(pending) = self.pending.remove(&id) {
                self.proposal_deadlines.remove(&pending.deadline);
                let voters = self.membership_now().voter_count();
                let quorum_required = majority(voters);
                let result = ProposalResult {
                    proposal_id: id,
                    accepted: true,
                    key: pending.key,
                    value: None,
                    votes: Votes { in_favor: self.holders(index), against: 0, total: voters },
                    quorum_required,
                    error: None,
                    output: None,
                    index: Some(index),
                    advisory: false,
                };
                if self.entry_events_wanted {
                    self.events.push(Event::ConsensusAccepted(result.clone()));
                }
                self.results.push(result);
            }
        }
        let latest = self.memberships.last().map_or(LogIndex::ZERO, |(at, _)| *at);
        if self.state == State::Leader && latest == index && !self.is_voter() {
            // The leader removed itself: it steps down once the removal is committed (thesis
            // §4.2.2), and hands over to the most up-to-date voter to shorten the gap.
            let successor = self
                .voters()
                .into_iter()
                .filter_map(|voter| self.progress.get(&voter).map(|progress| (progress.match_index, voter)))
                .max();
            let term = self.term;
            self.become_follower(now, term, None);
            if let Some((_, successor)) = successor {
                self.send(successor, RaftMessage::TimeoutNow { term });
            }
        }
    }

    pub(super) fn maybe_snapshot(&mut self) {
        let interval = self.config.snapshot_interval;
        let applied = self.replica.applied();
        if interval == 0 || applied.0 < self.log.snapshot_index().0 + interval {
            return;
        }
        let Some(term) = self.log.term_at(applied) else { return };
        let meta = SnapshotMeta {
            last_index: applied,
            last_term: term,
            membership: self.membership_at(applied).clone(),
        };
        let snapshot = Snapshot { meta, data: self.replica.snapshot() };
        self.forget_proposals_through(applied);
        self.log.compact_to(applied, term);
        // Keep the membership in force at the snapshot and every later one.
        let base = self.membership_at(applied).clone();
        self.memberships.retain(|(index, _)| *index > applied);
        self.memberships.insert(0, (applied, base));
        let commit = self.commit;
        self.persist_snapshot(snapshot.clone(), true, commit);
        self.snapshot = Some(snapshot);
    }

    pub(super) fn forget_proposals_through(&mut self, index: LogIndex) {
        let mut position = self.log.first_index();
        while position <= index {
            if let Some(EntryPayload::Command(proposal)) =
                self.log.entry(position).map(|entry| &entry.payload)
            {
                self.proposal_index.remove(&proposal.id);
                // Only session-less forwards are checked against compacted proposals (a session
                // applies its proposals at most once by itself), so only they are remembered: the
                // others cost three look-ups each for nothing, on every node, at every compaction.
                if proposal.session.is_none() {
                    let print = fingerprint(proposal);
                    if self.compacted_fingerprints.get(&proposal.id) != Some(print) {
                        self.compacted_fingerprints.insert(&proposal.id, print);
                        self.compacted_proposals.push_back((proposal.id.clone(), print));
                    }
                }
            }
            position = position.next();
        }
        while self.compacted_proposals.len() > COMPACTED_PROPOSALS_REMEMBERED_MAX {
            if let Some((id, print)) = self.compacted_proposals.pop_front() {
                // Only if a newer proposal with this id did not replace it meanwhile.
                if self.compacted_fingerprints.get(&id) == Some(print) {
                    self.compacted_fingerprints.remove(&id);
                }
            }
        }
    }

    /// Whether this very proposal (same id and same command) is already in the log or the batch.
    pub(super) fn is_known_proposal(&self, proposal: &Proposal) -> bool {
        let in_log =
            self.proposal_index.get(&proposal.id).and_then(|index| self.log.entry(index)).is_some_and(
                |entry| matches!(&entry.payload, EntryPayload::Command(logged) if **logged == *proposal),
            );
        // Only session-less forwarded proposals are checked, and the batch holds at most
        // `max_batch_entries`: scanning it costs less than indexing every batched proposal.
        in_log
            || self.batch.iter().any(|batched| **batched == *proposal)
            || self.compacted_fingerprints.get(&proposal.id) == Some(fingerprint(proposal))
    }
}

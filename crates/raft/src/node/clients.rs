//! Proposals and linearizable reads: batching, results, ReadIndex rounds and the lease.

use super::*;

impl Raft {
    /// Schedules the timeout of proposal `id`, made now.
    pub(super) fn track_deadline(&mut self, now: Instant, id: &ProposalId) -> DeadlineKey {
        self.proposals_registered += 1;
        self.proposal_deadlines.push(now + self.config.timeout, self.proposals_registered, id.clone())
    }

    pub(super) fn register_proposal(&mut self, now: Instant, proposal: &Proposal) {
        let deadline = self.track_deadline(now, &proposal.id);
        self.pending.insert(
            proposal.id.clone(),
            PendingProposal {
                deadline,
                fingerprint: fingerprint(proposal),
                key: proposal.command.key().to_owned(),
                value: proposal.command.written_value().cloned(),
                index: None,
            },
        );
    }

    pub(super) fn fail_proposal(&mut self, id: &ProposalId, error: ProposalError) {
        if let Some(pending) = self.pending.remove(id) {
            self.proposal_deadlines.remove(&pending.deadline);
            self.results.push(ProposalResult::failed(id.clone(), pending.key, error));
        }
        // An AddVoter that timed out stops waiting for its learner (a dead learner must not block
        // every later membership change); the learner stays, and `Promote` can finish the job.
        self.promotions.retain(|_, waiting| waiting != id);
    }

    /// The leader takes a proposal (made here or forwarded).
    pub(super) fn leader_accept(
        &mut self,
        now: Instant,
        proposal: Arc<Proposal>,
    ) -> Result<(), ProposalError> {
        if self.transfer.is_some() {
            return Err(ProposalError::Busy { what: "leadership transfer in progress".into(), limit: 0 });
        }
        let uncommitted = self.log.last_index().0.saturating_sub(self.commit.0) + self.batch.len() as u64;
        let limit = u64::from(self.config.max_pending_proposals);
        if uncommitted >= limit {
            return Err(ProposalError::Busy { what: "uncommitted entries on the leader".into(), limit });
        }
        if proposal.id.origin == self.id {
            self.register_proposal(now, &proposal);
        }
        if self.config.batch_updates {
            self.batch.push(proposal);
            if self.batch_deadline.is_none() {
                self.batch_deadline = Some(now + self.config.batch_window);
            }
            if self.batch.len() >= self.config.max_batch_entries as usize {
                self.flush_batch(now);
            }
        } else {
            self.leader_append(now, EntryPayload::Command(proposal));
            self.broadcast_append(now);
            self.maybe_commit(now);
        }
        Ok(())
    }

    pub(super) fn flush_batch(&mut self, now: Instant) {
        self.batch_deadline = None;
        if self.batch.is_empty() || self.state != State::Leader {
            self.batch.clear();
            return;
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.persist.entries.reserve(batch.len());
        for proposal in batch.drain(..) {
            self.leader_append(now, EntryPayload::Command(proposal));
        }
        // Keep the emptied buffer's capacity for the next batch.
        if self.batch.is_empty() {
            self.batch = batch;
        }
        self.broadcast_append(now);
        self.maybe_commit(now);
    }

    pub(super) fn pending_read_count(&self) -> usize {
        self.local_reads.len() + self.remote_reads
    }

    pub(super) fn register_read(&mut self, now: Instant, id: ReadId) {
        let deadline = now + self.config.timeout;
        self.local_reads.insert(id, deadline);
        self.read_deadlines.insert((deadline, id));
    }

    pub(super) fn answer_read(&mut self, id: ReadId, result: Result<LogIndex, ProposalError>) {
        if let Some(deadline) = self.local_reads.remove(&id) {
            self.read_deadlines.remove(&(deadline, id));
            self.reads.push(ReadResult { id, result });
        }
    }

    pub(super) fn answer_origin(&mut self, origin: ReadOrigin, result: Result<LogIndex, ProposalError>) {
        match origin {
            ReadOrigin::Local(id) => match result {
                Ok(index) if index > self.replica.applied() => {
                    self.apply_waits.insert((index, id));
                }
                result => self.answer_read(id, result),
            },
            ReadOrigin::Remote { from, request } => {
                self.remote_reads = self.remote_reads.saturating_sub(1);
                let term = self.term;
                self.send(from, RaftMessage::ReadIndexResponse { term, request, result });
            }
        }
    }

    /// ReadIndex on the leader (§6.4 of the thesis): record the commit index, confirm leadership
    /// with a heartbeat round, answer once applied. A leader that has not committed an entry of
    /// its term does not know the commit index yet and defers the read until it has.
    pub(super) fn leader_read(&mut self, now: Instant, origin: ReadOrigin) {
        if !self.committed_own_term() {
            self.deferred_reads.push(origin);
            return;
        }
        self.leader_read_now(now, origin);
    }

    pub(super) fn leader_read_now(&mut self, now: Instant, origin: ReadOrigin) {
        let index = self.commit;
        let single_voter = self.voters().iter().all(|voter| *voter == self.id);
        let lease = self.config.lease_reads && self.lease_valid(now);
        if single_voter || lease {
            self.answer_origin(origin, Ok(index));
            return;
        }
        if !self.round_unsent {
            self.broadcast_heartbeat(now);
        }
        let round = self.round;
        self.leader_reads.push_back(LeaderRead { origin, index, round });
    }

    /// Releases reads whose round a quorum acknowledged, and extends the lease.
    pub(super) fn check_rounds(&mut self, now: Instant) {
        if self.state != State::Leader {
            return;
        }
        // Runs for every append response: reuse one buffer instead of allocating two.
        let mut rounds = std::mem::take(&mut self.quorum_scratch);
        self.fill_per_voter(&mut rounds, self.round, |progress| progress.acked_round);
        let acked = quorum_value(&mut rounds);
        self.quorum_scratch = rounds;
        let Some(acked) = acked else { return };
        while self.leader_reads.front().is_some_and(|read| read.round <= acked) {
            if let Some(read) = self.leader_reads.pop_front() {
                self.answer_origin(read.origin, Ok(read.index));
            }
        }
        while self.round_sent_at.len() > 1
            && self.round_sent_at.get(1).is_some_and(|(round, _)| *round <= acked)
        {
            self.round_sent_at.pop_front();
        }
        if let Some((round, sent_at)) = self.round_sent_at.front().copied() {
            if round == acked && !self.transfer_started {
                // A quorum received this round, so none of them votes for another candidate until
                // an election timeout after it was sent (by their clocks); shorten the lease by the
                // clock drift we tolerate.
                let min = self.config.election_timeout.min;
                let drift = u64::from(self.config.lease_clock_drift_max_per_mille);
                let lease = min.mul_f64((1000 - drift.min(999)) as f64 / 1000.0);
                let until = sent_at + lease;
                self.lease_until = Some(self.lease_until.map_or(until, |old| old.max(until)));
            }
        }
        let _ = now;
    }
}

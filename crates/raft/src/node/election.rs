//! Elections (§5.2, pre-vote, check-quorum leases) and the role changes they cause.

use super::*;

impl Raft {
    pub(super) fn become_follower(&mut self, now: Instant, term: Term, leader: Option<NodeId>) {
        if self.state == State::Leader {
            self.on_leadership_lost();
        }
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.save_hard_state();
        }
        self.state = State::Follower;
        self.votes.clear();
        self.leader = None;
        self.set_leader(leader);
        self.reset_election_deadline(now);
        self.reset_connectivity_grace(now);
    }

    pub(super) fn reset_connectivity_grace(&mut self, now: Instant) {
        for heard in self.last_heard.values_mut() {
            *heard = (*heard).max(now);
        }
    }

    pub(super) fn on_leadership_lost(&mut self) {
        let commit = self.commit;
        let mut lost: Vec<ProposalId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.index.map_or(true, |index| index > commit))
            .map(|(id, _)| id.clone())
            .collect();
        // The map is hashed: sort so the results come out in the same order on every run.
        lost.sort_unstable();
        for id in lost {
            self.fail_proposal(&id, ProposalError::LeadershipLost);
        }
        self.batch.clear();
        self.batch_deadline = None;
        self.membership_proposals.clear();
        self.promotions.clear();
        let reads: Vec<ReadOrigin> = self
            .leader_reads
            .drain(..)
            .map(|read| read.origin)
            .chain(self.deferred_reads.drain(..))
            .collect();
        for origin in reads {
            self.answer_origin(origin, Err(ProposalError::LeadershipLost));
        }
        self.remote_reads = 0;
        self.progress.clear();
        self.transfer = None;
        self.lease_until = None;
        self.round_sent_at.clear();
    }

    pub(super) fn campaign(&mut self, now: Instant, pre_vote: bool, transfer: bool) {
        if !self.is_voter() {
            self.reset_election_deadline(now);
            return;
        }
        let campaign_term = if pre_vote {
            self.state = State::PreCandidate;
            Term(self.term.0 + 1)
        } else {
            self.term = Term(self.term.0 + 1);
            self.voted_for = Some(self.id.clone());
            self.state = State::Candidate;
            self.save_hard_state();
            self.term
        };
        self.leader = None;
        self.leader_contact = None;
        self.votes.clear();
        self.votes.insert(self.id.clone(), true);
        self.reset_election_deadline(now);
        if self.tally_votes(now) {
            return;
        }
        let request = RaftMessage::VoteRequest {
            term: campaign_term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote,
            transfer,
        };
        for voter in self.voters() {
            if voter == self.id {
                continue;
            }
            if pre_vote {
                // A pre-vote changes nothing durable on either side.
                self.send(voter, request.clone());
            } else {
                // The vote for itself must be on disk before anyone counts this candidacy.
                self.send_after_persist(voter, request.clone());
            }
        }
    }

    /// Counts the votes; returns whether the round is decided (won or lost).
    pub(super) fn tally_votes(&mut self, now: Instant) -> bool {
        let voters = self.voters();
        let needed = majority(voters.len());
        let granted = voters.iter().filter(|voter| self.votes.get(*voter) == Some(&true)).count();
        let rejected = voters.iter().filter(|voter| self.votes.get(*voter) == Some(&false)).count();
        if granted >= needed {
            match self.state {
                State::PreCandidate => self.campaign(now, false, false),
                State::Candidate => self.become_leader(now),
                _ => {}
            }
            true
        } else if rejected >= needed {
            let term = self.term;
            self.become_follower(now, term, None);
            true
        } else {
            false
        }
    }

    pub(super) fn become_leader(&mut self, now: Instant) {
        debug_assert_eq!(self.state, State::Candidate);
        self.state = State::Leader;
        self.votes.clear();
        self.leader = Some(self.id.clone());
        self.events.push(Event::LeaderElected { leader: self.id.clone(), term: self.term });
        self.progress.clear();
        self.round_sent_at.clear();
        self.lease_until = None;
        self.transfer = None;
        self.transfer_started = false;
        self.commit_unsent = false;
        self.sync_progress();
        self.reset_connectivity_grace(now);
        self.term_start_index = self.log.last_index().next();
        self.check_quorum_deadline = now + self.config.election_timeout.min;
        // A no-op of the new term lets the leader commit (and so learn) everything before it (§8).
        self.leader_append(now, EntryPayload::Noop);
        self.broadcast_heartbeat(now);
        self.maybe_commit(now);
    }

    pub(super) fn in_leader_lease(&self, now: Instant) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        match self.state {
            State::Leader => true,
            _ => {
                let heard_leader = self.leader.is_some()
                    && self
                        .leader_contact
                        .is_some_and(|contact| now < contact + self.config.election_timeout.min);
                // With lease reads, a node that just restarted may have acknowledged a leader's
                // lease right before crashing: it keeps that promise for an election timeout.
                let restarted_recently = self.config.lease_reads
                    && self
                        .started_at
                        .is_some_and(|started| now < started + self.config.election_timeout.min);
                heard_leader || restarted_recently
            }
        }
    }

    pub(super) fn handle_vote_request(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        pre_vote: bool,
    ) {
        if !pre_vote {
            self.events.push(Event::VoteRequested { from: from.clone(), term });
        }
        // §5.4.1: only a candidate whose log is at least as up to date as ours.
        let up_to_date = (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index());
        #[allow(unused_mut)]
        let mut can_vote = self.voted_for.as_ref() == Some(&from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && term > self.term);
        #[cfg(feature = "broken-variants")]
        if self.has_bug(Bug::DoubleVote) && !pre_vote && self.state == State::Follower {
            can_vote = true;
        }
        let grant = can_vote && up_to_date;
        if pre_vote {
            let response_term = if grant { term } else { self.term };
            self.send(
                from,
                RaftMessage::VoteResponse { term: response_term, granted: grant, pre_vote: true },
            );
            return;
        }
        if grant {
            self.voted_for = Some(from.clone());
            self.save_hard_state();
            self.reset_election_deadline(now);
            self.events.push(Event::VoteGranted { to: from.clone(), term });
        }
        let response = RaftMessage::VoteResponse { term: self.term, granted: grant, pre_vote: false };
        self.send_after_persist(from, response);
    }

    pub(super) fn handle_vote_response(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        granted: bool,
        pre_vote: bool,
    ) {
        let counting = if pre_vote {
            self.state == State::PreCandidate && (!granted || term == Term(self.term.0 + 1))
        } else {
            self.state == State::Candidate && term == self.term
        };
        if !counting || !self.membership_now().is_voter(&from) {
            return;
        }
        self.votes.insert(from, granted);
        self.tally_votes(now);
    }
}

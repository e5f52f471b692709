//! Log replication (§5.3): the leader's appends, heartbeats, snapshot transfers and commit rule,
//! and the follower's side of them.

use super::*;

impl Raft {
    /// Keeps a progress for every member of the latest and of the committed membership (a removed
    /// node keeps receiving the log until its removal commits, so it learns of it).
    pub(super) fn sync_progress(&mut self) {
        if self.state != State::Leader {
            return;
        }
        let mut wanted: BTreeSet<NodeId> = self.membership_now().members.keys().cloned().collect();
        wanted.extend(self.membership_at(self.commit).members.keys().cloned());
        wanted.remove(&self.id);
        self.progress.retain(|id, _| wanted.contains(id));
        let next = self.log.last_index().next();
        for id in wanted {
            self.progress.entry(id.clone()).or_insert_with(|| Progress::new(next));
            self.last_heard.entry(id).or_insert(self.now);
        }
    }

    pub(super) fn committed_own_term(&self) -> bool {
        self.state == State::Leader && self.commit >= self.term_start_index
    }

    pub(super) fn broadcast_heartbeat(&mut self, now: Instant) {
        self.round += 1;
        self.round_sent_at.push_back((self.round, now));
        while self.round_sent_at.len() > ROUNDS_REMEMBERED_MAX {
            self.round_sent_at.pop_front();
        }
        self.round_unsent = true;
        self.heartbeat_deadline = now + self.config.heartbeat_interval;
        let peers: Vec<NodeId> = self.progress.keys().cloned().collect();
        for peer in peers {
            self.send_heartbeat(now, &peer);
        }
    }

    pub(super) fn send_heartbeat(&mut self, now: Instant, peer: &NodeId) {
        let Some(progress) = self.progress.get_mut(peer) else { return };
        match progress.state {
            ReplicationState::Snapshot => {
                let resend = progress
                    .snapshot
                    .as_ref()
                    .is_some_and(|transfer| now >= transfer.sent_at + self.config.heartbeat_interval);
                if resend {
                    self.send_snapshot_chunk(now, peer);
                }
            }
            ReplicationState::Probe => {
                progress.probe_sent = false;
                self.send_append(now, peer, true);
            }
            ReplicationState::Replicate => {
                // An empty append at the pipeline's end: a lost tail shows up as a rejection.
                self.send_append(now, peer, true);
            }
        }
    }

    pub(super) fn broadcast_append(&mut self, now: Instant) {
        let peers: Vec<NodeId> = self.progress.keys().cloned().collect();
        for peer in peers {
            self.send_append(now, &peer, false);
        }
    }

    /// Sends what the follower lacks, within its window; `heartbeat` sends even when nothing is
    /// new (or the window is full), with no entries.
    pub(super) fn send_append(&mut self, now: Instant, peer: &NodeId, heartbeat: bool) {
        let inflight_messages_max = self.config.max_inflight_messages as usize;
        let inflight_bytes_max = self.config.max_inflight_bytes;
        let entries_max = self.config.max_entries_per_message as usize;
        let message_bytes_max =
            (self.config.max_message_bytes as usize).saturating_sub(APPEND_HEADER_BYTES).max(1);
        let mut heartbeat = heartbeat;
        loop {
            let Some(progress) = self.progress.get(peer) else { return };
            if progress.state == ReplicationState::Snapshot {
                return;
            }
            let paused = progress.is_paused(inflight_messages_max, inflight_bytes_max);
            if paused && !heartbeat {
                return;
            }
            let next = progress.next_index;
            let prev = next.prev();
            let Some(prev_term) = self.log.term_at(prev) else {
                self.start_snapshot(now, peer);
                return;
            };
            let (entries, bytes) = if paused {
                (Vec::new(), 0)
            } else {
                let bytes_left = usize::try_from(progress.inflight_bytes_left(inflight_bytes_max))
                    .unwrap_or(usize::MAX)
                    .min(message_bytes_max);
                self.log.slice(next, entries_max, bytes_left)
            };
            if entries.is_empty() && !heartbeat {
                return;
            }
            let bytes = bytes as u64;
            let last = entries.last().map(|entry| entry.index);
            let message = RaftMessage::Append {
                term: self.term,
                prev_log_index: prev,
                prev_log_term: prev_term,
                entries,
                leader_commit: self.commit,
                read_round: self.round,
            };
            self.send(peer.clone(), message);
            let commit = self.commit;
            let Some(progress) = self.progress.get_mut(peer) else { return };
            progress.commit_sent = commit;
            match last {
                Some(last) => progress.sent_entries(last, bytes),
                None if progress.state == ReplicationState::Probe => progress.probe_sent = true,
                None => {}
            }
            heartbeat = false;
            if progress.state != ReplicationState::Replicate {
                return;
            }
        }
    }

    /// Followers learn a new commit index without waiting for the next heartbeat: one empty append
    /// per batch to each pipelined follower that has room and has not been told.
    pub(super) fn send_commit_updates(&mut self) {
        let now = self.now;
        let inflight_messages_max = self.config.max_inflight_messages as usize;
        let inflight_bytes_max = self.config.max_inflight_bytes;
        let peers: Vec<NodeId> = self
            .progress
            .iter()
            .filter(|(_, progress)| {
                progress.state == ReplicationState::Replicate
                    && progress.commit_sent < self.commit
                    && !progress.is_paused(inflight_messages_max, inflight_bytes_max)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer in peers {
            self.send_append(now, &peer, true);
        }
    }

    pub(super) fn start_snapshot(&mut self, now: Instant, peer: &NodeId) {
        let Some(snapshot_index) = self.snapshot.as_ref().map(|snapshot| snapshot.meta.last_index) else {
            // Without a snapshot the log starts at index 1 and every term is known: unreachable.
            return;
        };
        if let Some(progress) = self.progress.get_mut(peer) {
            progress.become_snapshot(snapshot_index, now);
        }
        self.send_snapshot_chunk(now, peer);
    }

    pub(super) fn send_snapshot_chunk(&mut self, now: Instant, peer: &NodeId) {
        let Some(snapshot) = self.snapshot.as_ref() else { return };
        let Some(progress) = self.progress.get_mut(peer) else { return };
        let Some(transfer) = progress.snapshot.as_mut() else { return };
        if transfer.last_index != snapshot.meta.last_index {
            // A newer snapshot replaced the one being sent: start over with it.
            transfer.last_index = snapshot.meta.last_index;
            transfer.offset = 0;
        }
        let total = snapshot.data.len() as u64;
        let start = transfer.offset.min(total);
        let end = (start + u64::from(self.config.snapshot_chunk_bytes)).min(total);
        transfer.sent_at = now;
        let message = RaftMessage::InstallSnapshot {
            term: self.term,
            meta: snapshot.meta.clone(),
            offset: start,
            total_bytes: total,
            data: snapshot.data.slice(start as usize..end as usize),
            done: end == total,
        };
        self.send(peer.clone(), message);
    }

    pub(super) fn maybe_commit(&mut self, now: Instant) {
        if self.state != State::Leader {
            return;
        }
        // Runs for every append response: reuse one buffer instead of allocating.
        let mut matches = std::mem::take(&mut self.quorum_scratch);
        self.fill_per_voter(&mut matches, self.persisted.0, |progress| progress.match_index.0);
        let quorum_index = quorum_value(&mut matches).map(LogIndex);
        self.quorum_scratch = matches;
        let Some(quorum_index) = quorum_index else { return };
        if quorum_index <= self.commit {
            return;
        }
        #[allow(unused_mut)]
        let mut countable = self.log.term_at(quorum_index) == Some(self.term);
        #[cfg(feature = "broken-variants")]
        if self.has_bug(Bug::CommitOldTermByCounting) {
            countable = true;
        }
        // §5.4.2: only entries of the leader's own term are committed by counting replicas.
        if !countable {
            return;
        }
        let had_committed_own_term = self.committed_own_term();
        // The set of peers to track changes only when a membership entry gets committed (a new
        // latest membership already synced it when appended): skip the rebuild otherwise.
        let commit = self.commit;
        let membership_committed =
            self.memberships.iter().rev().any(|(index, _)| *index > commit && *index <= quorum_index);
        self.set_commit(quorum_index);
        if !had_committed_own_term && self.committed_own_term() {
            let deferred = std::mem::take(&mut self.deferred_reads);
            for origin in deferred {
                self.leader_read_now(now, origin);
            }
        }
        self.commit_unsent = true;
        if membership_committed {
            self.sync_progress();
        }
        self.apply_committed(now);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append(
        &mut self,
        now: Instant,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
        read_round: u64,
    ) -> Result<(), PeerError> {
        for (position, entry) in entries.iter().enumerate() {
            let expected = LogIndex(prev_log_index.0 + 1 + position as u64);
            if entry.index != expected || entry.term > self.term {
                return Err(PeerError::Protocol {
                    from: from.to_string(),
                    reason: format!(
                        "append entry {} (term {}) where {expected} was expected",
                        entry.index, entry.term
                    ),
                });
            }
        }
        if self.state == State::Leader {
            return Err(PeerError::Protocol {
                from: from.to_string(),
                reason: format!("a second leader in term {}", self.term),
            });
        }
        if self.state != State::Follower {
            let term = self.term;
            self.become_follower(now, term, Some(from.clone()));
        }
        self.set_leader(Some(from.clone()));
        self.leader_contact = Some(now);
        self.reset_election_deadline(now);

        let mut prev_index = prev_log_index;
        let mut prev_term = prev_log_term;
        let mut entries = entries;
        if prev_index < self.commit {
            // Everything up to our commit index is committed, hence in the leader's log too.
            let skip = usize::try_from(self.commit.0 - prev_index.0).unwrap_or(usize::MAX);
            if skip >= entries.len() {
                let response = RaftMessage::AppendResponse {
                    term: self.term,
                    success: true,
                    match_index: self.commit,
                    conflict: None,
                    last_log_index: self.log.last_index(),
                    read_round,
                };
                self.send_after_persist(from, response);
                return Ok(());
            }
            entries.drain(..skip);
            prev_index = self.commit;
            prev_term = self.log.term_at(self.commit).unwrap_or(prev_term);
        }
        let conflict = match self.log.term_at(prev_index) {
            None => Some(ConflictHint {
                rejected_index: prev_log_index,
                term: None,
                index: self.log.last_index().next(),
            }),
            Some(term) if term != prev_term => Some(ConflictHint {
                rejected_index: prev_log_index,
                term: Some(term),
                index: self.log.first_index_of_term(prev_index, term).max(self.commit.next()),
            }),
            Some(_) => None,
        };
        if let Some(hint) = conflict {
            let response = RaftMessage::AppendResponse {
                term: self.term,
                success: false,
                match_index: LogIndex::ZERO,
                conflict: Some(hint),
                last_log_index: self.log.last_index(),
                read_round,
            };
            self.send_after_persist(from, response);
            return Ok(());
        }
        let last_new = LogIndex(prev_index.0 + entries.len() as u64);
        let carries_entries = !entries.is_empty();
        if let Some(last) = entries.last() {
            self.see_stamp(last.timestamp_ms, now);
        }
        self.persist.entries.reserve(entries.len());
        for entry in entries {
            match self.log.term_at(entry.index) {
                Some(term) if term == entry.term => continue,
                Some(_) => {
                    self.truncate_log_from(entry.index);
                    self.append_entry(entry);
                }
                None => self.append_entry(entry),
            }
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit {
            self.set_commit(new_commit);
            self.apply_committed(now);
        }
        // A matching append without entries whose read round was already acknowledged is the
        // leader's commit update (heartbeats always start a new round). Its answer would repeat a
        // match index the leader learns from the entries' own answer and a round it already has,
        // so it is not sent: that saves the leader one message per follower and batch. Rejections
        // are always answered, and so is every heartbeat, which keeps liveness and lost answers
        // repaired within a heartbeat interval.
        let answered_before = (self.answered_round.0 == self.term).then_some(self.answered_round.1);
        if !carries_entries && answered_before.is_some_and(|answered| read_round <= answered) {
            return Ok(());
        }
        self.answered_round = (self.term, answered_before.unwrap_or(0).max(read_round));
        let response = RaftMessage::AppendResponse {
            term: self.term,
            success: true,
            match_index: last_new,
            conflict: None,
            last_log_index: self.log.last_index(),
            read_round,
        };
        // The acknowledgement promises the entries are durable: it waits for the persist.
        self.send_after_persist(from, response);
        Ok(())
    }

    pub(super) fn handle_append_response(
        &mut self,
        now: Instant,
        from: NodeId,
        success: bool,
        match_index: LogIndex,
        conflict: Option<ConflictHint>,
        read_round: u64,
    ) {
        if self.state != State::Leader {
            return;
        }
        let last_index = self.log.last_index();
        let Some(progress) = self.progress.get_mut(&from) else { return };
        progress.acked_round = progress.acked_round.max(read_round);
        if success {
            let match_index = match_index.min(last_index);
            let advanced = progress.update_match(match_index);
            if progress.state == ReplicationState::Probe && progress.match_index.next() >= progress.next_index
            {
                progress.become_replicate();
            }
            if advanced {
                self.maybe_commit(now);
            }
        } else if let Some(hint) = conflict {
            let stale = match progress.state {
                ReplicationState::Replicate => hint.rejected_index <= progress.match_index,
                ReplicationState::Probe => hint.rejected_index != progress.next_index.prev(),
                ReplicationState::Snapshot => true,
            };
            if !stale {
                let mut next = match hint.term {
                    Some(term) => {
                        let candidate = self.log.last_index_with_term_at_most(hint.rejected_index, term);
                        if candidate > self.log.snapshot_index() && self.log.term_at(candidate) == Some(term)
                        {
                            candidate.next()
                        } else {
                            hint.index
                        }
                    }
                    None => hint.index,
                };
                let Some(progress) = self.progress.get_mut(&from) else { return };
                next = next.min(hint.rejected_index).max(progress.match_index.next());
                progress.become_probe();
                progress.next_index = next;
            }
        }
        self.check_rounds(now);
        if self.state != State::Leader {
            return;
        }
        self.send_append(now, &from, false);
        self.maybe_send_timeout_now(&from);
    }

    pub(super) fn maybe_send_timeout_now(&mut self, peer: &NodeId) {
        let Some(transfer) = &self.transfer else { return };
        if transfer.target != *peer {
            return;
        }
        let caught_up =
            self.progress.get(peer).is_some_and(|progress| progress.match_index >= self.log.last_index());
        if caught_up {
            let term = self.term;
            self.send(peer.clone(), RaftMessage::TimeoutNow { term });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_install_snapshot(
        &mut self,
        now: Instant,
        from: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        total_bytes: u64,
        data: Bytes,
        done: bool,
    ) -> Result<(), PeerError> {
        let end = offset.checked_add(data.len() as u64);
        if end.map_or(true, |end| end > total_bytes || (end == total_bytes) != done) {
            return Err(PeerError::Protocol {
                from: from.to_string(),
                reason: format!(
                    "snapshot chunk at {offset} of {} bytes overruns its {total_bytes} bytes",
                    data.len()
                ),
            });
        }
        if self.state == State::Leader {
            return Err(PeerError::Protocol { from: from.to_string(), reason: "a second leader".into() });
        }
        if self.state != State::Follower {
            let term = self.term;
            self.become_follower(now, term, Some(from.clone()));
        }
        self.set_leader(Some(from.clone()));
        self.leader_contact = Some(now);
        self.reset_election_deadline(now);
        let last_index = meta.last_index;
        let respond = |raft: &mut Raft, next_offset: u64, done: bool| {
            let response =
                RaftMessage::InstallSnapshotResponse { term: raft.term, last_index, next_offset, done };
            raft.send_after_persist(from.clone(), response);
        };
        if last_index <= self.commit {
            respond(self, total_bytes, true);
            return Ok(());
        }
        let same_transfer = self
            .incoming_snapshot
            .as_ref()
            .is_some_and(|incoming| incoming.meta == meta && incoming.total_bytes == total_bytes);
        if !same_transfer {
            if offset != 0 {
                self.incoming_snapshot = None;
                respond(self, 0, false);
                return Ok(());
            }
            self.incoming_snapshot =
                Some(IncomingSnapshot { meta: meta.clone(), total_bytes, data: Vec::new() });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else { return Ok(()) };
        let have = incoming.data.len() as u64;
        if offset != have {
            // A chunk was lost or reordered: ask for the one we need next.
            respond(self, have, false);
            return Ok(());
        }
        incoming.data.extend_from_slice(&data);
        if !done {
            let have = incoming.data.len() as u64;
            respond(self, have, false);
            return Ok(());
        }
        let Some(incoming) = self.incoming_snapshot.take() else { return Ok(()) };
        let data = Bytes::from(incoming.data);
        if let Err(error) = self.replica.restore(&data) {
            return Err(PeerError::Protocol {
                from: from.to_string(),
                reason: format!("snapshot does not restore: {error}"),
            });
        }
        debug_assert_eq!(self.replica.applied(), last_index, "a snapshot is taken at its last index");
        let restored_stamp = self.replica.last_timestamp_ms();
        self.see_stamp(restored_stamp, now);
        if self.log.term_at(last_index) == Some(meta.last_term) {
            self.forget_proposals_through(last_index);
        } else {
            self.proposal_index.clear();
        }
        let continues = self.log.restore_to(last_index, meta.last_term);
        if continues {
            self.memberships.retain(|(index, _)| *index > last_index);
        } else {
            self.memberships.clear();
            self.persisted = self.persisted.min(last_index.prev());
        }
        self.memberships.insert(0, (last_index, meta.membership.clone()));
        let committed_before = self.commit;
        self.commit = self.commit.max(last_index);
        let snapshot = Snapshot { meta, data };
        self.persist_snapshot(snapshot.clone(), continues, committed_before);
        self.snapshot = Some(snapshot);
        self.apply_committed(now);
        respond(self, total_bytes, true);
        Ok(())
    }

    pub(super) fn handle_install_snapshot_response(
        &mut self,
        now: Instant,
        from: NodeId,
        last_index: LogIndex,
        next_offset: u64,
        done: bool,
    ) {
        if self.state != State::Leader {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else { return };
        let current = progress.snapshot.as_ref().is_some_and(|transfer| transfer.last_index == last_index);
        if progress.state != ReplicationState::Snapshot || !current {
            return;
        }
        if done {
            progress.update_match(last_index);
            progress.become_probe();
            self.send_append(now, &from, false);
            self.maybe_commit(now);
        } else {
            if let Some(transfer) = progress.snapshot.as_mut() {
                transfer.offset = next_offset;
            }
            self.send_snapshot_chunk(now, &from);
        }
    }
}

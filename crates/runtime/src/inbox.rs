//! The proposal inbox: where callers leave proposals for their node.
//!
//! A caller never takes the node's state lock to propose. That lock is held for whole batches
//! (a follower's acknowledgement applies and answers hundreds of entries under it), and callers
//! queueing on it were parked and woken by the kernel, which at a few hundred concurrent callers
//! cost more than the writes themselves. The inbox's own lock is held for one push or one swap,
//! short enough that a waiter spins instead of sleeping.
//!
//! Whoever processes the node's next Ready takes the whole inbox under the state lock and hands
//! each proposal to the mechanism (`Consensus`'s `accept_submissions`), so proposals that arrive
//! while a batch is processed join the next batch together.

use concord_core::error::ProposalError;
use concord_core::event::ProposalResult;
use concord_core::message::Proposal;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// A caller waiting for the result of a proposal made on this node.
pub(crate) struct PendingCall {
    pub(crate) sender: oneshot::Sender<ProposalResult>,
    /// When the node task answers `Timeout` if no result came (`None`: the caller times out itself).
    /// Checked by the node task at each partition check rather than by a timer per proposal.
    pub(crate) give_up_at: Option<tokio::time::Instant>,
}

/// A proposal and the caller waiting for it, not yet handed to the mechanism.
pub(crate) struct Submission {
    pub(crate) proposal: Proposal,
    pub(crate) call: PendingCall,
}

/// What a push did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The inbox was empty: nobody has been told about it yet, so the pusher wakes the node task.
    First,
    /// Others wait already; whoever takes them takes this one too.
    Queued,
}

/// The refusal when `max_pending_proposals` (`limit`) proposals already wait.
pub(crate) fn busy(limit: usize) -> ProposalError {
    ProposalError::Busy { what: "pending proposals".into(), limit: limit as u64 }
}

pub(crate) struct ProposalInbox {
    queue: Mutex<Queue>,
}

struct Queue {
    submissions: Vec<Submission>,
    /// Set when the node stops taking proposals (stopped, or its storage failed): pushes then fail
    /// with this error, so no caller can be left in an inbox nobody takes from.
    closed: Option<ProposalError>,
}

impl ProposalInbox {
    pub(crate) fn new() -> Self {
        ProposalInbox { queue: Mutex::new(Queue { submissions: Vec::new(), closed: None }) }
    }

    /// Leaves a proposal for the node. Refused with `Busy` when the proposals waiting here plus
    /// `pending` (those the mechanism already holds) reach `limit`, and with the closing error once
    /// the inbox is closed.
    pub(crate) fn push(
        &self,
        submission: Submission,
        limit: usize,
        pending: usize,
    ) -> Result<Pushed, ProposalError> {
        let mut queue = self.queue.lock();
        if let Some(error) = &queue.closed {
            return Err(error.clone());
        }
        if queue.submissions.len() + pending >= limit {
            return Err(busy(limit));
        }
        queue.submissions.push(submission);
        Ok(if queue.submissions.len() == 1 { Pushed::First } else { Pushed::Queued })
    }

    /// Takes every waiting proposal: swaps the queue with `into`, which must be empty (its capacity
    /// becomes the queue's, so a steady flow allocates nothing).
    pub(crate) fn take(&self, into: &mut Vec<Submission>) {
        debug_assert!(into.is_empty(), "taking into a batch that still holds submissions");
        std::mem::swap(&mut self.queue.lock().submissions, into);
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.lock().submissions.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses every later push with `error` (the first closing error stays) and returns what was
    /// waiting, for the caller to answer.
    pub(crate) fn close(&self, error: ProposalError) -> Vec<Submission> {
        let mut queue = self.queue.lock();
        queue.closed.get_or_insert(error);
        std::mem::take(&mut queue.submissions)
    }
}

#[cfg(test)]
mod tests {
    use concord_core::command::Command;
    use concord_core::id::{NodeId, ProposalId};

    use super::*;

    fn submission(sequence: u64) -> (Submission, oneshot::Receiver<ProposalResult>) {
        let (sender, receiver) = oneshot::channel();
        let proposal = Proposal {
            id: ProposalId { origin: NodeId::parse("n1").unwrap(), sequence },
            session: None,
            command: Command::Delete { key: "k".into() },
        };
        (Submission { proposal, call: PendingCall { sender, give_up_at: None } }, receiver)
    }

    #[test]
    fn only_the_push_into_an_empty_inbox_wakes_the_node() {
        let inbox = ProposalInbox::new();
        assert_eq!(inbox.push(submission(1).0, 10, 0), Ok(Pushed::First));
        assert_eq!(inbox.push(submission(2).0, 10, 0), Ok(Pushed::Queued));
        let mut batch = Vec::new();
        inbox.take(&mut batch);
        assert_eq!(batch.iter().map(|s| s.proposal.id.sequence).collect::<Vec<_>>(), [1, 2]);
        assert!(inbox.is_empty());
        batch.clear();
        assert_eq!(inbox.push(submission(3).0, 10, 0), Ok(Pushed::First));
    }

    #[test]
    fn the_limit_counts_what_waits_here_and_what_the_mechanism_holds() {
        let inbox = ProposalInbox::new();
        assert!(inbox.push(submission(1).0, 3, 1).is_ok());
        assert!(inbox.push(submission(2).0, 3, 1).is_ok());
        let refused = inbox.push(submission(3).0, 3, 1);
        assert!(matches!(refused, Err(ProposalError::Busy { limit: 3, .. })), "{refused:?}");
        assert_eq!(inbox.len(), 2);
    }

    #[test]
    fn a_closed_inbox_returns_its_waiting_callers_and_refuses_new_ones_with_the_first_error() {
        let inbox = ProposalInbox::new();
        let (first, _receiver) = submission(1);
        inbox.push(first, 10, 0).unwrap();
        let waiting = inbox.close(ProposalError::Storage("disk full".into()));
        assert_eq!(waiting.len(), 1);
        assert!(inbox.close(ProposalError::Stopped).is_empty());
        let refused = inbox.push(submission(2).0, 10, 0);
        assert!(matches!(refused, Err(ProposalError::Storage(_))), "{refused:?}");
    }
}

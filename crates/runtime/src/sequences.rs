//! This node's client sequences, and the acknowledgement sent with each proposal.
//!
//! Every proposal made through a `Consensus` carries the node's client id and a new sequence
//! number, and also the lowest sequence still waiting for an answer
//! (`ClientSession::answered_below`). Replicas forget the results below it, so the session table
//! (and every snapshot of it) holds about the proposals in flight instead of
//! `max_client_sessions` results.
//!
//! A sequence counts as answered when the call that took it returns or is dropped: it is never
//! retried after that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// How far past the lowest unanswered sequence answers are recorded (64 per word): 4M sequences,
/// 512 KiB. A call still unanswered after that many newer ones (a proposal stuck for seconds at
/// full speed) stops the acknowledgement from advancing once it returns, for the rest of the
/// node's life: replicas then keep results until `max_client_sessions` evicts them, as for a
/// client that acknowledges nothing. Correctness never depends on acknowledgements.
const ANSWERED_WORDS_MAX: usize = 1 << 16;

pub(crate) struct Sequences {
    next: AtomicU64,
    /// `Answered::lowest`, readable without the lock. Only ever below or at the true lowest
    /// unanswered sequence, so a stale read acknowledges less, never too much.
    lowest_unanswered: AtomicU64,
    answered: Mutex<Answered>,
}

/// Bit `i` of word `w` says whether sequence `start + 64 w + i` was answered. Full words leave
/// from the front.
struct Answered {
    start: u64,
    words: VecDeque<u64>,
}

impl Answered {
    fn lowest(&self) -> u64 {
        self.start + self.words.front().map_or(0, |word| u64::from(word.trailing_ones()))
    }
}

/// A sequence taken by a call; answered when dropped.
pub(crate) struct Taken<'a> {
    sequences: &'a Sequences,
    pub(crate) sequence: u64,
    /// The acknowledgement to send with it: no sequence below this one waits for an answer.
    pub(crate) answered_below: u64,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.sequences.answer(self.sequence);
    }
}

impl Sequences {
    /// Sequences start at 1.
    pub(crate) fn new() -> Self {
        Sequences {
            next: AtomicU64::new(1),
            lowest_unanswered: AtomicU64::new(1),
            answered: Mutex::new(Answered { start: 1, words: VecDeque::new() }),
        }
    }

    /// A new sequence. Takes no lock.
    pub(crate) fn take(&self) -> Taken<'_> {
        let sequence = self.next.fetch_add(1, Ordering::Relaxed);
        let answered_below = self.lowest_unanswered.load(Ordering::Acquire).min(sequence);
        Taken { sequences: self, sequence, answered_below }
    }

    fn answer(&self, sequence: u64) {
        let mut answered = self.answered.lock();
        let Some(offset) = sequence.checked_sub(answered.start) else { return };
        let word = (offset / 64) as usize;
        if word >= ANSWERED_WORDS_MAX {
            return;
        }
        if answered.words.len() <= word {
            answered.words.resize(word + 1, 0);
        }
        answered.words[word] |= 1 << (offset % 64);
        while answered.words.front() == Some(&u64::MAX) {
            answered.words.pop_front();
            answered.start += 64;
        }
        let lowest = answered.lowest();
        self.lowest_unanswered.store(lowest, Ordering::Release);
    }

    #[cfg(test)]
    fn lowest_unanswered(&self) -> u64 {
        self.lowest_unanswered.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_acknowledgement_waits_for_the_oldest_call() {
        let sequences = Sequences::new();
        let first = sequences.take();
        let second = sequences.take();
        assert_eq!((first.sequence, first.answered_below), (1, 1));
        assert_eq!((second.sequence, second.answered_below), (2, 1));
        drop(second);
        assert_eq!(sequences.take().answered_below, 1, "sequence 1 still waits");
        drop(first);
        // 3 was taken (and answered) above, so 4 is the lowest that can still wait.
        let fourth = sequences.take();
        assert_eq!((fourth.sequence, fourth.answered_below), (4, 4));
    }

    #[test]
    fn a_call_stuck_beyond_the_window_only_stops_the_acknowledgement() {
        let sequences = Sequences::new();
        let stuck = sequences.take();
        for _ in 0..(ANSWERED_WORDS_MAX as u64 * 64 + 10) {
            drop(sequences.take());
        }
        assert_eq!(sequences.lowest_unanswered(), 1);
        drop(stuck);
        let next = sequences.take();
        assert!(next.answered_below > 1 && next.answered_below <= next.sequence);
        assert_eq!(sequences.answered.lock().words.len(), 0, "full words left from the front");
    }

    proptest! {
        /// Against a model (the set of taken, unanswered sequences): the acknowledgement is never
        /// above an unanswered sequence, and is exactly the lowest one once answers are recorded.
        #[test]
        fn never_acknowledges_a_waiting_call(steps in proptest::collection::vec(any::<(bool, u8)>(), 1..400)) {
            let sequences = Sequences::new();
            let mut taken = Vec::new();
            let mut waiting = BTreeSet::new();
            for (take, pick) in steps {
                if take || taken.is_empty() {
                    let call = sequences.take();
                    prop_assert!(waiting.first().map_or(true, |lowest| call.answered_below <= *lowest));
                    prop_assert!(call.answered_below <= call.sequence);
                    waiting.insert(call.sequence);
                    taken.push(call);
                } else {
                    let call = taken.swap_remove(usize::from(pick) % taken.len());
                    waiting.remove(&call.sequence);
                    drop(call);
                }
                let next = sequences.next.load(Ordering::Relaxed);
                prop_assert_eq!(sequences.lowest_unanswered(), waiting.first().copied().unwrap_or(next));
            }
        }
    }
}

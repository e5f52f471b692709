//! Quorum arithmetic, pure and table-tested: how many votes a decision needs, when a tally is
//! decided, and which values a recovery must respect.
//!
//! Everything here takes plain counts, so the safety argument in the crate docs can be checked
//! against these few functions alone.

use concord_core::config::Quorum;

/// The quorum rule in force for one membership: votes needed, and whether it is safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumRule {
    /// Voting members.
    pub voters: usize,
    /// Votes a decision needs.
    pub required: usize,
    /// `required` is not a strict majority: two quorums need not intersect, so two values may
    /// both be accepted. Only allowed when the config says `advisory: true`.
    pub advisory: bool,
}

/// Why no decision can be taken with the configured quorum and the current membership.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuorumError {
    /// The membership has no voters.
    #[error("the membership has no voters")]
    NoVoters,
    /// The quorum asks for more votes than there are voters.
    #[error("the quorum needs {required} votes but there are only {voters} voters")]
    Unreachable {
        /// Votes needed.
        required: usize,
        /// Voters.
        voters: usize,
    },
    /// The quorum is not a strict majority of the voters and the config is not advisory.
    #[error(
        "the quorum of {required} of {voters} voters is not a strict majority, so two conflicting \
         values could both win; use more than {half} votes or set `advisory: true`",
        half = voters / 2
    )]
    NotAMajority {
        /// Votes needed.
        required: usize,
        /// Voters.
        voters: usize,
    },
}

impl QuorumRule {
    /// The rule for `voters` members under `quorum`. Membership changes, so this is checked at run
    /// time against the current count, not only by `Config::validate`.
    pub fn new(quorum: Quorum, voters: usize, advisory_allowed: bool) -> Result<Self, QuorumError> {
        if voters == 0 {
            return Err(QuorumError::NoVoters);
        }
        let required = quorum.required(voters).max(1);
        if required > voters {
            return Err(QuorumError::Unreachable { required, voters });
        }
        let advisory = !is_strict_majority(required, voters);
        if advisory && !advisory_allowed {
            return Err(QuorumError::NotAMajority { required, voters });
        }
        Ok(QuorumRule { voters, required, advisory })
    }

    /// Where a tally of `in_favor` and `against` votes stands.
    pub fn tally(&self, in_favor: usize, against: usize) -> Tally {
        tally(in_favor, against, self.voters, self.required)
    }
}

/// Whether `required` votes out of `voters` make every two quorums intersect.
pub fn is_strict_majority(required: usize, voters: usize) -> bool {
    required * 2 > voters
}

/// Where a vote stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tally {
    /// Enough votes for.
    Accepted,
    /// So many against that the quorum can no longer be reached.
    Rejected,
    /// Neither yet.
    Pending,
}

/// The tally of `in_favor` and `against` among `voters`, `required` needed. Votes beyond `voters`
/// are a caller bug (each voter is counted once).
pub fn tally(in_favor: usize, against: usize, voters: usize, required: usize) -> Tally {
    debug_assert!(in_favor + against <= voters, "{in_favor} + {against} votes from {voters} voters");
    if in_favor >= required {
        Tally::Accepted
    } else if in_favor + voters.saturating_sub(in_favor + against) < required {
        Tally::Rejected
    } else {
        Tally::Pending
    }
}

/// Fast Paxos' recovery test for one value voted in the fast round: among `promised` members
/// (who answered a recovery and will not vote in the fast round any more), `votes` voted for the
/// value. The value may have been chosen iff even if every member that has not answered voted for
/// it, it could reach `required`: `votes + (voters − promised) ≥ required`.
pub fn may_have_been_chosen(votes: usize, promised: usize, voters: usize, required: usize) -> bool {
    debug_assert!(votes <= promised && promised <= voters);
    votes + voters.saturating_sub(promised) >= required
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_votes_and_safety() {
        // (quorum, voters, advisory allowed) → Ok((required, advisory)) or the error.
        type Row = (Quorum, usize, bool, Result<(usize, bool), QuorumError>);
        let rows: Vec<Row> = vec![
            (Quorum::Fraction(0.51), 1, false, Ok((1, false))),
            (Quorum::Fraction(0.51), 2, false, Ok((2, false))),
            (Quorum::Fraction(0.51), 3, false, Ok((2, false))),
            (Quorum::Fraction(0.51), 4, false, Ok((3, false))),
            (Quorum::Fraction(0.51), 5, false, Ok((3, false))),
            (Quorum::Fraction(0.6), 5, false, Ok((3, false))),
            (Quorum::Fraction(1.0), 3, false, Ok((3, false))),
            // Ties: half of an even cluster is not a majority.
            (Quorum::Fraction(0.5), 4, false, Err(QuorumError::NotAMajority { required: 2, voters: 4 })),
            (Quorum::Fraction(0.5), 4, true, Ok((2, true))),
            (Quorum::Fraction(0.5), 2, false, Err(QuorumError::NotAMajority { required: 1, voters: 2 })),
            (Quorum::Fraction(0.5), 3, false, Ok((2, false))),
            // Counts: the lesson's `quorum: 3` of 5.
            (Quorum::Count(3), 5, false, Ok((3, false))),
            (Quorum::Count(3), 6, false, Err(QuorumError::NotAMajority { required: 3, voters: 6 })),
            (Quorum::Count(3), 6, true, Ok((3, true))),
            (Quorum::Count(3), 2, true, Err(QuorumError::Unreachable { required: 3, voters: 2 })),
            (Quorum::Count(1), 1, false, Ok((1, false))),
            (Quorum::Count(1), 2, false, Err(QuorumError::NotAMajority { required: 1, voters: 2 })),
            (Quorum::Count(2), 2, false, Ok((2, false))),
            (Quorum::Fraction(0.51), 0, true, Err(QuorumError::NoVoters)),
        ];
        for (quorum, voters, advisory_allowed, expected) in rows {
            let got =
                QuorumRule::new(quorum, voters, advisory_allowed).map(|rule| (rule.required, rule.advisory));
            assert_eq!(got, expected, "{quorum:?} of {voters}, advisory allowed: {advisory_allowed}");
        }
    }

    #[test]
    fn tallies() {
        // (for, against, voters, required) → tally
        let rows = [
            (0, 0, 1, 1, Tally::Pending),
            (1, 0, 1, 1, Tally::Accepted),
            (0, 1, 1, 1, Tally::Rejected),
            (1, 0, 2, 2, Tally::Pending),
            (1, 1, 2, 2, Tally::Rejected),
            (2, 0, 2, 2, Tally::Accepted),
            (1, 0, 3, 2, Tally::Pending),
            (1, 1, 3, 2, Tally::Pending),
            (0, 2, 3, 2, Tally::Rejected),
            (1, 2, 3, 2, Tally::Rejected),
            (2, 1, 3, 2, Tally::Accepted),
            (2, 2, 5, 3, Tally::Pending),
            (2, 3, 5, 3, Tally::Rejected),
            (3, 2, 5, 3, Tally::Accepted),
            // Advisory 2 of 4: a 2–2 split accepts (and the other side could too — advisory).
            (2, 2, 4, 2, Tally::Accepted),
            (1, 3, 4, 2, Tally::Rejected),
        ];
        for (in_favor, against, voters, required, expected) in rows {
            assert_eq!(
                tally(in_favor, against, voters, required),
                expected,
                "{in_favor} for, {against} against of {voters}, {required} needed"
            );
        }
    }

    #[test]
    fn fast_round_recovery_rule() {
        // (votes for the value among promises, promises, voters, required) → may have been chosen
        let rows = [
            // Three voters, two needed, two promises.
            (0, 2, 3, 2, false),
            (1, 2, 3, 2, true),
            (2, 2, 3, 2, true),
            // All three answered: only an actual quorum counts.
            (1, 3, 3, 2, false),
            (2, 3, 3, 2, true),
            // Five voters, three needed, three promises: one vote plus two silent may make three.
            (1, 3, 5, 3, true),
            (0, 3, 5, 3, false),
            (1, 4, 5, 3, false),
            // One-node cluster.
            (0, 1, 1, 1, false),
            (1, 1, 1, 1, true),
            // Two-node cluster: both votes needed.
            (1, 2, 2, 2, false),
            (1, 1, 2, 2, true),
            (0, 1, 2, 2, false),
        ];
        for (votes, promised, voters, required, expected) in rows {
            assert_eq!(
                may_have_been_chosen(votes, promised, voters, required),
                expected,
                "{votes} votes among {promised} promises of {voters}, {required} needed"
            );
        }
    }

    #[test]
    fn two_values_can_both_look_possible_only_before_enough_promises() {
        // With a strict majority, once every voter answered at most one value can pass the test.
        for voters in 1..=9usize {
            let required = voters / 2 + 1;
            for a in 0..=voters {
                for b in 0..=(voters - a) {
                    let both = may_have_been_chosen(a, voters, voters, required)
                        && may_have_been_chosen(b, voters, voters, required);
                    assert!(!(both && a > 0 && b > 0), "{a} and {b} of {voters}");
                }
            }
        }
    }
}

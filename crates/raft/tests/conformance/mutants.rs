//! The conformance tests can fail: with a deliberately broken behaviour switched on (the crate's
//! `broken-variants` feature, enabled for its own tests), the test written for that rule fails.

use std::panic::{catch_unwind, AssertUnwindSafe};

use concord_raft::Bug;

fn fails_with(check: fn(Option<Bug>), bug: Bug) -> bool {
    catch_unwind(AssertUnwindSafe(|| check(Some(bug)))).is_err()
}

// §5.2: one vote per term.
#[test]
fn a_double_vote_is_caught_by_the_one_vote_per_term_test() {
    crate::paper_5_2::check_one_vote_per_term(None);
    assert!(fails_with(crate::paper_5_2::check_one_vote_per_term, Bug::DoubleVote));
}

// §5.4.2, Figure 8: committing an old-term entry by counting replicas.
#[test]
fn committing_an_old_term_entry_by_counting_is_caught_by_the_figure_8_test() {
    crate::paper_5_4::check_figure_8(None);
    assert!(fails_with(crate::paper_5_4::check_figure_8, Bug::CommitOldTermByCounting));
}

// Persistence: a vote that is not written to storage does not survive a restart.
#[test]
fn skipping_the_vote_persistence_is_caught_by_the_restart_test() {
    crate::scenarios::check_restart_recovery(None);
    assert!(fails_with(crate::scenarios::check_restart_recovery, Bug::SkipVotePersistence));
}

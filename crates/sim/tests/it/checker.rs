//! The linearizability checker on hand-written histories.

use concord_sim::linearizability::{check, check_with_limit, LinearizabilityError};
use concord_sim::{History, Operation, OperationId, OperationKind, Outcome, Response};

/// Builds histories tersely: times are in milliseconds.
struct Builder {
    history: History,
}

impl Builder {
    fn new() -> Self {
        Builder { history: History::new() }
    }

    fn push(
        &mut self,
        key: &str,
        kind: OperationKind,
        invoked: u64,
        completed: Option<u64>,
        outcome: Outcome,
    ) -> &mut Self {
        let id = OperationId(self.history.operations.len() as u64);
        self.history.operations.push(Operation {
            id,
            client: id.0,
            node: "n1".into(),
            key: key.into(),
            kind,
            invoked_at_nanos: invoked * 1_000_000,
            completed_at_nanos: completed.map(|ms| ms * 1_000_000),
            outcome,
        });
        self
    }

    fn write(&mut self, value: i64, invoked: u64, completed: u64) -> &mut Self {
        self.push(
            "x",
            OperationKind::Write { value },
            invoked,
            Some(completed),
            Outcome::Ok(Response::Written),
        )
    }

    fn read(&mut self, value: Option<i64>, invoked: u64, completed: u64) -> &mut Self {
        self.push("x", OperationKind::Read, invoked, Some(completed), Outcome::Ok(Response::Read { value }))
    }

    fn unknown_write(&mut self, value: i64, invoked: u64) -> &mut Self {
        self.push(
            "x",
            OperationKind::Write { value },
            invoked,
            None,
            Outcome::Unknown { reason: "timeout".into() },
        )
    }

    fn add(&mut self, delta: i64, result: i64, invoked: u64, completed: u64) -> &mut Self {
        self.push(
            "x",
            OperationKind::Add { delta },
            invoked,
            Some(completed),
            Outcome::Ok(Response::Added { value: result }),
        )
    }

    fn cas(
        &mut self,
        expected: Option<i64>,
        new: i64,
        swapped: bool,
        invoked: u64,
        completed: u64,
    ) -> &mut Self {
        let kind = OperationKind::Cas { expected, new };
        self.push("x", kind, invoked, Some(completed), Outcome::Ok(Response::Cas { swapped }))
    }

    fn done(&self) -> History {
        self.history.clone()
    }
}

fn assert_rejected(history: &History) -> LinearizabilityError {
    match check(history) {
        Err(error @ LinearizabilityError::NotLinearizable { .. }) => error,
        other => panic!("expected a non-linearizable verdict, got {other:?}"),
    }
}

#[test]
fn accepts_sequential_and_concurrent_histories() {
    // Sequential.
    assert_eq!(check(&Builder::new().write(1, 0, 1).read(Some(1), 2, 3).done()), Ok(()));
    // A read concurrent with a write may see either value.
    assert_eq!(
        check(&Builder::new().write(1, 0, 1).write(2, 2, 10).read(Some(1), 3, 4).read(Some(2), 5, 6).done()),
        Ok(())
    );
    // Two overlapping writes may take effect in either order; both reads after them agree.
    assert_eq!(
        check(
            &Builder::new().write(1, 0, 10).write(2, 1, 9).read(Some(1), 11, 12).read(Some(1), 13, 14).done()
        ),
        Ok(())
    );
    // The empty key reads as absent.
    assert_eq!(check(&Builder::new().read(None, 0, 1).done()), Ok(()));
    // Operations that touch in time (one completes when the other starts) count as concurrent.
    assert_eq!(check(&Builder::new().write(1, 0, 5).read(None, 5, 6).done()), Ok(()));
}

#[test]
fn accepts_an_unknown_write_that_took_effect_and_one_that_did_not() {
    let took_effect =
        Builder::new().write(1, 0, 1).unknown_write(2, 2).read(Some(2), 50, 51).read(Some(2), 60, 61).done();
    assert_eq!(check(&took_effect), Ok(()));
    let never = Builder::new().write(1, 0, 1).unknown_write(2, 2).read(Some(1), 50, 51).done();
    assert_eq!(check(&never), Ok(()));
    // It may even take effect long after its invocation, between two later reads.
    let late =
        Builder::new().write(1, 0, 1).unknown_write(2, 2).read(Some(1), 50, 51).read(Some(2), 60, 61).done();
    assert_eq!(check(&late), Ok(()));
}

#[test]
fn accepts_counters_and_compare_and_swap() {
    let history = Builder::new()
        .add(5, 5, 0, 1)
        .add(2, 7, 2, 10)
        .add(3, 10, 3, 9) // concurrent with the previous add: applied after it
        .cas(Some(10), 20, true, 11, 12)
        .cas(Some(10), 30, false, 13, 14)
        .read(Some(20), 15, 16)
        .done();
    assert_eq!(check(&history), Ok(()));
}

#[test]
fn failed_operations_never_took_effect() {
    let history = Builder::new()
        .write(1, 0, 1)
        .push(
            "x",
            OperationKind::Write { value: 2 },
            2,
            Some(3),
            Outcome::Fail { reason: "not leader".into() },
        )
        .read(Some(2), 4, 5)
        .done();
    assert_rejected(&history);
}

#[test]
fn rejects_a_stale_read() {
    let error = assert_rejected(&Builder::new().write(1, 0, 1).write(2, 2, 3).read(Some(1), 4, 5).done());
    let text = error.to_string();
    assert!(text.contains("key \"x\""), "{text}");
    assert!(text.contains("read"), "{text}");
}

#[test]
fn rejects_a_lost_write() {
    // The write completed, yet later reads see the older value.
    assert_rejected(
        &Builder::new().write(1, 0, 1).write(2, 2, 3).read(Some(2), 4, 5).read(Some(1), 6, 7).done(),
    );
    // Or see nothing at all.
    assert_rejected(&Builder::new().write(1, 0, 1).read(None, 2, 3).done());
}

#[test]
fn rejects_a_value_never_written() {
    assert_rejected(&Builder::new().write(1, 0, 1).read(Some(42), 2, 3).done());
}

#[test]
fn rejects_a_wrong_counter_sum() {
    assert_rejected(&Builder::new().add(5, 5, 0, 1).add(2, 8, 2, 3).done());
    // Two adds cannot both see the same starting point.
    assert_rejected(&Builder::new().add(5, 5, 0, 10).add(2, 2, 1, 9).read(Some(7), 11, 12).done());
}

#[test]
fn rejects_a_cas_that_swapped_on_a_stale_expectation() {
    let history = Builder::new().write(1, 0, 1).write(2, 2, 3).cas(Some(1), 3, true, 4, 5).done();
    assert_rejected(&history);
    // And a failed CAS whose expectation held.
    assert_rejected(&Builder::new().write(1, 0, 1).cas(Some(1), 3, false, 2, 3).done());
}

#[test]
fn keys_are_checked_independently_and_errors_name_the_key() {
    let mut builder = Builder::new();
    builder.write(1, 0, 1);
    builder.push("y", OperationKind::Write { value: 5 }, 0, Some(1), Outcome::Ok(Response::Written));
    builder.push("y", OperationKind::Read, 2, Some(3), Outcome::Ok(Response::Read { value: Some(1) }));
    match check(&builder.done()) {
        Err(LinearizabilityError::NotLinearizable { key, operation, .. }) => {
            assert_eq!(key, "y");
            assert_eq!(operation.id, OperationId(2));
        }
        other => panic!("expected key y to fail: {other:?}"),
    }
}

#[test]
fn a_malformed_history_is_reported() {
    let mut builder = Builder::new();
    builder.push("x", OperationKind::Read, 0, Some(1), Outcome::Ok(Response::Written));
    assert!(matches!(check(&builder.done()), Err(LinearizabilityError::Malformed { .. })));
}

#[test]
fn the_search_is_bounded() {
    // Many concurrent writes and a read that none explains: the search would explore them all.
    let mut builder = Builder::new();
    for value in 0..40 {
        builder.write(value, 0, 100);
    }
    builder.read(Some(-1), 101, 102);
    assert!(matches!(
        check_with_limit(&builder.done(), 1000),
        Err(LinearizabilityError::Inconclusive { steps: 1000, .. })
    ));
}

#[test]
fn histories_round_trip_through_json() {
    let history = Builder::new().write(1, 0, 1).unknown_write(2, 2).cas(Some(1), 3, false, 3, 4).done();
    let text = serde_json::to_string(&history).unwrap();
    let back: History = serde_json::from_str(&text).unwrap();
    assert_eq!(back, history);
}

/// Whether `kind` with `response` (`None`: unknown) can be applied to `state`, and the next state.
fn apply(state: Option<i64>, kind: OperationKind, response: Option<Response>) -> Option<Option<i64>> {
    match (kind, response) {
        (OperationKind::Read, Some(Response::Read { value })) => (value == state).then_some(state),
        (OperationKind::Write { value }, _) => Some(Some(value)),
        (OperationKind::Cas { expected, new }, Some(Response::Cas { swapped })) => {
            (swapped == (state == expected)).then_some(if swapped { Some(new) } else { state })
        }
        (OperationKind::Cas { expected, new }, None) => {
            Some(if state == expected { Some(new) } else { state })
        }
        (OperationKind::Add { delta }, Some(Response::Added { value })) => {
            (state.unwrap_or(0) + delta == value).then_some(Some(value))
        }
        (OperationKind::Add { delta }, None) => Some(Some(state.unwrap_or(0) + delta)),
        _ => None,
    }
}

/// Brute force: try every order that respects real time (and every subset of unknown writes).
fn brute_force(operations: &[Operation]) -> bool {
    let live: Vec<&Operation> = operations
        .iter()
        .filter(|op| {
            !matches!(
                (&op.outcome, op.kind),
                (Outcome::Fail { .. }, _) | (Outcome::Unknown { .. } | Outcome::Pending, OperationKind::Read)
            )
        })
        .collect();
    fn search(live: &[&Operation], done: &mut Vec<bool>, state: Option<i64>) -> bool {
        let pending: Vec<usize> = (0..live.len()).filter(|&i| !done[i]).collect();
        if pending.iter().all(|&i| !matches!(live[i].outcome, Outcome::Ok(_))) {
            return true; // Only unknown writes are left: they may never take effect.
        }
        for &i in &pending {
            // `i` may go next only if no other pending operation completed before it was invoked.
            let blocked = pending.iter().any(|&j| {
                j != i && live[j].completed_at_nanos.is_some_and(|done| done < live[i].invoked_at_nanos)
            });
            if blocked {
                continue;
            }
            let response = match live[i].outcome {
                Outcome::Ok(response) => Some(response),
                _ => None,
            };
            if let Some(next) = apply(state, live[i].kind, response) {
                done[i] = true;
                let found = search(live, done, next);
                done[i] = false;
                if found {
                    return true;
                }
            }
            if response.is_none() {
                // An unknown write may also never take effect.
                done[i] = true;
                let found = search(live, done, state);
                done[i] = false;
                if found {
                    return true;
                }
            }
        }
        false
    }
    search(&live, &mut vec![false; live.len()], None)
}

/// A random small history on one key: operations at random times with responses that are mostly
/// those of some sequential execution (so both verdicts occur), sometimes corrupted.
fn random_history(rng: &mut rand_chacha::ChaCha8Rng) -> History {
    use rand::Rng;
    let count = rng.gen_range(1..=7);
    let mut history = History::new();
    let mut state: Option<i64> = None;
    for position in 0..count {
        let kind = match rng.gen_range(0..4) {
            0 => OperationKind::Read,
            1 => OperationKind::Write { value: rng.gen_range(1..4) },
            2 => OperationKind::Cas {
                expected: [None, Some(1), Some(2)][rng.gen_range(0..3)],
                new: rng.gen_range(1..4),
            },
            _ => OperationKind::Add { delta: rng.gen_range(1..3) },
        };
        // Responses from a sequential run in invocation order, then perturbed.
        let mut response = match kind {
            OperationKind::Read => Response::Read { value: state },
            OperationKind::Write { .. } => Response::Written,
            OperationKind::Cas { expected, .. } => Response::Cas { swapped: state == expected },
            OperationKind::Add { delta } => Response::Added { value: state.unwrap_or(0) + delta },
        };
        state = apply(state, kind, Some(response)).unwrap_or(state);
        if rng.gen_bool(0.25) {
            response = match response {
                Response::Read { value } => Response::Read { value: value.map_or(Some(1), |v| Some(v + 1)) },
                Response::Cas { swapped } => Response::Cas { swapped: !swapped },
                Response::Added { value } => Response::Added { value: value + 1 },
                Response::Written => Response::Written,
            };
        }
        let invoked = position as u64 * 10 + rng.gen_range(0..15);
        let outcome = match rng.gen_range(0..10) {
            0 => Outcome::Unknown { reason: "random".into() },
            1 => Outcome::Fail { reason: "random".into() },
            _ => Outcome::Ok(response),
        };
        let completed =
            matches!(outcome, Outcome::Ok(_) | Outcome::Fail { .. }).then(|| invoked + rng.gen_range(0..30));
        history.operations.push(Operation {
            id: OperationId(position as u64),
            client: position as u64,
            node: "n1".into(),
            key: "x".into(),
            kind,
            invoked_at_nanos: invoked,
            completed_at_nanos: completed,
            outcome,
        });
    }
    history
}

#[test]
fn agrees_with_brute_force_on_random_small_histories() {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let (mut accepted, mut rejected) = (0, 0);
    for round in 0..5000 {
        let history = random_history(&mut rng);
        let expected = brute_force(&history.operations);
        let verdict = check(&history);
        assert_eq!(verdict.is_ok(), expected, "round {round}: checker says {verdict:?} for {history:#?}");
        if expected {
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(accepted > 1000 && rejected > 1000, "both verdicts exercised: {accepted} / {rejected}");
}

#[test]
fn many_lost_writes_stay_cheap_to_check() {
    // Thirty writes with unknown outcomes, none of which took effect, then reads of the old value:
    // placing unknown writes eagerly would try every subset of them.
    let mut builder = Builder::new();
    builder.write(0, 0, 1);
    for value in 1..=30 {
        builder.unknown_write(value, 1 + value as u64);
    }
    for round in 0..30 {
        builder.read(Some(0), 100 + 10 * round, 105 + 10 * round);
    }
    assert_eq!(check_with_limit(&builder.done(), 100_000), Ok(()));
    // The same writes where the last one took effect just before the reads.
    let mut builder = Builder::new();
    builder.write(0, 0, 1);
    for value in 1..=30 {
        builder.unknown_write(value, 1 + value as u64);
    }
    builder.read(Some(30), 100, 105);
    assert_eq!(check_with_limit(&builder.done(), 100_000), Ok(()));
}

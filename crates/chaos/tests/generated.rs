//! Seeded histories of a correct store: every operation takes effect at one instant inside its
//! interval (or, for `fail` and some `info`, never). The checker must accept all of them: a checker
//! that cries wolf is as useless as one that stays silent.

use std::collections::BTreeMap;

use concord_chaos::{check_events, EventType, Function, HistoryEvent, ViolationKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

/// Seeds the default test run checks.
const SEEDS: u64 = 1_000;
const PROCESSES: u64 = 5;
const OPERATIONS_PER_PROCESS: usize = 20;

struct Planned {
    process: u64,
    f: Function,
    key: String,
    invoke_value: Value,
    invoked_at: u64,
    takes_effect_at: u64,
    completed_at: u64,
    /// Filled in when the model applies it: completion type and value.
    completion: Option<(EventType, Value)>,
}

/// A history of a linearizable register-and-counter store, from `seed`.
fn correct_history(seed: u64) -> Vec<HistoryEvent> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut planned = Vec::new();
    let mut next_value = 1_i64;
    for process in 0..PROCESSES {
        let mut now = rng.gen_range(0..50);
        for _ in 0..OPERATIONS_PER_PROCESS {
            let invoked_at = now + rng.gen_range(0..50);
            let takes_effect_at = invoked_at + rng.gen_range(0..100);
            let completed_at = takes_effect_at + rng.gen_range(0..100);
            now = completed_at + 1;
            let (f, key, invoke_value) = match rng.gen_range(0..8) {
                0..=2 => (Function::Read, format!("k{}", rng.gen_range(0..2)), Value::Null),
                3 | 4 => {
                    next_value += 1;
                    (Function::Write, format!("k{}", rng.gen_range(0..2)), json!(next_value))
                }
                5 => {
                    next_value += 1;
                    let expected =
                        if rng.gen_bool(0.2) { Value::Null } else { json!(rng.gen_range(1..next_value)) };
                    (Function::Cas, format!("k{}", rng.gen_range(0..2)), json!([expected, next_value]))
                }
                6 => (Function::Add, "counter".to_owned(), json!(rng.gen_range(-3..10))),
                _ => (Function::Read, "counter".to_owned(), Value::Null),
            };
            planned.push(Planned {
                process,
                f,
                key,
                invoke_value,
                invoked_at,
                takes_effect_at,
                completed_at,
                completion: None,
            });
        }
    }

    // Apply in the order the operations take effect.
    let mut order: Vec<usize> = (0..planned.len()).collect();
    order.sort_by_key(|&index| (planned[index].takes_effect_at, index));
    let mut state: BTreeMap<String, i64> = BTreeMap::new();
    for index in order {
        let operation = &mut planned[index];
        let current = state.get(&operation.key).copied();
        // Unknown outcomes: the client gave up; the operation happened or not.
        let unknown = rng.gen_bool(0.1);
        let happens = !unknown || rng.gen_bool(0.5);
        let completion = match operation.f {
            Function::Read => {
                let value = current.map_or(Value::Null, |value| json!(value));
                if unknown {
                    (EventType::Info, Value::Null)
                } else {
                    (EventType::Ok, value)
                }
            }
            Function::Write => {
                let refused = !unknown && rng.gen_bool(0.1);
                if happens && !refused {
                    state.insert(operation.key.clone(), operation.invoke_value.as_i64().unwrap());
                }
                let event_type = if unknown {
                    EventType::Info
                } else if refused {
                    EventType::Fail
                } else {
                    EventType::Ok
                };
                (event_type, operation.invoke_value.clone())
            }
            Function::Cas => {
                let expected = operation.invoke_value[0].as_i64();
                let new = operation.invoke_value[1].as_i64().unwrap();
                let holds = current == expected;
                if holds && happens {
                    state.insert(operation.key.clone(), new);
                }
                let event_type = match (unknown, holds) {
                    (true, _) => EventType::Info,
                    (false, true) => EventType::Ok,
                    (false, false) => EventType::Fail,
                };
                (event_type, operation.invoke_value.clone())
            }
            Function::Add => {
                let sum = current.unwrap_or(0) + operation.invoke_value.as_i64().unwrap();
                if happens {
                    state.insert(operation.key.clone(), sum);
                }
                if unknown {
                    (EventType::Info, Value::Null)
                } else {
                    (EventType::Ok, json!(sum))
                }
            }
        };
        operation.completion = Some(completion);
    }

    let mut timed = Vec::new();
    for operation in planned {
        let event = |event_type, value, time| HistoryEvent {
            process: operation.process,
            event_type,
            f: operation.f,
            key: operation.key.clone(),
            value,
            time,
            node: None,
            error: None,
        };
        let (completion, completed_value) = operation.completion.clone().unwrap();
        timed.push((
            operation.invoked_at,
            event(EventType::Invoke, operation.invoke_value.clone(), operation.invoked_at),
        ));
        timed.push((operation.completed_at, event(completion, completed_value, operation.completed_at)));
    }
    timed.sort_by_key(|(time, _)| *time);
    timed.into_iter().map(|(_, event)| event).collect()
}

#[test]
fn histories_of_a_correct_store_pass() {
    for seed in 0..SEEDS {
        let events = correct_history(seed);
        let report = check_events(&events).unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        assert!(report.is_valid(), "seed {seed}:\n{report}");
        assert_eq!(report.summary.operations, (PROCESSES as usize) * OPERATIONS_PER_PROCESS);
    }
}

#[test]
fn breaking_a_correct_history_is_caught() {
    // Turn the last `ok` read of a register that saw a value into a read of the absent state. That is
    // a violation exactly when an acknowledged write of the key completed before the read began, so
    // only those seeds count, and each one must be reported.
    let mut caught = 0;
    for seed in 0..SEEDS {
        let mut events = correct_history(seed);
        let Some(position) = events.iter().rposition(|event| {
            event.event_type == EventType::Ok
                && event.f == Function::Read
                && event.key.starts_with('k')
                && !event.value.is_null()
        }) else {
            continue;
        };
        let key = events[position].key.clone();
        let process = events[position].process;
        let invoked_at = events[..position]
            .iter()
            .rev()
            .find(|event| event.process == process)
            .map(|event| event.time)
            .unwrap();
        // An acknowledged write of this key completed before the read began: absent is then stale.
        let acknowledged_before = events.iter().any(|event| {
            event.key == key
                && event.event_type == EventType::Ok
                && matches!(event.f, Function::Write | Function::Cas)
                && event.time < invoked_at
        });
        if !acknowledged_before {
            continue;
        }
        events[position].value = Value::Null;
        let report = check_events(&events).unwrap();
        assert!(!report.is_valid(), "seed {seed}: reading absent after an acknowledged write passed");
        // Named by the plain checks too, not only by the linearizability search.
        let named =
            report.count(ViolationKind::StaleRead) + report.count(ViolationKind::LostAcknowledgedWrite);
        assert!(named >= 1, "seed {seed}: not named:\n{report}");
        caught += 1;
    }
    assert!(caught > SEEDS / 2, "only {caught} seeds had a breakable read");
}

//! What a run's summary reports beside the checker's verdict: availability per phase, and the
//! check of plain (local, possibly stale) reads.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::format::{EventType, Function, HistoryEvent, NemesisEvent, NemesisPhase};

/// Completions of the operations invoked during one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseAvailability {
    /// `healthy` (no fault), a fault's name, or `after-heal` (after the final heal).
    pub phase: String,
    /// Operations the cluster served: completed `ok`, or a CAS answered with a conflict (its
    /// expectation did not hold — an answer, not an outage).
    pub ok: u64,
    /// Operations that completed `fail`.
    pub fail: u64,
    /// Operations of unknown outcome.
    pub info: u64,
}

/// The phase in force at `time`: the fault active then (by the nemesis log), `after-heal` from
/// `healed_at` on, else `healthy`.
fn phase_at(time: u64, faults: &[(u64, u64, String)], healed_at: u64) -> String {
    if time >= healed_at {
        return "after-heal".into();
    }
    faults
        .iter()
        .find(|(start, stop, _)| (*start..*stop).contains(&time))
        .map_or_else(|| "healthy".into(), |(_, _, name)| name.clone())
}

/// Availability per phase: each operation counts in the phase in force when it was invoked.
/// Phases come out in order of first appearance, `after-heal` last.
pub fn availability(
    events: &[HistoryEvent],
    nemesis: &[NemesisEvent],
    healed_at: u64,
) -> Vec<PhaseAvailability> {
    let mut faults = Vec::new();
    let mut open: BTreeMap<&str, u64> = BTreeMap::new();
    for event in nemesis {
        match event.phase {
            NemesisPhase::Start => {
                open.insert(&event.fault, event.time);
            }
            NemesisPhase::Stop => {
                if let Some(start) = open.remove(event.fault.as_str()) {
                    faults.push((start, event.time, event.fault.clone()));
                }
            }
        }
    }
    for (fault, start) in open {
        faults.push((start, healed_at, fault.to_owned()));
    }
    let mut invoked_in: BTreeMap<u64, String> = BTreeMap::new();
    let mut phases: Vec<PhaseAvailability> = Vec::new();
    for event in events {
        let phase = if event.event_type == EventType::Invoke {
            invoked_in.insert(event.process, phase_at(event.time, &faults, healed_at));
            continue;
        } else {
            match invoked_in.remove(&event.process) {
                Some(phase) => phase,
                None => continue,
            }
        };
        let index = match phases.iter().position(|entry| entry.phase == phase) {
            Some(index) => index,
            None => {
                phases.push(PhaseAvailability { phase, ..PhaseAvailability::default() });
                phases.len() - 1
            }
        };
        let conflict = event.f == Function::Cas && event.error.as_deref() == Some("conflict");
        match event.event_type {
            EventType::Ok => phases[index].ok += 1,
            EventType::Fail if conflict => phases[index].ok += 1,
            EventType::Fail => phases[index].fail += 1,
            EventType::Info | EventType::Invoke => phases[index].info += 1,
        }
    }
    phases.sort_by_key(|entry| entry.phase == "after-heal");
    phases
}

/// Plain reads answer from a node's applied state, which may lag, so they are not checked for
/// linearizability; they must still return `null` or a value some write or CAS of the history
/// was invoked with. Returns how many did not.
pub fn never_written_local_reads(history: &[HistoryEvent], local_reads: &[HistoryEvent]) -> usize {
    let mut written: BTreeSet<(String, String)> = BTreeSet::new();
    for event in history.iter().filter(|event| event.event_type == EventType::Invoke) {
        let value = match event.f {
            Function::Write => Some(&event.value),
            Function::Cas => event.value.get(1),
            _ => None,
        };
        if let Some(value) = value {
            written.insert((event.key.clone(), value.to_string()));
        }
    }
    local_reads
        .iter()
        .filter(|event| event.event_type == EventType::Ok && event.f == Function::Read)
        .filter(|event| event.value != Value::Null)
        .filter(|event| !written.contains(&(event.key.clone(), event.value.to_string())))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(process: u64, event_type: EventType, f: Function, value: Value, time: u64) -> HistoryEvent {
        HistoryEvent { process, event_type, f, key: "k0".into(), value, time, node: None, error: None }
    }

    #[test]
    fn operations_count_in_the_phase_they_were_invoked_in() {
        let nemesis = vec![
            NemesisEvent {
                time: 100,
                fault: "kill".into(),
                targets: vec!["n1".into()],
                phase: NemesisPhase::Start,
            },
            NemesisEvent {
                time: 200,
                fault: "kill".into(),
                targets: vec!["n1".into()],
                phase: NemesisPhase::Stop,
            },
        ];
        let events = vec![
            event(1, EventType::Invoke, Function::Write, json!(1), 50),
            event(1, EventType::Ok, Function::Write, json!(1), 150),
            event(1, EventType::Invoke, Function::Write, json!(2), 160),
            event(1, EventType::Info, Function::Write, json!(2), 400),
            event(2, EventType::Invoke, Function::Read, json!(null), 170),
            event(2, EventType::Fail, Function::Read, json!(null), 180),
            event(2, EventType::Invoke, Function::Read, json!(null), 600),
            event(2, EventType::Ok, Function::Read, json!(1), 610),
            event(3, EventType::Invoke, Function::Cas, json!([5, 6]), 620),
            HistoryEvent {
                error: Some("conflict".into()),
                ..event(3, EventType::Fail, Function::Cas, json!([5, 6]), 630)
            },
        ];
        let phases = availability(&events, &nemesis, 500);
        assert_eq!(
            phases,
            vec![
                PhaseAvailability { phase: "healthy".into(), ok: 1, fail: 0, info: 0 },
                PhaseAvailability { phase: "kill".into(), ok: 0, fail: 1, info: 1 },
                PhaseAvailability { phase: "after-heal".into(), ok: 2, fail: 0, info: 0 },
            ]
        );
    }

    #[test]
    fn local_read_of_a_value_nobody_wrote_is_counted() {
        let history = vec![
            event(1, EventType::Invoke, Function::Write, json!(7), 1),
            event(2, EventType::Invoke, Function::Cas, json!([7, 8]), 2),
        ];
        let reads = vec![
            event(3, EventType::Ok, Function::Read, json!(7), 3),
            event(3, EventType::Ok, Function::Read, json!(8), 4),
            event(3, EventType::Ok, Function::Read, json!(null), 5),
            event(3, EventType::Ok, Function::Read, json!(9), 6),
        ];
        assert_eq!(never_written_local_reads(&history, &reads), 1);
    }
}

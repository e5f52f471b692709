//! A linearizability checker for key-value histories (Wing & Gong's search with Lowe's memoization).
//!
//! The model is one i64 register-and-counter per key: reads, writes, compare-and-swap and add
//! (absent counts as 0). Keys are independent, so the history is split by key and each part checked
//! alone (P-compositionality), which keeps the search small.
//!
//! Outcomes: `Ok` operations must take effect between their invocation and completion; `Fail`
//! operations never took effect and are dropped; `Unknown` (or still `Pending`) writes may take
//! effect at any point after their invocation, or never; reads without a value are dropped (a read
//! changes nothing).
//!
//! The search explores "which operation takes effect next" depth first, removing operations from a
//! doubly linked list of call and return events as they are linearized, and remembers every
//! (set of linearized operations, state) pair it has already explored so no configuration is
//! explored twice. It stops after a step limit with [`LinearizabilityError::Inconclusive`] rather
//! than run forever.

use std::collections::{BTreeMap, HashSet};

use crate::history::{History, Operation, OperationId, OperationKind, Outcome, Response};

/// Default bound on search steps per key.
pub const SEARCH_STEPS_MAX: u64 = 5_000_000;

/// Operations of the failing key shown in an error, at most.
const REPORTED_OPERATIONS_MAX: usize = 12;

/// Why a history is not (or could not be shown to be) linearizable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LinearizabilityError {
    /// No order of the key's operations explains what the clients saw.
    #[error("{}", describe_failure(key, operation, linearized, state, candidates))]
    NotLinearizable {
        /// The key.
        key: String,
        /// The operation that could not be placed: it completed, and no order of the operations
        /// before it lets it take effect with the result it returned.
        operation: Box<Operation>,
        /// The longest order found that explains a prefix of the history (its last operations).
        linearized: Vec<Operation>,
        /// The key's value after `linearized`.
        state: Option<i64>,
        /// Operations invoked before `operation` completed that were not in `linearized`.
        candidates: Vec<Operation>,
    },
    /// The search hit its step limit before deciding.
    #[error(
        "linearizability of key {key:?} is undecided after {steps} search steps ({operations} operations)"
    )]
    Inconclusive {
        /// The key.
        key: String,
        /// Steps taken.
        steps: u64,
        /// Operations on the key.
        operations: usize,
    },
    /// The history itself is inconsistent (e.g. a read answered with a write's response).
    #[error("malformed history: {operation}: {reason}")]
    Malformed {
        /// The operation.
        operation: OperationId,
        /// What is wrong.
        reason: String,
    },
}

fn describe_failure(
    key: &str,
    operation: &Operation,
    linearized: &[Operation],
    state: &Option<i64>,
    candidates: &[Operation],
) -> String {
    let mut text = format!("key {key:?} is not linearizable: cannot place {operation}\n");
    text.push_str(&format!("  longest explained order ends in state {state:?} after:\n"));
    for op in linearized {
        text.push_str(&format!("    {op}\n"));
    }
    text.push_str("  other operations invoked before it completed, not in that order:\n");
    for op in candidates {
        text.push_str(&format!("    {op}\n"));
    }
    if candidates.is_empty() {
        text.push_str("    (none)\n");
    }
    text
}

/// Checks a whole history with the default step limit.
pub fn check(history: &History) -> Result<(), LinearizabilityError> {
    check_with_limit(history, SEARCH_STEPS_MAX)
}

/// Checks a whole history, allowing at most `steps_max` search steps per key.
pub fn check_with_limit(history: &History, steps_max: u64) -> Result<(), LinearizabilityError> {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for operation in &history.operations {
        by_key.entry(operation.key.as_str()).or_default().push(operation);
    }
    for (key, operations) in by_key {
        check_key(key, &operations, steps_max)?;
    }
    Ok(())
}

/// One operation as the search sees it.
struct Candidate<'a> {
    operation: &'a Operation,
    /// `None`: the outcome is unknown, so it may also never take effect.
    response: Option<Response>,
}

impl Candidate<'_> {
    fn definite(&self) -> bool {
        self.response.is_some()
    }
}

/// Applies `kind` to `state`; `None` if the response cannot be explained from `state`.
fn step(state: Option<i64>, kind: OperationKind, response: Option<Response>) -> Option<Option<i64>> {
    match (kind, response) {
        (OperationKind::Read, Some(Response::Read { value })) => (value == state).then_some(state),
        (OperationKind::Read, _) => None,
        (OperationKind::Write { value }, _) => Some(Some(value)),
        (OperationKind::Cas { expected, new }, Some(Response::Cas { swapped: true })) => {
            (state == expected).then_some(Some(new))
        }
        (OperationKind::Cas { expected, .. }, Some(Response::Cas { swapped: false })) => {
            (state != expected).then_some(state)
        }
        (OperationKind::Cas { expected, new }, _) => Some(if state == expected { Some(new) } else { state }),
        (OperationKind::Add { delta }, response) => {
            let sum = state.unwrap_or(0).checked_add(delta);
            match (sum, response) {
                (Some(sum), Some(Response::Added { value })) => (sum == value).then_some(Some(sum)),
                (Some(sum), _) => Some(Some(sum)),
                // The state machine refuses an overflowing add: nothing changes.
                (None, Some(_)) => None,
                (None, None) => Some(state),
            }
        }
    }
}

fn validate(operation: &Operation) -> Result<Option<Option<Response>>, LinearizabilityError> {
    let malformed =
        |reason: &str| LinearizabilityError::Malformed { operation: operation.id, reason: reason.into() };
    match (&operation.outcome, operation.kind) {
        (Outcome::Fail { .. }, _) => Ok(None),
        (Outcome::Unknown { .. } | Outcome::Pending, OperationKind::Read) => Ok(None),
        (Outcome::Unknown { .. } | Outcome::Pending, _) => Ok(Some(None)),
        (Outcome::Ok(response), kind) => {
            let fits = matches!(
                (kind, response),
                (OperationKind::Read, Response::Read { .. })
                    | (OperationKind::Write { .. }, Response::Written)
                    | (OperationKind::Cas { .. }, Response::Cas { .. })
                    | (OperationKind::Add { .. }, Response::Added { .. })
            );
            if !fits {
                return Err(malformed("the response does not match the operation"));
            }
            if operation.completed_at_nanos.is_some_and(|done| done < operation.invoked_at_nanos) {
                return Err(malformed("completed before it was invoked"));
            }
            Ok(Some(Some(*response)))
        }
    }
}

const NONE: usize = usize::MAX;
/// Head of the list of definite operations' calls and returns, in time order.
const HEAD: usize = 0;
/// Head of the list of calls of operations with an unknown outcome (they have no return).
const UNKNOWN_HEAD: usize = 1;

/// A call or return event in the doubly linked lists the search removes operations from.
struct Event {
    candidate: usize,
    is_call: bool,
    /// Invocation time of a call, completion time of a return.
    time: u64,
    /// For a call: its return event, if the operation has one.
    matching_return: usize,
}

struct EventList {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

impl EventList {
    /// Appends `event` at the end of the list that starts at `head`, whose last element is `tail`.
    fn push(&mut self, tail: &mut usize, event: Event) -> usize {
        let at = self.events.len();
        self.events.push(event);
        self.next.push(NONE);
        self.prev.push(*tail);
        self.next[*tail] = at;
        *tail = at;
        at
    }

    fn unlink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = next;
        if next != NONE {
            self.prev[next] = prev;
        }
    }

    fn relink(&mut self, at: usize) {
        let (prev, next) = (self.prev[at], self.next[at]);
        self.next[prev] = at;
        if next != NONE {
            self.prev[next] = at;
        }
    }

    /// Removes a call and its return (dancing links: the removed nodes remember their place).
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let matching = self.events[call].matching_return;
        if matching != NONE {
            self.unlink(matching);
        }
    }

    /// Undoes [`EventList::lift`], in reverse order.
    fn unlift(&mut self, call: usize) {
        let matching = self.events[call].matching_return;
        if matching != NONE {
            self.relink(matching);
        }
        self.relink(call);
    }
}

/// Where the search is among the candidates for the next operation to take effect.
#[derive(Clone, Copy)]
enum Phase {
    /// Walking the definite operations' calls, up to the first return.
    Definite,
    /// Then the unknown-outcome calls invoked no later than `frontier` (that first return).
    Unknown {
        /// Calls after this time cannot come next: an operation still to place returned before.
        frontier: u64,
    },
}

fn check_key(key: &str, operations: &[&Operation], steps_max: u64) -> Result<(), LinearizabilityError> {
    let mut candidates = Vec::new();
    for operation in operations {
        if let Some(response) = validate(operation)? {
            candidates.push(Candidate { operation, response });
        }
    }
    // Calls sort before returns at the same instant: operations that touch in time count as
    // concurrent, so the checker never blames a tie.
    let mut order: Vec<(u64, u8, usize)> = Vec::new();
    for (position, candidate) in candidates.iter().enumerate() {
        order.push((candidate.operation.invoked_at_nanos, 0, position));
        if candidate.definite() {
            order.push((candidate.operation.completed_at_nanos.unwrap_or(u64::MAX), 1, position));
        }
    }
    order.sort_unstable();
    let heads = || Event { candidate: NONE, is_call: false, time: 0, matching_return: NONE };
    let mut list =
        EventList { events: vec![heads(), heads()], next: vec![NONE, NONE], prev: vec![NONE, NONE] };
    let (mut definite_tail, mut unknown_tail) = (HEAD, UNKNOWN_HEAD);
    let mut call_of = vec![NONE; candidates.len()];
    for &(time, kind, position) in &order {
        let event = Event { candidate: position, is_call: kind == 0, time, matching_return: NONE };
        if kind == 1 {
            let at = list.push(&mut definite_tail, event);
            list.events[call_of[position]].matching_return = at;
        } else if candidates[position].definite() {
            call_of[position] = list.push(&mut definite_tail, event);
        } else {
            list.push(&mut unknown_tail, event);
        }
    }

    let mut remaining_definite = candidates.iter().filter(|candidate| candidate.definite()).count();
    let mut linearized = vec![0u64; candidates.len().div_ceil(64)];
    // The explored set keys on a 128-bit Zobrist fingerprint of `linearized`, updated in O(1) per
    // step: storing the bitset itself would cost O(operations) per step in time and memory, which
    // a chaos run's history (tens of thousands of operations per key) cannot afford. A collision
    // (odds about 2^-128 per pair) could only prune a branch, i.e. report a violation, never hide one.
    let mut fingerprint = (0u64, 0u64);
    let mut explored: HashSet<(u64, u64, Option<i64>)> = HashSet::new();
    // Each frame: the call linearized, the phase it was found in, the state before it.
    let mut stack: Vec<(usize, Phase, Option<i64>)> = Vec::new();
    let mut state: Option<i64> = None;
    // Definite operations are tried before unknown ones: an unknown write is then only placed
    // where something needs it, which keeps histories with many lost writes cheap to check.
    let mut phase = Phase::Definite;
    let mut entry = list.next[HEAD];
    let mut steps = 0u64;
    // The deepest point reached, for the error message.
    let mut best: Option<Deepest> = None;

    while remaining_definite > 0 {
        steps += 1;
        if steps > steps_max {
            return Err(LinearizabilityError::Inconclusive {
                key: key.to_owned(),
                steps: steps_max,
                operations: candidates.len(),
            });
        }
        let callable = match phase {
            Phase::Definite => entry != NONE && list.events[entry].is_call,
            Phase::Unknown { frontier } => entry != NONE && list.events[entry].time <= frontier,
        };
        if callable {
            let position = list.events[entry].candidate;
            let candidate = &candidates[position];
            if let Some(next_state) = step(state, candidate.operation.kind, candidate.response) {
                let (word, bit) = (position / 64, 1u64 << (position % 64));
                let key_of = zobrist(position);
                let next_fingerprint = (fingerprint.0 ^ key_of.0, fingerprint.1 ^ key_of.1);
                if explored.insert((next_fingerprint.0, next_fingerprint.1, next_state)) {
                    linearized[word] |= bit;
                    fingerprint = next_fingerprint;
                    stack.push((entry, phase, state));
                    state = next_state;
                    list.lift(entry);
                    if candidate.definite() {
                        remaining_definite -= 1;
                    }
                    phase = Phase::Definite;
                    entry = list.next[HEAD];
                    continue;
                }
            }
            entry = list.next[entry];
            continue;
        }
        if let Phase::Definite = phase {
            // The first return: the operations invoked so far are all the candidates.
            if entry != NONE && best.as_ref().map_or(true, |deepest| stack.len() >= deepest.depth) {
                let recent = stack.len().saturating_sub(REPORTED_OPERATIONS_MAX);
                best = Some(Deepest {
                    depth: stack.len(),
                    stuck: list.events[entry].candidate,
                    recent_order: stack[recent..]
                        .iter()
                        .map(|(call, ..)| list.events[*call].candidate)
                        .collect(),
                    placed: linearized.clone(),
                    state,
                });
            }
            let frontier = if entry == NONE { u64::MAX } else { list.events[entry].time };
            phase = Phase::Unknown { frontier };
            entry = list.next[UNKNOWN_HEAD];
            continue;
        }
        // Nothing can come next here: the returned operation must already have taken effect.
        let Some((call, call_phase, previous_state)) = stack.pop() else {
            return Err(not_linearizable(key, &candidates, best));
        };
        let position = list.events[call].candidate;
        linearized[position / 64] &= !(1u64 << (position % 64));
        let key_of = zobrist(position);
        fingerprint = (fingerprint.0 ^ key_of.0, fingerprint.1 ^ key_of.1);
        state = previous_state;
        list.unlift(call);
        if candidates[position].definite() {
            remaining_definite += 1;
        }
        phase = call_phase;
        entry = list.next[call];
    }
    Ok(())
}

/// The deepest point the search reached: what the error message shows.
struct Deepest {
    /// Operations linearized there.
    depth: usize,
    /// The operation that returned there and could not be placed.
    stuck: usize,
    /// The last operations of the order found (at most `REPORTED_OPERATIONS_MAX`).
    recent_order: Vec<usize>,
    /// Which operations were placed (a bitset by position).
    placed: Vec<u64>,
    /// The state after them.
    state: Option<i64>,
}

/// Two independent 64-bit keys per position (SplitMix64), XORed into the explored-set fingerprint.
fn zobrist(position: usize) -> (u64, u64) {
    fn split_mix(mut value: u64) -> u64 {
        value = value.wrapping_add(0x9E37_79B9_7F4A_7C15);
        value = (value ^ (value >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        value = (value ^ (value >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        value ^ (value >> 31)
    }
    let position = position as u64;
    (split_mix(position), split_mix(position ^ 0xD1B5_4A32_D192_ED03))
}

fn not_linearizable(key: &str, candidates: &[Candidate<'_>], best: Option<Deepest>) -> LinearizabilityError {
    let Some(Deepest { stuck, recent_order: order, placed, state, .. }) = best else {
        return LinearizabilityError::Inconclusive {
            key: key.to_owned(),
            steps: 0,
            operations: candidates.len(),
        };
    };
    let stuck_operation = candidates[stuck].operation;
    let deadline = stuck_operation.completed_at_nanos.unwrap_or(u64::MAX);
    let is_placed = |position: usize| placed[position / 64] & (1u64 << (position % 64)) != 0;
    let linearized = order.iter().map(|&position| candidates[position].operation.clone()).collect();
    let candidates_next = (0..candidates.len())
        .filter(|&position| !is_placed(position) && position != stuck)
        .filter(|&position| candidates[position].operation.invoked_at_nanos <= deadline)
        .take(REPORTED_OPERATIONS_MAX)
        .map(|position| candidates[position].operation.clone())
        .collect();
    LinearizabilityError::NotLinearizable {
        key: key.to_owned(),
        operation: Box::new(stuck_operation.clone()),
        linearized,
        state,
        candidates: candidates_next,
    }
}

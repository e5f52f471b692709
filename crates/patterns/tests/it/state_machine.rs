//! Lease decisions of the key-value state machine, with explicit leader timestamps.

use bytes::Bytes;
use concord_core::command::{lock_key, LockCommand, LockState};
use concord_core::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Machine {
    replica: Replica,
    index: u64,
}

impl Machine {
    fn new() -> Self {
        Machine { replica: Replica::key_value(64), index: 0 }
    }

    fn apply_at(&mut self, timestamp_ms: u64, command: Command) -> CommandResult {
        self.index += 1;
        let context = ApplyContext { index: LogIndex(self.index), term: Term(1), timestamp_ms };
        self.replica.apply(&context, None, &command)
    }

    fn lock(&self, resource: &str) -> LockState {
        self.replica
            .machine()
            .get(&lock_key(resource))
            .and_then(|b| LockState::decode(&b))
            .unwrap_or_default()
    }
}

fn acquire(holder: &str, ttl_ms: u64) -> Command {
    Command::Lock(LockCommand::acquire("db", holder, ttl_ms))
}

fn fenced(token: u64) -> Command {
    Command::FencedPut {
        key: "data".into(),
        value: Bytes::from_static(b"x"),
        lock_key: lock_key("db"),
        token,
    }
}

#[test]
fn a_lease_excludes_others_until_its_expiry_by_log_time_and_tokens_increase() {
    let mut machine = Machine::new();
    machine.apply_at(1_000, acquire("a", 100)).expect("free lock is granted");
    let state = machine.lock("db");
    assert_eq!(
        (state.holder.as_deref(), state.token, state.granted_at_ms, state.expires_at_ms),
        (Some("a"), 1, 1_000, 1_100)
    );

    // One millisecond before expiry: still held, and the refusal says until when.
    match machine.apply_at(1_099, acquire("b", 100)) {
        Err(CommandFailure::LockHeld {
            holder,
            token: 1,
            expires_at_ms: 1_100,
            decided_at_ms: 1_099,
            ..
        }) => {
            assert_eq!(holder, "a")
        }
        other => panic!("expected LockHeld, got {other:?}"),
    }
    // At expiry the next acquire wins with a larger token.
    machine.apply_at(1_100, acquire("b", 100)).expect("expired lease is replaced");
    assert_eq!(machine.lock("db").token, 2);
    // The old holder can neither renew, release, nor write under its token.
    for command in [
        Command::Lock(LockCommand::renew("db", "a", 1, 100)),
        Command::Lock(LockCommand::release("db", "a", 1)),
        fenced(1),
    ] {
        assert!(matches!(machine.apply_at(1_101, command), Err(CommandFailure::LeaseLost { token: 1, .. })));
    }
    machine.apply_at(1_102, fenced(2)).expect("the current holder writes");
    assert_eq!(machine.replica.machine().get("data"), Some(Bytes::from_static(b"x")));
}

#[test]
fn renew_extends_from_the_entry_time_and_release_only_by_the_holder() {
    let mut machine = Machine::new();
    machine.apply_at(0, acquire("a", 100)).expect("granted");
    machine.apply_at(90, Command::Lock(LockCommand::renew("db", "a", 1, 100))).expect("renewed");
    assert_eq!(machine.lock("db").expires_at_ms, 190);
    assert!(machine.apply_at(150, acquire("b", 100)).is_err(), "renewed lease still holds");
    // Wrong holder with the right token, right holder with a wrong token: both refused.
    assert!(machine.apply_at(151, Command::Lock(LockCommand::release("db", "b", 1))).is_err());
    assert!(machine.apply_at(152, Command::Lock(LockCommand::release("db", "a", 7))).is_err());
    machine.apply_at(160, Command::Lock(LockCommand::release("db", "a", 1))).expect("holder releases");
    let state = machine.lock("db");
    assert_eq!((state.holder, state.token, state.expires_at_ms), (None, 1, 160));
    // A fenced write after release is refused; the next grant continues the token sequence.
    assert!(machine.apply_at(161, fenced(1)).is_err());
    machine.apply_at(161, acquire("b", 10)).expect("released lock is free");
    assert_eq!(machine.lock("db").token, 2);
    // Renew after expiry is refused even though nobody took the lock.
    assert!(matches!(
        machine.apply_at(171, Command::Lock(LockCommand::renew("db", "b", 2, 10))),
        Err(CommandFailure::LeaseLost { .. })
    ));
}

#[test]
fn lock_keys_refuse_plain_writes_and_tokens_survive_snapshots() {
    let mut machine = Machine::new();
    machine.apply_at(0, acquire("a", 10)).expect("granted");
    for command in [
        Command::Delete { key: lock_key("db") },
        Command::Put { key: lock_key("db"), value: Bytes::new() },
        Command::CompareAndSwap { key: lock_key("db"), expected: Expectation::Version(1), new: None },
        Command::Add { key: lock_key("db"), delta: 1 },
    ] {
        assert!(matches!(machine.apply_at(1, command), Err(CommandFailure::ReservedKey { .. })));
    }
    assert!(matches!(machine.apply_at(1, acquire("a", 0)), Err(CommandFailure::InvalidLock { .. })));
    assert!(matches!(
        machine.apply_at(1, acquire("a", LockCommand::TTL_MS_MAX + 1)),
        Err(CommandFailure::InvalidLock { .. })
    ));
    let mut restored = Replica::key_value(64);
    restored.restore(&machine.replica.snapshot()).expect("restore");
    assert_eq!(restored.snapshot(), machine.replica.snapshot(), "snapshots are deterministic");
    let context = ApplyContext { index: LogIndex(machine.index + 1), term: Term(1), timestamp_ms: 20 };
    restored.apply(&context, None, &acquire("b", 10)).expect("expired lease replaced after restore");
    let state = restored.machine().get(&lock_key("db")).and_then(|b| LockState::decode(&b)).expect("state");
    assert_eq!(state.token, 2, "the token continues after a snapshot");
}

#[test]
fn stamps_that_go_backwards_never_revive_an_expired_lease() {
    // Simple majority stamps with each proposer's clock, so stamps on one key may decrease.
    let mut machine = Machine::new();
    machine.apply_at(1_000, acquire("a", 100)).expect("granted");
    machine.apply_at(1_200, acquire("b", 100)).expect("a expired; b granted");
    // A stamp from a slow clock: b's lease is judged at the lock's own time (1 200), not 900.
    assert!(machine.apply_at(900, Command::Lock(LockCommand::renew("db", "a", 1, 100))).is_err());
    let state = machine.lock("db");
    assert_eq!((state.granted_at_ms, state.expires_at_ms), (1_200, 1_300));
    machine.apply_at(900, Command::Lock(LockCommand::renew("db", "b", 2, 100))).expect("renewed at 1 200");
    assert_eq!(machine.lock("db").expires_at_ms, 1_300, "renewal counts from the lock's time");
}

/// Random lock commands at random non-decreasing (and sometimes decreasing) stamps: the grants'
/// validity windows never overlap and tokens strictly increase.
#[test]
fn random_lock_histories_never_grant_overlapping_leases() {
    const SEEDS: u64 = 300;
    const COMMANDS_PER_SEED: usize = 200;
    for seed in 0..SEEDS {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut machine = Machine::new();
        let mut now = 0u64;
        // token → (granted_at, last expiry) as observed after each successful command.
        let mut windows: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
        let mut last_token = 0u64;
        for _ in 0..COMMANDS_PER_SEED {
            now = if rng.gen_bool(0.1) {
                now.saturating_sub(rng.gen_range(0..30))
            } else {
                now + rng.gen_range(0..30)
            };
            let holder = ["a", "b", "c"][rng.gen_range(0..3)];
            let token = last_token.saturating_sub(rng.gen_range(0..2));
            let command = match rng.gen_range(0..4) {
                0 | 1 => acquire(holder, rng.gen_range(1..60)),
                2 => Command::Lock(LockCommand::renew("db", holder, token, rng.gen_range(1..60))),
                _ => Command::Lock(LockCommand::release("db", holder, token)),
            };
            let fenced_result = machine.apply_at(now, fenced(token));
            if machine.apply_at(now, command).is_ok() || fenced_result.is_ok() {
                let state = machine.lock("db");
                assert!(state.token >= last_token, "seed {seed}: token went back");
                last_token = state.token;
                let window = windows.entry(state.token).or_insert((state.granted_at_ms, state.expires_at_ms));
                window.1 = state.expires_at_ms;
            }
        }
        let mut previous_end = 0;
        for (token, (start, end)) in &windows {
            assert!(
                *start >= previous_end,
                "seed {seed}: lease {token} starts at {start}, before {previous_end}"
            );
            previous_end = *end;
        }
    }
}

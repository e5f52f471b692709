//! The chaos client: concurrent processes that run reads, writes, CAS and counter adds against one
//! node's HTTP API and record every operation in the history format.
//!
//! It runs *inside* a node's network namespace (`concord-chaos client …` under `ip netns exec`),
//! so its traffic never leaves through the host's routes. Processes talk to their own node; while it
//! refuses connections (killed, restarting) they move to the other nodes in turn, over the bridge. Each process (a thread) has at most one
//! operation outstanding; after an operation of unknown outcome (`info`) the process is retired and
//! a fresh process id takes over, as in Jepsen — an `info` operation stays concurrent with
//! everything after it.
//!
//! How an HTTP outcome maps to the history (the API's error contract, crates/node/API.md):
//! - `2xx` → `ok`; a read of an absent key (`404`) → `ok` with `null`.
//! - refused before anything was proposed — the connection could not be made, `busy`,
//!   `no_quorum`, `not_leader`, `bad_request` — and a CAS whose expectation did not hold
//!   (`conflict`) → `fail`.
//! - anything else (a broken connection, `timeout`, `leadership_lost`, `stopped`, `storage`, an
//!   unexpected answer) → `info`: it may or may not have taken effect.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use concord_node::client::{ClientError, HttpClient, Response};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::format::{EventType, Function, HistoryEvent, JsonLinesWriter};

/// Register `index` of key generation `generation`.
pub fn register_key(generation: u64, index: u64) -> String {
    format!("g{generation}k{index}")
}

/// Counter `index` of key generation `generation`.
pub fn counter_key(generation: u64, index: u64) -> String {
    format!("g{generation}c{index}")
}

/// Every `(generation, index)` of a run with `generations` generations of `per_generation` keys.
pub fn generation_keys(generations: u64, per_generation: u64) -> impl Iterator<Item = (u64, u64)> {
    (0..generations).flat_map(move |generation| (0..per_generation).map(move |index| (generation, index)))
}

/// The key generations a run of `duration` uses with keys rotated every `key_period`.
pub fn generations(duration: Duration, key_period: Duration) -> u64 {
    (duration.as_nanos() / key_period.as_nanos().max(1)) as u64 + 1
}

/// Pause after a request could not connect (the node is down or restarting).
pub const CONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Operations a process runs against a fallback node before it tries its own node again.
pub const FALLBACK_OPERATIONS_MAX: u64 = 50;

/// Process ids of one client run are `first_process + thread + generation * PROCESS_STRIDE`.
pub const PROCESS_STRIDE: u64 = 1_000;

/// What one client run does.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The node's API, `http://HOST:PORT`.
    pub node: String,
    /// The node's name, recorded in each event.
    pub node_name: String,
    /// Other nodes (`(name, http://HOST:PORT)`), tried in turn while `node` refuses connections;
    /// a process goes back to its own node after [`FALLBACK_OPERATIONS_MAX`] operations elsewhere.
    pub fallbacks: Vec<(String, String)>,
    /// Concurrent processes (threads).
    pub processes: u64,
    /// The first process id; ids of different client runs must not overlap.
    pub first_process: u64,
    /// Register keys `k0…`.
    pub register_keys: u64,
    /// Counter keys `c0…`.
    pub counter_keys: u64,
    /// Clients move to fresh keys every this long (Jepsen's independent keys): each key's history
    /// stays short, so checking it stays fast however long the run.
    pub key_period: Duration,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Run until this long after `origin`.
    pub duration: Duration,
    /// Operations per process, at most.
    pub operations_max: u64,
    /// Seed of the operation mix.
    pub seed: u64,
    /// Pause between two operations of a process.
    pub think_time: Duration,
}

/// Where the events go: the history (linearizable operations) and the local reads (plain reads,
/// which may be stale by design and are only checked for values never written).
pub struct ClientOutput<W: Write> {
    /// `history.jsonl` events.
    pub history: JsonLinesWriter<W>,
    /// `local-reads.jsonl` events.
    pub local_reads: JsonLinesWriter<W>,
}

/// The clock of a run: nanoseconds since the orchestrator's origin, shared by every process on
/// the machine through the realtime clock, then advanced by the monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct RunClock {
    offset_nanos: u64,
    started: Instant,
}

impl RunClock {
    /// A clock whose zero is `origin_unix_nanos` (nanoseconds since the Unix epoch).
    pub fn new(origin_unix_nanos: u64) -> RunClock {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        RunClock { offset_nanos: now.saturating_sub(origin_unix_nanos), started: Instant::now() }
    }

    /// Nanoseconds since the origin.
    pub fn now(&self) -> u64 {
        self.offset_nanos + self.started.elapsed().as_nanos() as u64
    }
}

/// Nanoseconds since the Unix epoch (the origin the orchestrator hands to its clients).
pub fn unix_nanos_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Counts of what a client run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientTotals {
    /// Operations completed `ok`.
    pub ok: u64,
    /// Operations completed `fail`.
    pub fail: u64,
    /// Operations of unknown outcome.
    pub info: u64,
}

/// One completed request, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Completion {
    /// It took effect; the value for the history.
    Ok(Value),
    /// It certainly did not take effect.
    Fail(String),
    /// Unknown.
    Info(String),
}

/// Classifies the outcome of a request for `f` (see the module docs).
pub fn classify(f: Function, outcome: &Result<Response, ClientError>) -> Completion {
    let response = match outcome {
        Ok(response) => response,
        Err(ClientError::Connect { source, .. }) => return Completion::Fail(format!("connect: {source}")),
        Err(error) => {
            return if f == Function::Read {
                Completion::Fail(error.to_string())
            } else {
                Completion::Info(error.to_string())
            }
        }
    };
    let body = response.json();
    if response.is_success() {
        if f == Function::Add && !body.get("value").is_some_and(Value::is_i64) {
            // The history needs the counter's value after an add; without it the outcome is
            // all we know.
            return Completion::Info("add answered without the counter's value".into());
        }
        let value = match f {
            Function::Read | Function::Add => body.get("value").cloned().unwrap_or(Value::Null),
            Function::Write | Function::Cas => Value::Null,
        };
        return Completion::Ok(value);
    }
    let code = body.get("code").and_then(Value::as_str).unwrap_or("").to_owned();
    if f == Function::Read {
        if response.status == 404 && code == "not_found" {
            return Completion::Ok(Value::Null);
        }
        // A read has no effect either way.
        return Completion::Fail(format!("{} {code}", response.status));
    }
    match code.as_str() {
        "busy" | "no_quorum" | "not_leader" | "bad_request" => Completion::Fail(code),
        "conflict" if f == Function::Cas => Completion::Fail(code),
        _ => Completion::Info(format!("{} {code}", response.status)),
    }
}

/// Runs the client processes until the duration ends, `stop` is set or every process did
/// `operations_max` operations; events are written as they complete.
pub fn run<W: Write + Send>(
    options: &ClientOptions,
    clock: RunClock,
    output: ClientOutput<W>,
    stop: &AtomicBool,
) -> Result<ClientTotals, String> {
    let mut targets = vec![(
        options.node_name.clone(),
        HttpClient::new(&options.node, options.request_timeout).map_err(|error| error.to_string())?,
    )];
    for (name, url) in &options.fallbacks {
        targets.push((
            name.clone(),
            HttpClient::new(url, options.request_timeout).map_err(|error| error.to_string())?,
        ));
    }
    let output = Arc::new(Mutex::new(output));
    let totals = Mutex::new(ClientTotals::default());
    let deadline = options.duration.as_nanos() as u64;
    std::thread::scope(|scope| {
        for thread in 0..options.processes {
            let targets = targets.clone();
            let output = Arc::clone(&output);
            let totals = &totals;
            scope.spawn(move || {
                let mut process = Process {
                    options,
                    targets,
                    current: 0,
                    away: 0,
                    clock,
                    id: options.first_process + thread,
                    rng: ChaCha8Rng::seed_from_u64(options.seed ^ (options.first_process + thread) << 16),
                    next_value: 0,
                    known: Default::default(),
                    refused: false,
                };
                let mut done = ClientTotals::default();
                for _ in 0..options.operations_max {
                    if stop.load(Ordering::Relaxed) || clock.now() >= deadline {
                        break;
                    }
                    match process.step(&output) {
                        EventType::Ok => done.ok += 1,
                        EventType::Fail => done.fail += 1,
                        _ => {
                            done.info += 1;
                            process.id += PROCESS_STRIDE;
                        }
                    }
                    // A node that is down refuses at once: try the next node, and wait a little
                    // instead of spinning.
                    let pause = if process.refused {
                        process.current = (process.current + 1) % process.targets.len();
                        process.away = 0;
                        CONNECT_BACKOFF
                    } else {
                        options.think_time
                    };
                    if process.current != 0 {
                        process.away += 1;
                        if process.away >= FALLBACK_OPERATIONS_MAX {
                            process.current = 0;
                        }
                    }
                    std::thread::sleep(pause);
                }
                let mut totals = totals.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                totals.ok += done.ok;
                totals.fail += done.fail;
                totals.info += done.info;
            });
        }
    });
    let mut output = output.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    output.history.flush().map_err(|error| error.to_string())?;
    output.local_reads.flush().map_err(|error| error.to_string())?;
    Ok(totals.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// One client process.
struct Process<'a> {
    options: &'a ClientOptions,
    /// Its own node first, then the fallbacks: `(name, client)`.
    targets: Vec<(String, HttpClient)>,
    /// The target in use.
    current: usize,
    /// Operations run on a fallback since leaving its own node.
    away: u64,
    clock: RunClock,
    id: u64,
    rng: ChaCha8Rng,
    next_value: u64,
    /// The last value this process saw per register key (its CAS guesses).
    known: std::collections::BTreeMap<String, Value>,
    /// The last request could not connect.
    refused: bool,
}

impl Process<'_> {
    fn unique_value(&mut self) -> Value {
        self.next_value += 1;
        // Unique across the run: process ids never repeat, values never repeat within one.
        json!(self.id * 1_000_000 + self.next_value)
    }

    fn step<W: Write>(&mut self, output: &Mutex<ClientOutput<W>>) -> EventType {
        let generation = self.clock.now() / (self.options.key_period.as_nanos() as u64).max(1);
        let register = register_key(generation, self.rng.gen_range(0..self.options.register_keys.max(1)));
        let roll = self.rng.gen_range(0..100);
        let (f, key, value, local, method, path, body) = if roll < 10 && self.options.counter_keys > 0 {
            let key = counter_key(generation, self.rng.gen_range(0..self.options.counter_keys));
            let delta = self.rng.gen_range(1..=5);
            let path = format!("/v1/counter/{key}/add");
            (Function::Add, key, json!(delta), false, "POST", path, Some(json!({ "delta": delta })))
        } else if roll < 40 {
            let path = format!("/v1/kv/{register}?consistent=true");
            (Function::Read, register, Value::Null, false, "GET", path, None)
        } else if roll < 50 {
            let path = format!("/v1/kv/{register}");
            (Function::Read, register, Value::Null, true, "GET", path, None)
        } else if roll < 80 {
            let value = self.unique_value();
            let path = format!("/v1/kv/{register}");
            (Function::Write, register, value.clone(), false, "PUT", path, Some(value))
        } else {
            let expected = self.known.get(&register).cloned().unwrap_or(Value::Null);
            let new = self.unique_value();
            let path = format!("/v1/kv/{register}/cas");
            let body = json!({ "expected": expected, "value": new });
            (Function::Cas, register, json!([expected, new]), false, "POST", path, Some(body))
        };
        let event = |event_type, value, time, error| HistoryEvent {
            process: self.id,
            event_type,
            f,
            key: key.clone(),
            value,
            time,
            node: Some(self.targets[self.current].0.clone()),
            error,
        };
        let invoke = event(EventType::Invoke, value.clone(), self.clock.now(), None);
        let body_bytes = body.as_ref().map(|body| body.to_string().into_bytes());
        let outcome = self.targets[self.current].1.request(method, &path, body_bytes.as_deref());
        let completion = classify(f, &outcome);
        self.refused = matches!(outcome, Err(ClientError::Connect { .. }));
        let time = self.clock.now();
        let (event_type, completion_value, error) = match completion {
            Completion::Ok(read) => {
                let recorded = match f {
                    Function::Read | Function::Add => read,
                    Function::Write | Function::Cas => value.clone(),
                };
                (EventType::Ok, recorded, None)
            }
            Completion::Fail(error) => (EventType::Fail, value.clone(), Some(error)),
            Completion::Info(error) => (EventType::Info, value.clone(), Some(error)),
        };
        let completed = event(event_type, completion_value.clone(), time, error);
        if event_type == EventType::Ok {
            match f {
                Function::Read => {
                    self.known.insert(key.clone(), completion_value);
                }
                Function::Write => {
                    self.known.insert(key.clone(), value);
                }
                Function::Cas => {
                    self.known.insert(key.clone(), value.get(1).cloned().unwrap_or(Value::Null));
                }
                _ => {}
            }
        }
        let mut output = output.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let writer = if local { &mut output.local_reads } else { &mut output.history };
        // A full disk loses history lines; the checker then reports the history as malformed.
        let _ = writer.write(&invoke);
        let _ = writer.write(&completed);
        event_type
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, body: Value) -> Result<Response, ClientError> {
        Ok(Response { status, body: body.to_string().into_bytes() })
    }

    #[test]
    fn outcomes_are_classified_by_the_api_contract() {
        assert_eq!(classify(Function::Read, &response(200, json!({"value": 3}))), Completion::Ok(json!(3)));
        assert_eq!(
            classify(Function::Read, &response(404, json!({"code": "not_found"}))),
            Completion::Ok(Value::Null)
        );
        assert_eq!(classify(Function::Add, &response(200, json!({"value": 9}))), Completion::Ok(json!(9)));
        assert!(matches!(classify(Function::Add, &response(200, json!({"key": "c0"}))), Completion::Info(_)));
        assert!(matches!(
            classify(Function::Write, &response(503, json!({"code": "no_quorum"}))),
            Completion::Fail(_)
        ));
        assert!(matches!(
            classify(Function::Cas, &response(409, json!({"code": "conflict"}))),
            Completion::Fail(_)
        ));
        // Only a CAS conflict is a definite failure here; any other write's conflict stays unknown.
        assert!(matches!(
            classify(Function::Add, &response(409, json!({"code": "conflict"}))),
            Completion::Info(_)
        ));
        assert!(matches!(
            classify(Function::Write, &response(504, json!({"code": "timeout"}))),
            Completion::Info(_)
        ));
        assert!(matches!(
            classify(Function::Write, &response(503, json!({"code": "leadership_lost"}))),
            Completion::Info(_)
        ));
        let refused = Err(ClientError::Connect {
            address: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        });
        assert!(matches!(classify(Function::Write, &refused), Completion::Fail(_)));
        let broken = Err(ClientError::Io {
            address: "x".into(),
            source: std::io::Error::from(std::io::ErrorKind::TimedOut),
        });
        assert!(matches!(classify(Function::Write, &broken), Completion::Info(_)));
        assert!(matches!(classify(Function::Read, &broken), Completion::Fail(_)));
    }

    #[test]
    fn run_clock_counts_from_the_origin() {
        let origin = unix_nanos_now() - 5_000_000_000;
        let clock = RunClock::new(origin);
        let now = clock.now();
        assert!((5_000_000_000..6_000_000_000).contains(&now), "{now}");
        assert!(clock.now() >= now);
    }
}

//! The `concord` command line: `serve`, and client commands over the HTTP API.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

use crate::client::{ClientError, HttpClient, Response};
use crate::serve::ServeArgs;

/// Exit code: the request failed (the node answered with an error).
pub const EXIT_REQUEST_FAILED: u8 = 1;
/// Exit code: bad usage (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the node could not be reached or answered garbage.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the key does not exist (`kv get`).
pub const EXIT_NOT_FOUND: u8 = 4;

/// The concord node and its client.
#[derive(Parser, Debug)]
#[command(name = "concord", version, about = "Run a concord node, or talk to one over its HTTP API")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a cluster member (peer transport + client API) until SIGTERM or ctrl-c.
    Serve(Box<ServeArgs>),
    /// Read and write JSON values.
    Kv {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// The operation.
        #[command(subcommand)]
        command: KvCommand,
    },
    /// Atomic i64 counters.
    Counter {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// The operation.
        #[command(subcommand)]
        command: CounterCommand,
    },
    /// The node's state: role, term, leader, commit index.
    Status {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Leases with fencing tokens.
    Lock {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// The operation.
        #[command(subcommand)]
        command: LockCommandLine,
    },
    /// Print a key's changes as they are applied (WebSocket `/v1/watch/{key}`).
    Watch {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// The key.
        key: String,
        /// Stop after this many changes (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print the node's events as they happen (WebSocket `/v1/events`).
    Events {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// Stop after this many events (default: until interrupted).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Cluster membership.
    Members {
        /// The node to ask.
        #[command(flatten)]
        target: Target,
        /// The operation.
        #[command(subcommand)]
        command: MembersCommand,
    },
}

/// Which node a client command talks to, and how it prints.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// The node's client API.
    #[arg(long, global = true, env = "CONCORD_NODE", default_value = "http://127.0.0.1:7001")]
    pub node: String,
    /// Print the node's JSON answer instead of readable text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many milliseconds.
    #[arg(long, global = true, default_value_t = 15_000)]
    pub timeout_ms: u64,
}

/// `concord kv …`
#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Print a key's value.
    Get {
        /// The key.
        key: String,
        /// Linearizable read (confirmed with the leader) instead of this node's local state.
        #[arg(long)]
        consistent: bool,
    },
    /// Set a key. VALUE is JSON (`42`, `'{"a":1}'`, `'"text"'`); text that is not JSON is stored as a
    /// JSON string.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// Set a key only if its value is EXPECTED (omit --expected: only if absent).
    Cas {
        /// The key.
        key: String,
        /// The value expected now (JSON, like `put`); omitted means "absent".
        #[arg(long)]
        expected: Option<String>,
        /// The new value (JSON, like `put`); omitted means "delete".
        #[arg(long)]
        value: Option<String>,
    },
}

/// `concord counter …`
#[derive(Subcommand, Debug)]
pub enum CounterCommand {
    /// Add DELTA (may be negative) and print the new value.
    Add {
        /// The counter's key.
        key: String,
        /// The amount.
        #[arg(allow_hyphen_values = true)]
        delta: i64,
    },
    /// Print a counter's value.
    Get {
        /// The counter's key.
        key: String,
        /// Linearizable read.
        #[arg(long)]
        consistent: bool,
    },
}

/// `concord lock …`
#[derive(Subcommand, Debug)]
pub enum LockCommandLine {
    /// Take the lock if it is free; prints the holder and the fencing token.
    Acquire {
        /// The lock's name.
        name: String,
        /// Lease length in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
        /// Holder name (default: generated by the node).
        #[arg(long)]
        holder: Option<String>,
    },
    /// Extend a lease.
    Renew {
        /// The lock's name.
        name: String,
        /// The holder printed by `acquire`.
        #[arg(long)]
        holder: String,
        /// The fencing token printed by `acquire`.
        #[arg(long)]
        token: u64,
        /// New lease length from now, in milliseconds.
        #[arg(long, default_value_t = 10_000)]
        ttl_ms: u64,
    },
    /// End a lease.
    Release {
        /// The lock's name.
        name: String,
        /// The holder printed by `acquire`.
        #[arg(long)]
        holder: String,
        /// The fencing token printed by `acquire`.
        #[arg(long)]
        token: u64,
    },
}

/// `concord members …`
#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// List members, their addresses, and who leads.
    List,
    /// Add a member (`ID` reachable at peer `ADDRESS`).
    Add {
        /// The new node's id.
        id: String,
        /// Its peer address (`ws://…` or `tcp://…`).
        address: String,
    },
    /// Remove a member.
    Remove {
        /// The node's id.
        id: String,
    },
}

/// The result of a client command: what to print and the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Printed on stdout (success) or stderr (failure).
    pub text: String,
    /// The process exit code.
    pub exit_code: u8,
}

fn json_argument(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// Percent-encodes a key for a URL path segment.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for byte in key.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:@".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn compact(value: &Value) -> String {
    value.to_string()
}

/// Runs a client command (everything but `serve`).
pub fn run_client(command: Command) -> Outcome {
    let (target, request) = match plan(command) {
        Ok(planned) => planned,
        Err(outcome) => return outcome,
    };
    let client = match HttpClient::new(&target.node, Duration::from_millis(target.timeout_ms)) {
        Ok(client) => client,
        Err(error) => return Outcome { text: format!("error: {error}"), exit_code: EXIT_USAGE },
    };
    let body = request.body.as_ref().map(|body| body.to_string().into_bytes());
    match client.request(request.method, &request.path, body.as_deref()) {
        Ok(response) => render(&target, &request, &response),
        Err(
            error @ (ClientError::Connect { .. } | ClientError::Io { .. } | ClientError::Malformed { .. }),
        ) => Outcome { text: format!("error: {error}"), exit_code: EXIT_UNREACHABLE },
        Err(error) => Outcome { text: format!("error: {error}"), exit_code: EXIT_USAGE },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    KvGet,
    KvWrite,
    Cas,
    Counter,
    Status,
    Members,
    MembersChange,
    Lock,
}

struct Request {
    method: &'static str,
    path: String,
    body: Option<Value>,
    kind: Kind,
}

fn plan(command: Command) -> Result<(Target, Request), Outcome> {
    let request = |method, path: String, body, kind| Request { method, path, body, kind };
    let consistent = |flag: bool| if flag { "?consistent=true" } else { "" };
    Ok(match command {
        Command::Serve(_) => {
            return Err(Outcome {
                text: "error: serve is not a client command".into(),
                exit_code: EXIT_USAGE,
            })
        }
        Command::Kv { target, command } => {
            let planned = match command {
                KvCommand::Get { key, consistent: flag } => request(
                    "GET",
                    format!("/v1/kv/{}{}", encode_key(&key), consistent(flag)),
                    None,
                    Kind::KvGet,
                ),
                KvCommand::Put { key, value } => request(
                    "PUT",
                    format!("/v1/kv/{}", encode_key(&key)),
                    Some(json_argument(&value)),
                    Kind::KvWrite,
                ),
                KvCommand::Del { key } => {
                    request("DELETE", format!("/v1/kv/{}", encode_key(&key)), None, Kind::KvWrite)
                }
                KvCommand::Cas { key, expected, value } => request(
                    "POST",
                    format!("/v1/kv/{}/cas", encode_key(&key)),
                    Some(json!({
                        "expected": expected.as_deref().map(json_argument),
                        "value": value.as_deref().map(json_argument),
                    })),
                    Kind::Cas,
                ),
            };
            (target, planned)
        }
        Command::Counter { target, command } => {
            let planned = match command {
                CounterCommand::Add { key, delta } => request(
                    "POST",
                    format!("/v1/counter/{}/add", encode_key(&key)),
                    Some(json!({ "delta": delta })),
                    Kind::Counter,
                ),
                CounterCommand::Get { key, consistent: flag } => request(
                    "GET",
                    format!("/v1/counter/{}{}", encode_key(&key), consistent(flag)),
                    None,
                    Kind::Counter,
                ),
            };
            (target, planned)
        }
        Command::Lock { target, command } => {
            let planned = match command {
                LockCommandLine::Acquire { name, ttl_ms, holder } => request(
                    "POST",
                    format!("/v1/lock/{}/acquire", encode_key(&name)),
                    Some(json!({ "ttl_ms": ttl_ms, "holder": holder })),
                    Kind::Lock,
                ),
                LockCommandLine::Renew { name, holder, token, ttl_ms } => request(
                    "POST",
                    format!("/v1/lock/{}/renew", encode_key(&name)),
                    Some(json!({ "holder": holder, "token": token, "ttl_ms": ttl_ms })),
                    Kind::Lock,
                ),
                LockCommandLine::Release { name, holder, token } => request(
                    "POST",
                    format!("/v1/lock/{}/release", encode_key(&name)),
                    Some(json!({ "holder": holder, "token": token })),
                    Kind::MembersChange,
                ),
            };
            (target, planned)
        }
        Command::Watch { .. } | Command::Events { .. } => {
            return Err(Outcome {
                text: "error: watch and events stream; use run_stream".into(),
                exit_code: EXIT_USAGE,
            })
        }
        Command::Status { target } => (target, request("GET", "/v1/status".into(), None, Kind::Status)),
        Command::Members { target, command } => {
            let planned = match command {
                MembersCommand::List => request("GET", "/v1/members".into(), None, Kind::Members),
                MembersCommand::Add { id, address } => request(
                    "POST",
                    "/v1/members".into(),
                    Some(json!({ "id": id, "address": address })),
                    Kind::MembersChange,
                ),
                MembersCommand::Remove { id } => {
                    request("DELETE", format!("/v1/members/{}", encode_key(&id)), None, Kind::MembersChange)
                }
            };
            (target, planned)
        }
    })
}

fn render(target: &Target, request: &Request, response: &Response) -> Outcome {
    let body = response.json();
    if !response.is_success() {
        let code = body.get("code").and_then(Value::as_str).unwrap_or("error");
        let exit_code = if code == "not_found" && request.kind == Kind::KvGet {
            EXIT_NOT_FOUND
        } else {
            EXIT_REQUEST_FAILED
        };
        let text = if target.json {
            compact(&body)
        } else {
            let message = body
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&response.body).into_owned());
            format!("error ({code}, HTTP {}): {message}", response.status)
        };
        return Outcome { text, exit_code };
    }
    if target.json {
        return Outcome { text: compact(&body), exit_code: 0 };
    }
    let text = match request.kind {
        Kind::KvGet => compact(&body["value"]),
        Kind::KvWrite => format!("OK (version {})", body["version"]),
        Kind::Cas => format!("swapped (version {})", body["version"]),
        Kind::Counter => body["value"].to_string(),
        Kind::MembersChange => "OK".into(),
        Kind::Lock => format!(
            "holder {} token {} expires_at_ms {}",
            body["holder"].as_str().unwrap_or("?"),
            body["token"],
            body["expires_at_ms"]
        ),
        Kind::Status => {
            let leader = body["leader_id"].as_str().unwrap_or("none");
            format!(
                "node {}  role {}  term {}  leader {}  commit {}  applied {}",
                body["node_id"].as_str().unwrap_or("?"),
                body["role"].as_str().unwrap_or("?"),
                body["current_term"],
                leader,
                body["commit_index"],
                body["last_applied"],
            )
        }
        Kind::Members => {
            let mut lines = Vec::new();
            for member in body["members"].as_array().into_iter().flatten() {
                let mut flags = Vec::new();
                if member["leader"].as_bool() == Some(true) {
                    flags.push("leader");
                }
                flags.push(if member["connected"].as_bool() == Some(true) {
                    "connected"
                } else {
                    "unreachable"
                });
                lines.push(format!(
                    "{}\t{}\t{}",
                    member["id"].as_str().unwrap_or("?"),
                    member["address"].as_str().unwrap_or(""),
                    flags.join(",")
                ));
            }
            lines.join("\n")
        }
    };
    Outcome { text, exit_code: 0 }
}

/// Runs `watch` or `events`: prints one line per change or event as it arrives.
pub fn run_stream(command: Command) -> Outcome {
    let (target, path, count, key_watch) = match command {
        Command::Watch { target, key, count } => {
            (target, format!("/v1/watch/{}", encode_key(&key)), count, true)
        }
        Command::Events { target, count } => (target, "/v1/events".to_owned(), count, false),
        _ => return Outcome { text: "error: not a streaming command".into(), exit_code: EXIT_USAGE },
    };
    let client = match HttpClient::new(&target.node, Duration::from_millis(target.timeout_ms)) {
        Ok(client) => client,
        Err(error) => return Outcome { text: format!("error: {error}"), exit_code: EXIT_USAGE },
    };
    let url = format!("ws://{}{path}", client.host_port());
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return Outcome { text: format!("error: {error}"), exit_code: EXIT_REQUEST_FAILED },
    };
    runtime.block_on(stream(url, target, count, key_watch))
}

async fn stream(url: String, target: Target, count: Option<u64>, key_watch: bool) -> Outcome {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let connect = tokio_tungstenite::connect_async(url.as_str());
    let mut socket = match tokio::time::timeout(Duration::from_millis(target.timeout_ms), connect).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(error)) => {
            return Outcome {
                text: format!("error: cannot watch {url}: {error}"),
                exit_code: EXIT_UNREACHABLE,
            }
        }
        Err(_) => {
            return Outcome {
                text: format!("error: cannot watch {url}: timed out"),
                exit_code: EXIT_UNREACHABLE,
            }
        }
    };
    let mut seen = 0u64;
    while count.map_or(true, |count| seen < count) {
        let message = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                if count.is_some() {
                    return Outcome {
                        text: format!("error: the node closed the stream after {seen} messages"),
                        exit_code: EXIT_UNREACHABLE,
                    };
                }
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                return Outcome { text: format!("error: stream broke: {error}"), exit_code: EXIT_UNREACHABLE }
            }
        };
        let body: Value = serde_json::from_str(message.as_str()).unwrap_or(Value::Null);
        if body["type"] == "subscribed" {
            if !target.json {
                eprintln!("watching {url}");
            }
            continue;
        }
        seen += 1;
        let line = if target.json {
            compact(&body)
        } else if key_watch && body["deleted"] == true {
            format!("{} deleted (version {})", body["key"].as_str().unwrap_or("?"), body["version"])
        } else if key_watch {
            format!(
                "{} = {} (version {})",
                body["key"].as_str().unwrap_or("?"),
                compact(&body["value"]),
                body["version"]
            )
        } else {
            format!("{} {}", body["name"].as_str().unwrap_or("?"), compact(&body["event"]))
        };
        println!("{line}");
    }
    Outcome { text: String::new(), exit_code: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_percent_encoded() {
        assert_eq!(encode_key("player_score"), "player_score");
        assert_eq!(encode_key("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn values_that_are_not_json_become_strings() {
        assert_eq!(json_argument("42"), json!(42));
        assert_eq!(json_argument("hello"), json!("hello"));
        assert_eq!(json_argument(r#"{"a":1}"#), json!({"a": 1}));
    }

    #[test]
    fn command_line_parses() {
        let cli =
            Cli::try_parse_from(["concord", "kv", "put", "k", "1", "--node", "http://127.0.0.1:9", "--json"])
                .unwrap();
        let Command::Kv { target, command: KvCommand::Put { key, value } } = cli.command else { panic!() };
        assert_eq!((key.as_str(), value.as_str(), target.json), ("k", "1", true));
        assert!(Cli::try_parse_from(["concord", "counter", "add", "c", "-3"]).is_ok());
    }
}

//! The client API: HTTP + JSON over axum. See `API.md` for the contract.
//!
//! Values are JSON. They are stored as compact JSON text (objects with sorted keys), so any
//! language reading the replicated state sees JSON, and compare-and-swap compares JSON values
//! byte for byte. Counters are the runtime's i64 counters and are read through `/v1/counter`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_core::command::{Command, CommandFailure, Expectation, LockCommand, LockState};
use concord_core::error::ProposalError;
use concord_core::event::{ProposalResult, Role};
use concord_core::id::NodeInfo;
use concord_core::state_machine::KvStateMachine;
use concord_runtime::Consensus;
use serde::Deserialize;
use serde_json::{json, Value};

/// Default largest request body, in bytes (`--max-request-bytes`).
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    proposals_accepted: AtomicU64,
    proposals_failed: AtomicU64,
    reads: AtomicU64,
    proposal_micros_sum: AtomicU64,
    proposals_timed: AtomicU64,
}

impl Metrics {
    fn time_proposal(&self, started: std::time::Instant) {
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.proposal_micros_sum.fetch_add(micros, Ordering::Relaxed);
        self.proposals_timed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the peer transport's counters, as `(metric suffix, value)` pairs.
pub type TransportStats = Box<dyn Fn() -> Vec<(&'static str, u64)> + Send + Sync>;

/// What every handler shares.
pub struct ApiState {
    consensus: Consensus,
    peer_address: String,
    metrics: Metrics,
    transport_stats: TransportStats,
    /// Set when the node shuts down: open WebSocket streams close with a close frame.
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Makes generated lock holder names unique across restarts of this node.
    holder_nonce: u64,
    next_holder: AtomicU64,
    /// Test only (feature `unsafe-test-broken`): answer writes before they commit.
    #[cfg(feature = "unsafe-test-broken")]
    ack_before_commit: std::sync::atomic::AtomicBool,
}

impl ApiState {
    /// State for the API of `consensus`, whose peer transport listens on `peer_address` and
    /// reports `transport_stats` on `/metrics`.
    pub fn new(consensus: Consensus, peer_address: String, transport_stats: TransportStats) -> Arc<ApiState> {
        // Not protocol state: only keeps holder names of two runs of this node apart.
        let holder_nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Arc::new(ApiState {
            consensus,
            peer_address,
            metrics: Metrics::default(),
            transport_stats,
            shutdown: tokio::sync::watch::channel(false).0,
            holder_nonce,
            next_holder: AtomicU64::new(1),
            #[cfg(feature = "unsafe-test-broken")]
            ack_before_commit: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// TEST ONLY: makes plain writes (`PUT`, `DELETE`, counter add without `Idempotency-Key`)
    /// answer success as soon as they are handed to the node, before they commit — a deliberately
    /// broken node for `cargo xtask chaos --broken`, whose checker must then report lost writes.
    #[cfg(feature = "unsafe-test-broken")]
    pub fn set_unsafe_ack_before_commit(&self, enabled: bool) {
        self.ack_before_commit.store(enabled, Ordering::Relaxed);
    }
}

/// An error answered as `{ "code": …, "message": … }` with a matching status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    extra: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), extra: None }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn from_body_rejection(rejection: BytesRejection) -> ApiError {
        let status = rejection.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE { "payload_too_large" } else { "bad_request" };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<ProposalError> for ApiError {
    fn from(error: ProposalError) -> ApiError {
        let status = match &error {
            ProposalError::Invalid(_) => StatusCode::BAD_REQUEST,
            ProposalError::Command(_) | ProposalError::Rejected { .. } => StatusCode::CONFLICT,
            ProposalError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProposalError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProposalError::Unsupported { .. } => StatusCode::NOT_IMPLEMENTED,
            ProposalError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            // not_leader, no_quorum, leadership_lost, stopped: try again (or elsewhere) later.
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let extra = match &error {
            ProposalError::NotLeader { leader } => Some(json!({ "leader": leader })),
            _ => None,
        };
        ApiError { status, code: error.code(), message: error.to_string(), extra }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "code": self.code, "message": self.message });
        if let (Some(Value::Object(extra)), Value::Object(map)) = (self.extra, &mut body) {
            map.extend(extra);
        }
        (self.status, Json(body)).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The API's routes, with request bodies limited to `request_bytes_max`.
pub fn router(state: Arc<ApiState>, request_bytes_max: usize) -> Router {
    Router::new()
        .route("/v1/kv/{key}", get(kv_get).put(kv_put).delete(kv_delete))
        .route("/v1/kv/{key}/cas", post(kv_cas))
        .route("/v1/counter/{key}", get(counter_get))
        .route("/v1/counter/{key}/add", post(counter_add))
        .route("/v1/batch", post(batch))
        .route("/v1/status", get(status))
        .route("/v1/members", get(members_list).post(members_add))
        .route("/v1/members/{id}", axum::routing::delete(members_remove))
        .route("/v1/lock/{name}/acquire", post(lock_acquire))
        .route("/v1/lock/{name}/renew", post(lock_renew))
        .route("/v1/lock/{name}/release", post(lock_release))
        .route("/v1/watch/{key}", get(watch_key))
        .route("/v1/events", get(watch_events))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(request_bytes_max))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see API.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}

fn parse_json<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(ApiError::from_body_rejection)?;
    serde_json::from_slice(&body)
        .map_err(|error| ApiError::bad_request(format!("invalid JSON body: {error}")))
}

fn wants_consistent(query: &Option<String>) -> Result<bool, ApiError> {
    let Some(query) = query else { return Ok(false) };
    let mut consistent = false;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "true")) {
            ("consistent", "true" | "1") => consistent = true,
            ("consistent", "false" | "0") => consistent = false,
            (name, value) => {
                return Err(ApiError::bad_request(format!("unknown query parameter {name}={value}")))
            }
        }
    }
    Ok(consistent)
}

/// Encodes a JSON value the way the API stores it: compact, object keys sorted.
pub fn encode_json(value: &Value) -> Bytes {
    // serde_json's Map is a BTreeMap without the preserve_order feature, so keys come out sorted.
    Bytes::from(value.to_string())
}

fn decode_json(key: &str, bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|_| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_json",
            format!("key {key:?} holds bytes that are not JSON (a counter? read it at /v1/counter/{key})"),
        )
    })
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("node", self.consensus.node_id())
            .field("peer_address", &self.peer_address)
            .finish_non_exhaustive()
    }
}

impl ApiState {
    /// Closes open WebSocket streams (`watch`, `events`) with a close frame; call on shutdown.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    async fn read(&self, key: &str, consistent: bool) -> Result<Option<Bytes>, ApiError> {
        self.metrics.reads.fetch_add(1, Ordering::Relaxed);
        if consistent {
            Ok(self.consensus.read_bytes(key).await?)
        } else {
            Ok(self.consensus.get_bytes(key))
        }
    }

    /// Runs `command` once per `Idempotency-Key`: the record and the command commit atomically in
    /// one batch, so a retry (to any node) finds the record and applies nothing.
    async fn propose_once(
        &self,
        idempotency: Option<Idempotency>,
        command: Command,
    ) -> Result<Applied, ApiError> {
        let Some(idempotency) = idempotency else {
            return self.propose(command).await.map(|result| Applied::Fresh(Box::new(result)));
        };
        let was_batch = matches!(command, Command::Batch(_));
        let mut commands = vec![Command::CompareAndSwap {
            key: idempotency.record_key.clone(),
            expected: Expectation::Value(None),
            new: Some(idempotency.fingerprint.clone()),
        }];
        match command {
            Command::Batch(inner) => commands.extend(inner),
            other => commands.push(other),
        }
        let started = std::time::Instant::now();
        let result = self.consensus.propose_command(Command::Batch(commands)).await;
        self.metrics.time_proposal(started);
        if result.accepted {
            self.metrics.proposals_accepted.fetch_add(1, Ordering::Relaxed);
            let mut result = result;
            if let Some(output) = result.output.as_mut() {
                if !output.changes.is_empty() {
                    output.changes.remove(0);
                }
            }
            return Ok(Applied::Fresh(Box::new(result)));
        }
        self.metrics.proposals_failed.fetch_add(1, Ordering::Relaxed);
        let error = result.error.unwrap_or(ProposalError::Rejected { reason: "not accepted".into() });
        let ProposalError::Command(CommandFailure::BatchAborted { position, reason }) = error else {
            return Err(error.into());
        };
        if position == 0 {
            if let CommandFailure::CompareFailed { current, .. } = &*reason {
                if current.value.as_ref() == Some(&idempotency.fingerprint) {
                    return Ok(Applied::Replayed);
                }
            }
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request",
            ));
        }
        let failure =
            if was_batch { CommandFailure::BatchAborted { position: position - 1, reason } } else { *reason };
        Err(ProposalError::Command(failure).into())
    }

    /// Runs `command`; an accepted result, or its error.
    async fn propose(&self, command: Command) -> Result<ProposalResult, ApiError> {
        #[cfg(feature = "unsafe-test-broken")]
        if self.ack_before_commit.load(Ordering::Relaxed) {
            let key = command.key().to_owned();
            let consensus = self.consensus.clone();
            tokio::spawn(async move { consensus.propose_command(command).await });
            let id = concord_core::id::ProposalId { origin: self.consensus.node_id().clone(), sequence: 0 };
            let mut result =
                ProposalResult::failed(id, key, ProposalError::Rejected { reason: String::new() });
            result.accepted = true;
            result.error = None;
            return Ok(result);
        }
        let started = std::time::Instant::now();
        let result = self.consensus.propose_command(command).await;
        self.metrics.time_proposal(started);
        if result.accepted {
            self.metrics.proposals_accepted.fetch_add(1, Ordering::Relaxed);
            return Ok(result);
        }
        self.metrics.proposals_failed.fetch_add(1, Ordering::Relaxed);
        let error = result.error.unwrap_or(ProposalError::Rejected { reason: "not accepted".into() });
        Err(error.into())
    }
}

/// Prefix of the replicated records that make `Idempotency-Key` writes apply once.
pub const IDEMPOTENCY_KEY_PREFIX: &str = "idempotency:";
/// Longest `Idempotency-Key` header accepted, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// A write's `Idempotency-Key` and the fingerprint of the request it belongs to.
#[derive(Debug, Clone)]
struct Idempotency {
    record_key: String,
    fingerprint: Bytes,
}

impl Idempotency {
    fn from_headers(
        headers: &HeaderMap,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Self>, ApiError> {
        let Some(value) = headers.get("idempotency-key") else { return Ok(None) };
        let key = value
            .to_str()
            .ok()
            .filter(|key| !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_BYTES_MAX)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} visible ASCII characters"
                ))
            })?;
        // FNV-1a: stable across nodes and versions, unlike std's hasher.
        let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x100_0000_01b3)
        });
        let fingerprint =
            json!({ "request": format!("{method} {path}"), "body_fnv1a": format!("{hash:016x}") });
        Ok(Some(Idempotency {
            record_key: format!("{IDEMPOTENCY_KEY_PREFIX}{key}"),
            fingerprint: encode_json(&fingerprint),
        }))
    }
}

/// What an idempotent write did.
#[derive(Debug)]
enum Applied {
    /// Applied now (with the idempotency record's change removed from the output).
    Fresh(Box<ProposalResult>),
    /// An earlier request with the same key and body was applied; nothing was done now.
    Replayed,
}

fn first_version(result: &ProposalResult) -> u64 {
    result.output.as_ref().and_then(|output| output.changes.first()).map_or(0, |change| change.version)
}

async fn kv_get(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let consistent = wants_consistent(&query)?;
    match state.read(&key, consistent).await? {
        Some(bytes) => {
            let value = decode_json(&key, &bytes)?;
            Ok(Json(json!({ "key": key, "value": value, "version": state.consensus.version(&key) })))
        }
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("key {key:?} does not exist"))),
    }
}

fn write_response(state: &ApiState, key: &str, applied: Applied) -> Json<Value> {
    match applied {
        Applied::Fresh(result) => {
            Json(json!({ "key": key, "version": first_version(&result), "index": result.index }))
        }
        Applied::Replayed => {
            Json(json!({ "key": key, "version": state.consensus.version(key), "replayed": true }))
        }
    }
}

async fn kv_put(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let body = body.map_err(ApiError::from_body_rejection)?;
    let idempotency = Idempotency::from_headers(&headers, "PUT", &key, &body)?;
    let value: Value = parse_json(Ok(body))?;
    let applied = state
        .propose_once(idempotency, Command::Put { key: key.clone(), value: encode_json(&value) })
        .await?;
    Ok(write_response(&state, &key, applied))
}

async fn kv_delete(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let idempotency = Idempotency::from_headers(&headers, "DELETE", &key, &[])?;
    let applied = state.propose_once(idempotency, Command::Delete { key: key.clone() }).await?;
    Ok(write_response(&state, &key, applied))
}

/// `POST /v1/kv/{key}/cas` body. `expected: null` (or absent) means "the key is absent";
/// `value: null` (or absent) deletes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CasRequest {
    #[serde(default)]
    expected: Option<Value>,
    #[serde(default)]
    expected_version: Option<u64>,
    #[serde(default)]
    value: Option<Value>,
}

impl CasRequest {
    fn expectation(&self) -> Expectation {
        match self.expected_version {
            Some(version) => Expectation::Version(version),
            None => Expectation::Value(self.expected.as_ref().map(encode_json)),
        }
    }
}

async fn kv_cas(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request: CasRequest = parse_json(body)?;
    let new = request.value.as_ref().map(encode_json);
    let outcome = state.consensus.compare_and_swap_bytes(&key, request.expectation(), new).await;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            state.metrics.proposals_failed.fetch_add(1, Ordering::Relaxed);
            return Err(error.into());
        }
    };
    let value = match &outcome.value {
        Some(bytes) => serde_json::from_slice::<Value>(bytes).unwrap_or(Value::Null),
        None => Value::Null,
    };
    if outcome.swapped {
        state.metrics.proposals_accepted.fetch_add(1, Ordering::Relaxed);
        return Ok(Json(json!({ "key": key, "swapped": true, "value": value, "version": outcome.version })));
    }
    let mut error = ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("compare-and-swap on {key:?} failed: the current value or version differs"),
    );
    error.extra =
        Some(json!({ "swapped": false, "current": { "value": value, "version": outcome.version } }));
    Err(error)
}

async fn counter_get(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let consistent = wants_consistent(&query)?;
    let bytes = state.read(&key, consistent).await?;
    let value = KvStateMachine::decode_counter(bytes.as_ref()).ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "conflict", format!("key {key:?} does not hold a counter"))
    })?;
    Ok(Json(json!({ "key": key, "value": value })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddRequest {
    delta: i64,
}

async fn counter_add(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let body = body.map_err(ApiError::from_body_rejection)?;
    let idempotency = Idempotency::from_headers(&headers, "POST add", &key, &body)?;
    let request: AddRequest = parse_json(Ok(body))?;
    match state.propose_once(idempotency, Command::Add { key: key.clone(), delta: request.delta }).await? {
        Applied::Fresh(result) => {
            let value = result.output.as_ref().and_then(|output| output.counter);
            Ok(Json(json!({ "key": key, "value": value, "index": result.index })))
        }
        Applied::Replayed => {
            let value = KvStateMachine::decode_counter(state.consensus.get_bytes(&key).as_ref());
            Ok(Json(json!({ "key": key, "value": value, "replayed": true })))
        }
    }
}

/// One operation of `POST /v1/batch`.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum BatchItem {
    Put {
        key: String,
        value: Value,
    },
    Delete {
        key: String,
    },
    Add {
        key: String,
        delta: i64,
    },
    Cas {
        key: String,
        #[serde(default)]
        expected: Option<Value>,
        #[serde(default)]
        expected_version: Option<u64>,
        #[serde(default)]
        value: Option<Value>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchRequest {
    operations: Vec<BatchItem>,
}

async fn batch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let body = body.map_err(ApiError::from_body_rejection)?;
    let idempotency = Idempotency::from_headers(&headers, "POST", "batch", &body)?;
    let request: BatchRequest = parse_json(Ok(body))?;
    if request.operations.is_empty() {
        return Err(ApiError::bad_request("a batch needs at least one operation"));
    }
    let commands = request
        .operations
        .into_iter()
        .map(|item| match item {
            BatchItem::Put { key, value } => Command::Put { key, value: encode_json(&value) },
            BatchItem::Delete { key } => Command::Delete { key },
            BatchItem::Add { key, delta } => Command::Add { key, delta },
            BatchItem::Cas { key, expected, expected_version, value } => Command::CompareAndSwap {
                key,
                expected: CasRequest { expected, expected_version, value: None }.expectation(),
                new: value.as_ref().map(encode_json),
            },
        })
        .collect();
    let applied = state.propose_once(idempotency, Command::Batch(commands)).await.map_err(|error| {
        if error.code == "conflict" {
            ApiError {
                message: format!("batch not applied (no operation took effect): {}", error.message),
                ..error
            }
        } else {
            error
        }
    })?;
    let Applied::Fresh(result) = applied else {
        return Ok(Json(json!({ "applied": true, "replayed": true })));
    };
    let changes: Vec<Value> = result
        .output
        .as_ref()
        .map(|output| {
            output
                .changes
                .iter()
                .map(|change| json!({ "key": change.key, "version": change.version }))
                .collect()
        })
        .unwrap_or_default();
    Ok(Json(json!({ "applied": true, "index": result.index, "changes": changes })))
}

async fn status(State(state): State<Arc<ApiState>>) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let debug = state.consensus.debug_state();
    let mut body = serde_json::to_value(&debug)
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?;
    if let Value::Object(map) = &mut body {
        map.insert("peer_address".into(), json!(state.peer_address));
        map.insert("leader".into(), json!(state.consensus.leader()));
        map.insert("read_only".into(), json!(state.consensus.is_read_only()));
    }
    Ok(Json(body))
}

async fn members_list(State(state): State<Arc<ApiState>>) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let leader = state.consensus.leader().map(|leader| leader.id);
    let members: Vec<Value> = state
        .consensus
        .nodes()
        .into_iter()
        .map(|node| {
            let is_leader = leader.as_ref() == Some(&node.id);
            json!({ "id": node.id, "address": node.address, "metadata": node.metadata,
                    "connected": node.connected, "leader": is_leader })
        })
        .collect();
    Ok(Json(json!({ "members": members })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMemberRequest {
    id: String,
    address: String,
}

async fn members_add(State(state): State<Arc<ApiState>>, body: Result<Bytes, BytesRejection>) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request: AddMemberRequest = parse_json(body)?;
    let id = concord_core::id::NodeId::parse(&request.id)
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    state.consensus.add_node(NodeInfo::new(id, request.address.clone())).await?;
    Ok(Json(json!({ "added": request.id, "address": request.address })))
}

async fn members_remove(State(state): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    state.consensus.remove_node(&id).await?;
    Ok(Json(json!({ "removed": id })))
}

/// `POST /v1/lock/{name}/acquire` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireRequest {
    ttl_ms: u64,
    /// Who asks; a retry with the same holder recognises its own grant. Generated if absent.
    #[serde(default)]
    holder: Option<String>,
}

/// `renew` / `release` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseRequest {
    holder: String,
    token: u64,
    #[serde(default)]
    ttl_ms: Option<u64>,
}

fn lease_json(name: &str, state: &LockState) -> Value {
    json!({
        "lock": name,
        "holder": state.holder,
        "token": state.token,
        "granted_at_ms": state.granted_at_ms,
        "expires_at_ms": state.expires_at_ms,
    })
}

fn lock_state_of(result: &ProposalResult) -> Option<LockState> {
    let change = result.output.as_ref()?.changes.first()?;
    LockState::decode(change.new_value.as_ref()?)
}

fn lock_error(error: ProposalError) -> ApiError {
    let extra = match &error {
        ProposalError::Command(CommandFailure::LockHeld { holder, token, expires_at_ms, .. }) => {
            Some(json!({ "holder": holder, "token": token, "expires_at_ms": expires_at_ms }))
        }
        _ => None,
    };
    let mut api_error = ApiError::from(error);
    api_error.extra = extra;
    api_error
}

async fn lock_acquire(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request: AcquireRequest = parse_json(body)?;
    let holder = request.holder.unwrap_or_else(|| {
        let sequence = state.next_holder.fetch_add(1, Ordering::Relaxed);
        format!("{}-{:x}-{sequence}", state.consensus.node_id(), state.holder_nonce)
    });
    let command = Command::Lock(LockCommand::acquire(&name, holder.clone(), request.ttl_ms));
    let result = state.consensus.propose_command(command).await;
    if result.accepted {
        state.metrics.proposals_accepted.fetch_add(1, Ordering::Relaxed);
        let lease = lock_state_of(&result).ok_or_else(|| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "granted lock state does not decode")
        })?;
        return Ok(Json(lease_json(&name, &lease)));
    }
    state.metrics.proposals_failed.fetch_add(1, Ordering::Relaxed);
    match result.error.unwrap_or(ProposalError::Rejected { reason: "not accepted".into() }) {
        // An earlier attempt with this holder was granted (its answer was lost): it is ours.
        ProposalError::Command(CommandFailure::LockHeld {
            holder: current,
            token,
            granted_at_ms,
            expires_at_ms,
            ..
        }) if current == holder => Ok(Json(json!({
            "lock": name, "holder": current, "token": token,
            "granted_at_ms": granted_at_ms, "expires_at_ms": expires_at_ms,
        }))),
        error => Err(lock_error(error)),
    }
}

async fn lock_renew(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request: LeaseRequest = parse_json(body)?;
    let ttl_ms = request.ttl_ms.ok_or_else(|| ApiError::bad_request("renew needs ttl_ms"))?;
    let command = Command::Lock(LockCommand::renew(&name, request.holder, request.token, ttl_ms));
    let result = state.propose(command).await?;
    let lease = lock_state_of(&result).ok_or_else(|| {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "renewed lock state does not decode")
    })?;
    Ok(Json(lease_json(&name, &lease)))
}

async fn lock_release(
    State(state): State<Arc<ApiState>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    let request: LeaseRequest = parse_json(body)?;
    let command = Command::Lock(LockCommand::release(&name, request.holder, request.token));
    state.propose(command).await?;
    Ok(Json(json!({ "lock": name, "released": true, "token": request.token })))
}

/// A stored value as JSON for watchers: JSON if it is JSON, else `null` with `"json": false`.
fn watched_value(bytes: Option<&Bytes>) -> (Value, bool) {
    match bytes {
        None => (Value::Null, true),
        Some(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => (value, true),
            Err(_) => (Value::Null, false),
        },
    }
}

async fn watch_key(
    State(state): State<Arc<ApiState>>,
    Path(key): Path<String>,
    upgrade: WebSocketUpgrade,
) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    upgrade
        .max_message_size(WATCH_CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| watch_key_stream(state, key, socket))
}

/// Largest message a watcher may send (only close and ping frames are expected).
const WATCH_CLIENT_MESSAGE_BYTES_MAX: usize = 4096;

async fn watch_key_stream(state: Arc<ApiState>, key: String, mut socket: WebSocket) {
    // Subscribe first, then announce: an update made after the client reads the first message is
    // never missed.
    let mut shutdown = state.shutdown.subscribe();
    let mut updates = state.consensus.subscribe(&key);
    let (value, is_json) = watched_value(state.consensus.get_bytes(&key).as_ref());
    let first = json!({ "type": "subscribed", "key": key, "value": value, "json": is_json,
                        "version": state.consensus.version(&key) });
    if socket.send(Message::Text(first.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            update = updates.next() => {
                let Some(update) = update else { break };
                let (value, is_json) = watched_value(update.new_value.as_ref());
                let message = json!({ "type": "update", "key": update.key, "value": value, "json": is_json,
                                      "deleted": update.new_value.is_none(), "version": update.version });
                if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            // The guard `wait_for` returns is not Send: drop it before the branch awaits.
            _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
}

async fn watch_events(State(state): State<Arc<ApiState>>, upgrade: WebSocketUpgrade) -> Response {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    upgrade
        .max_message_size(WATCH_CLIENT_MESSAGE_BYTES_MAX)
        .on_upgrade(move |socket| events_stream(state, socket))
}

async fn events_stream(state: Arc<ApiState>, mut socket: WebSocket) {
    let mut shutdown = state.shutdown.subscribe();
    let mut events = state.consensus.events();
    let first = json!({ "type": "subscribed", "node": state.consensus.node_id() });
    if socket.send(Message::Text(first.to_string().into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { break };
                let message = json!({ "type": "event", "name": event.name(), "missed": events.missed(),
                                      "event": serde_json::to_value(&event).unwrap_or(Value::Null) });
                if socket.send(Message::Text(message.to_string().into())).await.is_err() {
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            // The guard `wait_for` returns is not Send: drop it before the branch awaits.
            _ = async { shutdown.wait_for(|stopping| *stopping).await.is_ok() } => {
                let _ = socket.send(Message::Close(None)).await;
                break;
            }
        }
    }
}

fn role_number(role: Role) -> u8 {
    match role {
        Role::Leader => 2,
        Role::PreCandidate | Role::Candidate => 1,
        _ => 0,
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let debug = state.consensus.debug_state();
    let metrics = &state.metrics;
    let node = debug.node_id.as_str();
    let mut text = String::new();
    let mut gauge = |name: &str, help: &str, kind: &str, value: u64| {
        text.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {value}\n"
        ));
    };
    gauge("concord_term", "Current term.", "gauge", debug.current_term.0);
    gauge(
        "concord_role",
        "Role: 0 follower (or learner, or majority peer), 1 candidate, 2 leader.",
        "gauge",
        role_number(debug.role).into(),
    );
    gauge("concord_commit_index", "Commit index.", "gauge", debug.commit_index.0);
    gauge("concord_last_applied", "Last applied index.", "gauge", debug.last_applied.0);
    gauge("concord_log_length", "Entries in the log after the snapshot.", "gauge", debug.log_length);
    gauge(
        "concord_pending_proposals",
        "Proposals waiting for a decision.",
        "gauge",
        debug.pending_proposals as u64,
    );
    gauge(
        "concord_session_results",
        "Results kept for exactly-once retries (the session table).",
        "gauge",
        debug.session_results as u64,
    );
    gauge(
        "concord_session_clients",
        "Clients the session table remembers (idle ones expire).",
        "gauge",
        debug.session_clients as u64,
    );
    gauge(
        "concord_session_clients_expired_total",
        "Clients the session table forgot by expiry since the node started.",
        "counter",
        debug.session_clients_expired,
    );
    gauge(
        "concord_api_requests_total",
        "Client API requests.",
        "counter",
        metrics.requests.load(Ordering::Relaxed),
    );
    gauge("concord_reads_total", "Reads served.", "counter", metrics.reads.load(Ordering::Relaxed));
    gauge(
        "concord_proposals_accepted_total",
        "Proposals accepted.",
        "counter",
        metrics.proposals_accepted.load(Ordering::Relaxed),
    );
    gauge(
        "concord_proposals_failed_total",
        "Proposals that failed.",
        "counter",
        metrics.proposals_failed.load(Ordering::Relaxed),
    );
    let sum = metrics.proposal_micros_sum.load(Ordering::Relaxed) as f64 / 1e6;
    let count = metrics.proposals_timed.load(Ordering::Relaxed);
    text.push_str(&format!(
        "# HELP concord_proposal_seconds Time from submitting a proposal to its decision.\n\
         # TYPE concord_proposal_seconds summary\n\
         concord_proposal_seconds_sum{{node=\"{node}\"}} {sum}\n\
         concord_proposal_seconds_count{{node=\"{node}\"}} {count}\n"
    ));
    for (name, value) in (state.transport_stats)() {
        text.push_str(&format!(
            "# HELP concord_transport_{name} Peer transport counter.\n# TYPE concord_transport_{name} counter\n\
             concord_transport_{name}{{node=\"{node}\"}} {value}\n"
        ));
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_are_stored_compact_with_sorted_keys() {
        let value: Value = serde_json::from_str(r#"{ "b": 1, "a": [true, null] }"#).unwrap();
        assert_eq!(&encode_json(&value)[..], br#"{"a":[true,null],"b":1}"#);
    }

    #[test]
    fn consistent_query_is_parsed_strictly() {
        assert!(!wants_consistent(&None).unwrap());
        assert!(wants_consistent(&Some("consistent=true".into())).unwrap());
        assert!(wants_consistent(&Some("consistent".into())).unwrap());
        assert!(wants_consistent(&Some("other=1".into())).is_err());
    }

    #[test]
    fn proposal_errors_map_to_codes_and_statuses() {
        let error = ApiError::from(ProposalError::Timeout);
        assert_eq!((error.status, error.code), (StatusCode::GATEWAY_TIMEOUT, "timeout"));
        let error = ApiError::from(ProposalError::Command(CommandFailure::NestedBatch));
        assert_eq!((error.status, error.code), (StatusCode::CONFLICT, "conflict"));
        let error = ApiError::from(ProposalError::NoQuorum { reachable: 1, members: 3, required: 2 });
        assert_eq!((error.status, error.code), (StatusCode::SERVICE_UNAVAILABLE, "no_quorum"));
        assert!(error.message.contains("1 of 3"));
    }
}

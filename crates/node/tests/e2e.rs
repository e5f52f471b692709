//! End-to-end tests: real `concord serve` processes on 127.0.0.1 talking over the WebSocket and
//! ZeroMQ transports, driven through the HTTP API and the CLI.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use support::{put_eventually, wait_until, Cluster, Node, CONVERGE_TIMEOUT, SECRET};

/// Writes through a follower (forwarded), reads linearizably from another node, kills the leader
/// with SIGKILL, keeps writing after the election, and restarts the killed node from its data
/// directory, which catches up.
fn replicate_and_survive_leader_kill(scheme: &str) {
    let mut cluster = Cluster::start(scheme, &[SECRET, SECRET, SECRET], &[]);
    let leader = cluster.wait_for_leader(&["n1", "n2", "n3"]);
    let followers: Vec<String> =
        ["n1", "n2", "n3"].iter().filter(|id| **id != leader).map(|id| id.to_string()).collect();

    // A write sent to a follower is forwarded to the leader.
    let written = put_eventually(
        cluster.node(&followers[0]),
        "score",
        r#"{"player":"ada","points":1}"#,
        CONVERGE_TIMEOUT,
    );
    assert!(written["version"].as_u64().unwrap() >= 1, "{written}");
    // A consistent read on the other follower sees it.
    let (status, read) = cluster.node(&followers[1]).try_get("/v1/kv/score?consistent=true").unwrap();
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["value"], json!({"player": "ada", "points": 1}));
    let counter = cluster.node(&leader).request("POST", "/v1/counter/visits/add", Some(r#"{"delta": 5}"#));
    assert_eq!((counter.status, counter.json()["value"].clone()), (200, json!(5)), "{:?}", counter.json());

    // kill -9 the leader.
    let leader_index = cluster.nodes.iter().position(|node| node.id == leader).unwrap();
    cluster.nodes[leader_index].kill();
    let survivors: Vec<&str> = followers.iter().map(String::as_str).collect();
    let new_leader = cluster.wait_for_leader(&survivors);
    assert_ne!(new_leader, leader);
    put_eventually(cluster.node(survivors[0]), "after", r#""elected""#, CONVERGE_TIMEOUT);
    let (status, read) = cluster.node(survivors[1]).try_get("/v1/kv/after?consistent=true").unwrap();
    assert_eq!((status, read["value"].clone()), (200, json!("elected")), "{read}");

    // The killed node resumes from its data directory and catches up.
    cluster.nodes[leader_index].restart();
    let restarted = &cluster.nodes[leader_index];
    wait_until(CONVERGE_TIMEOUT, "the restarted node to catch up", || {
        let (status, body) = restarted.try_get("/v1/kv/after")?;
        (status == 200 && body["value"] == json!("elected")).then_some(())
    });
    let (_, score) = restarted.try_get("/v1/kv/score").unwrap();
    assert_eq!(score["value"]["points"], json!(1));
    let (_, visits) = restarted.try_get("/v1/counter/visits").unwrap();
    assert_eq!(visits["value"], json!(5));
}

#[test]
fn websocket_cluster_replicates_and_survives_leader_kill() {
    replicate_and_survive_leader_kill("ws");
}

#[test]
fn zeromq_cluster_replicates_and_survives_leader_kill() {
    replicate_and_survive_leader_kill("tcp");
}

fn single_node(extra: &[&str]) -> Cluster {
    let cluster = Cluster::start("ws", &[SECRET], extra);
    cluster.wait_for_leader(&["n1"]);
    cluster
}

fn error_of(node: &Node, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let response = node.request(method, path, body);
    let code = response.json()["code"].as_str().unwrap_or("<no code>").to_owned();
    (response.status, code)
}

#[test]
fn bad_requests_get_json_errors_with_matching_statuses() {
    let cluster = single_node(&["--max-request-bytes", "1024"]);
    let node = cluster.node("n1");
    assert_eq!(error_of(node, "PUT", "/v1/kv/k", Some("{not json")), (400, "bad_request".into()));
    let oversized = format!("\"{}\"", "x".repeat(4096));
    assert_eq!(error_of(node, "PUT", "/v1/kv/k", Some(&oversized)), (413, "payload_too_large".into()));
    assert_eq!(error_of(node, "GET", "/v1/nothing/here", None), (404, "not_found".into()));
    assert_eq!(error_of(node, "PATCH", "/v1/kv/k", Some("1")), (405, "method_not_allowed".into()));
    assert_eq!(error_of(node, "GET", "/v1/kv/missing", None), (404, "not_found".into()));
    assert_eq!(error_of(node, "GET", "/v1/kv/k?bogus=1", None), (400, "bad_request".into()));
    assert_eq!(
        error_of(node, "POST", "/v1/counter/c/add", Some(r#"{"delta":"x"}"#)),
        (400, "bad_request".into())
    );

    // Compare-and-swap: succeeds from "absent", then conflicts with the current value reported.
    let swapped = node.request("POST", "/v1/kv/k/cas", Some(r#"{"expected":null,"value":{"n":1}}"#));
    assert_eq!(swapped.status, 200, "{:?}", swapped.json());
    let conflict = node.request("POST", "/v1/kv/k/cas", Some(r#"{"expected":{"n":0},"value":{"n":2}}"#));
    assert_eq!((conflict.status, conflict.json()["code"].clone()), (409, json!("conflict")));
    assert_eq!(conflict.json()["current"]["value"], json!({"n": 1}));

    // A batch applies all or nothing: a failing compare-and-swap aborts the put before it.
    let batch = r#"{"operations":[{"op":"put","key":"b1","value":1},{"op":"cas","key":"k","expected":{"n":9},"value":0}]}"#;
    assert_eq!(error_of(node, "POST", "/v1/batch", Some(batch)), (409, "conflict".into()));
    assert_eq!(error_of(node, "GET", "/v1/kv/b1", None), (404, "not_found".into()));
    let batch = r#"{"operations":[{"op":"put","key":"b1","value":1},{"op":"add","key":"c","delta":2},{"op":"delete","key":"k"}]}"#;
    let applied = node.request("POST", "/v1/batch", Some(batch));
    assert_eq!(
        (applied.status, applied.json()["applied"].clone()),
        (200, json!(true)),
        "{:?}",
        applied.json()
    );
    assert_eq!(error_of(node, "GET", "/v1/kv/k", None), (404, "not_found".into()));

    // Metrics are Prometheus text.
    let metrics = node.request("GET", "/metrics", None);
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("concord_role{node=\"n1\"} 2"), "{text}");
    assert!(text.contains("concord_proposals_accepted_total"), "{text}");
    assert!(text.contains("concord_proposal_seconds_count{node=\"n1\"}"), "{text}");
    assert!(text.contains("concord_transport_handshakes_refused_total{node=\"n1\"} 0"), "{text}");
}

#[test]
fn a_node_with_the_wrong_secret_cannot_join() {
    let cluster = Cluster::start("ws", &[SECRET, SECRET, "another-secret-of-enough-bytes"], &[]);
    let leader = cluster.wait_for_leader(&["n1", "n2"]);
    put_eventually(cluster.node(&leader), "joined", "true", CONVERGE_TIMEOUT);
    wait_until(CONVERGE_TIMEOUT, "n1 and n2 to apply the write", || {
        let both = ["n1", "n2"]
            .iter()
            .all(|id| cluster.node(id).try_get("/v1/kv/joined").map(|(s, _)| s) == Some(200));
        both.then_some(())
    });
    // Over many heartbeats and reconnect attempts, the outsider learns nothing, and the members
    // see it as unreachable.
    let window = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < window {
        let outsider = cluster.node("n3");
        assert_eq!(outsider.try_get("/v1/kv/joined").map(|(status, _)| status), Some(404));
        let status = outsider.status();
        assert_eq!(status["commit_index"], json!(0), "{status}");
        assert_ne!(status["role"], json!("leader"));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The members refused the outsider's handshakes (it cannot prove the secret).
    wait_until(CONVERGE_TIMEOUT, "a member to count refused handshakes", || {
        let metrics = cluster.node(&leader).request("GET", "/metrics", None);
        let text = String::from_utf8(metrics.body).ok()?;
        let line =
            text.lines().find(|line| line.starts_with("concord_transport_handshakes_refused_total"))?;
        (line.rsplit(' ').next()?.parse::<u64>().ok()? > 0).then_some(())
    });
    let (_, members) = cluster.node(&leader).try_get("/v1/members").unwrap();
    let n3 = members["members"].as_array().unwrap().iter().find(|m| m["id"] == "n3").cloned().unwrap();
    assert_eq!(n3["connected"], json!(false), "{members}");
}

fn cli(node: &Node, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(args)
        .args(["--node", &node.api, "--timeout-ms", "10000"])
        .env_remove("CONCORD_NODE")
        .output()
        .unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap().trim().to_owned();
    (output.status.code().unwrap_or(-1), text(output.stdout), text(output.stderr))
}

#[test]
fn cli_prints_readable_or_json_output_with_exit_codes() {
    let cluster = single_node(&[]);
    let node = cluster.node("n1");
    assert_eq!(cli(node, &["kv", "put", "player", r#"{"name":"ada","score":3}"#]).0, 0);
    assert_eq!(cli(node, &["kv", "get", "player"]), (0, r#"{"name":"ada","score":3}"#.into(), String::new()));
    let (code, json_out, _) = cli(node, &["kv", "get", "player", "--consistent", "--json"]);
    let parsed: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(
        (code, parsed["value"]["score"].clone(), parsed["key"].clone()),
        (0, json!(3), json!("player"))
    );
    assert_eq!(cli(node, &["kv", "put", "greeting", "hello"]).0, 0);
    assert_eq!(cli(node, &["kv", "get", "greeting"]).1, r#""hello""#);

    let (code, _, error) = cli(node, &["kv", "get", "missing"]);
    assert_eq!(code, 4, "{error}");
    assert!(error.contains("not_found") && error.contains("missing"), "{error}");
    let (code, _, error) = cli(node, &["kv", "cas", "greeting", "--expected", "bye", "--value", "hi"]);
    assert_eq!(code, 1);
    assert!(error.contains("conflict"), "{error}");
    assert_eq!(cli(node, &["kv", "cas", "greeting", "--expected", "hello", "--value", "hi"]).0, 0);
    assert_eq!(cli(node, &["kv", "del", "greeting"]).0, 0);
    assert_eq!(cli(node, &["kv", "get", "greeting"]).0, 4);

    assert_eq!(cli(node, &["counter", "add", "hits", "7"]).1, "7");
    assert_eq!(cli(node, &["counter", "add", "hits", "-2"]).1, "5");
    assert_eq!(cli(node, &["counter", "get", "hits", "--consistent"]).1, "5");

    let (code, status, _) = cli(node, &["status"]);
    assert_eq!(code, 0);
    assert!(status.contains("node n1") && status.contains("role leader"), "{status}");
    let (code, members, _) = cli(node, &["members", "list"]);
    assert_eq!(code, 0);
    assert!(members.starts_with("n1\tws://127.0.0.1:") && members.contains("leader"), "{members}");

    // An unreachable node: exit code 3 and a message saying so.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["status", "--node", &closed, "--timeout-ms", "2000"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot reach node"));
    // Bad usage: exit code 2.
    let output = Command::new(env!("CARGO_BIN_EXE_concord")).args(["kv", "frobnicate"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn sigterm_stops_the_node_cleanly_and_it_resumes_from_its_data_directory() {
    let mut cluster = single_node(&[]);
    put_eventually(cluster.node("n1"), "kept", "42", CONVERGE_TIMEOUT);
    let pid = cluster.nodes[0].pid().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let status = cluster.nodes[0].wait_exit(Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}; log:\n{}", cluster.logs());
    assert!(cluster.nodes[0].log_text().contains("SIGTERM received"));
    cluster.nodes[0].restart();
    cluster.wait_for_leader(&["n1"]);
    let (status, body) = cluster.nodes[0].try_get("/v1/kv/kept?consistent=true").unwrap();
    assert_eq!((status, body["value"].clone()), (200, json!(42)));
}

#[test]
fn a_node_without_a_secret_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["serve", "--id", "n1", "--listen", "ws://127.0.0.1:0", "--memory"])
        .env_remove("CONCORD_SECRET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("CONCORD_SECRET"));
}

#[test]
fn locks_grant_increasing_fencing_tokens_to_one_holder_at_a_time() {
    let cluster = single_node(&[]);
    let node = cluster.node("n1");
    let first =
        node.request("POST", "/v1/lock/printer/acquire", Some(r#"{"ttl_ms":60000,"holder":"alice"}"#));
    assert_eq!(first.status, 200, "{:?}", first.json());
    let token = first.json()["token"].as_u64().unwrap();
    // A retry by the same holder is recognised as its own grant.
    let again =
        node.request("POST", "/v1/lock/printer/acquire", Some(r#"{"ttl_ms":60000,"holder":"alice"}"#));
    assert_eq!((again.status, again.json()["token"].as_u64()), (200, Some(token)));
    let refused =
        node.request("POST", "/v1/lock/printer/acquire", Some(r#"{"ttl_ms":60000,"holder":"bob"}"#));
    assert_eq!((refused.status, refused.json()["code"].clone()), (409, json!("conflict")));
    assert_eq!(refused.json()["holder"], json!("alice"));
    let renew = format!(r#"{{"holder":"alice","token":{token},"ttl_ms":60000}}"#);
    assert_eq!(node.request("POST", "/v1/lock/printer/renew", Some(&renew)).status, 200);
    let release = format!(r#"{{"holder":"alice","token":{token}}}"#);
    assert_eq!(node.request("POST", "/v1/lock/printer/release", Some(&release)).status, 200);
    // Releasing twice is refused: the lease is no longer valid.
    assert_eq!(error_of(node, "POST", "/v1/lock/printer/release", Some(&release)).0, 409);

    let (code, text, error) =
        cli(node, &["lock", "acquire", "printer", "--ttl-ms", "60000", "--holder", "bob"]);
    assert_eq!(code, 0, "{error}");
    let cli_token: u64 = text.split("token ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(cli_token > token, "{text}");
    let (code, _, error) = cli(node, &["lock", "acquire", "printer", "--holder", "carol"]);
    assert_eq!(code, 1);
    assert!(error.contains("conflict"), "{error}");
}

#[test]
fn watch_streams_a_key_changes_over_websocket() {
    use std::io::{BufRead, BufReader, Read};
    let cluster = single_node(&[]);
    let node = cluster.node("n1");
    let mut watcher = support::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["watch", "door", "--count", "2", "--node", &node.api])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The watcher says "watching" once subscribed: changes after that are never missed.
    let stderr = watcher.0.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let line = receiver.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.starts_with("watching ws://"), "{line}");
    put_eventually(node, "door", r#""open""#, CONVERGE_TIMEOUT);
    assert_eq!(node.request("DELETE", "/v1/kv/door", None).status, 200);
    let status = wait_until(Duration::from_secs(20), "the watcher to exit", || watcher.0.try_wait().unwrap());
    assert!(status.success());
    let mut output = String::new();
    watcher.0.stdout.take().unwrap().read_to_string(&mut output).unwrap();
    assert_eq!(output, "door = \"open\" (version 1)\ndoor deleted (version 2)\n");
}

#[test]
fn an_idempotency_key_makes_a_retried_write_apply_once() {
    let cluster = single_node(&[]);
    let node = cluster.node("n1");
    let add = |key: &str, body: &str| {
        node.client()
            .request_with_headers(
                "POST",
                "/v1/counter/retried/add",
                &[("Idempotency-Key", key)],
                Some(body.as_bytes()),
            )
            .unwrap()
    };
    let first = add("request-1", r#"{"delta":5}"#);
    assert_eq!((first.status, first.json()["value"].clone()), (200, json!(5)), "{:?}", first.json());
    let retry = add("request-1", r#"{"delta":5}"#);
    assert_eq!((retry.status, retry.json()["replayed"].clone()), (200, json!(true)), "{:?}", retry.json());
    assert_eq!(retry.json()["value"], json!(5));
    assert_eq!(add("request-2", r#"{"delta":5}"#).json()["value"], json!(10));
    let reused = add("request-1", r#"{"delta":7}"#);
    assert_eq!((reused.status, reused.json()["code"].clone()), (422, json!("idempotency_key_reused")));

    let put = |key: &str| {
        node.client()
            .request_with_headers("PUT", "/v1/kv/doc", &[("Idempotency-Key", key)], Some(b"1"))
            .unwrap()
    };
    assert_eq!(put("put-1").json()["version"], json!(1));
    assert_eq!(node.request("PUT", "/v1/kv/doc", Some("2")).status, 200);
    // The retry of the first put does not overwrite the later value.
    let retry = put("put-1");
    assert_eq!((retry.json()["replayed"].clone(), retry.json()["version"].clone()), (json!(true), json!(2)));
    assert_eq!(node.try_get("/v1/kv/doc").unwrap().1["value"], json!(2));
    // A failing command inside an idempotent batch reports the caller's position, and applies nothing.
    let batch = r#"{"operations":[{"op":"put","key":"x","value":1},{"op":"cas","key":"doc","expected":9,"value":0}]}"#;
    let failed = node
        .client()
        .request_with_headers("POST", "/v1/batch", &[("Idempotency-Key", "batch-1")], Some(batch.as_bytes()))
        .unwrap();
    assert_eq!(failed.status, 409, "{:?}", failed.json());
    assert!(failed.json()["message"].as_str().unwrap().contains("at command 1"), "{:?}", failed.json());
}

#[test]
fn a_toml_config_and_a_secret_file_run_a_simple_majority_cluster() {
    let directory = tempfile::tempdir().unwrap();
    let config = directory.path().join("concord.toml");
    std::fs::write(&config, "mechanism = \"simple_majority\"\ntimeout = 3000\nquorum = 0.51\n").unwrap();
    let secret = directory.path().join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let extra = ["--config", config.to_str().unwrap(), "--secret-file", secret.to_str().unwrap()];
    let cluster = Cluster::start("ws", &["", "", ""], &extra);
    let status = cluster.node("n1").status();
    assert_eq!(status["mechanism"], json!("simple_majority"), "{status}");
    put_eventually(cluster.node("n2"), "vote", r#"{"choice":"blue"}"#, CONVERGE_TIMEOUT);
    for id in ["n1", "n3"] {
        wait_until(CONVERGE_TIMEOUT, &format!("{id} to learn the decided value"), || {
            let (status, body) = cluster.node(id).try_get("/v1/kv/vote")?;
            (status == 200 && body["value"]["choice"] == json!("blue")).then_some(())
        });
    }
    // A config file with a field the lesson does not name is refused at start.
    std::fs::write(&config, "heartbeatInterval = 100\nheartbeatIntervall = 200\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["serve", "--id", "n9", "--listen", "ws://127.0.0.1:0", "--memory", "--config"])
        .arg(&config)
        .env("CONCORD_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("heartbeatIntervall"));
}

#[test]
fn with_forwarding_off_a_follower_answers_not_leader_with_the_leaders_address() {
    let cluster = Cluster::start("ws", &[SECRET, SECRET, SECRET], &["--forward-to-leader", "false"]);
    let leader = cluster.wait_for_leader(&["n1", "n2", "n3"]);
    let follower = ["n1", "n2", "n3"].into_iter().find(|id| *id != leader).unwrap();
    let response = cluster.node(follower).request("PUT", "/v1/kv/k", Some("1"));
    let body = response.json();
    assert_eq!((response.status, body["code"].clone()), (503, json!("not_leader")), "{body}");
    assert_eq!(body["leader"]["id"], json!(leader));
    assert_eq!(body["leader"]["address"], json!(cluster.node(&leader).peer));
    // The CLI says so too, with a non-zero exit code.
    let (code, _, error) = cli(cluster.node(follower), &["kv", "put", "k", "1"]);
    assert_eq!(code, 1);
    assert!(error.contains("not_leader") && error.contains(&leader), "{error}");
    assert_eq!(cluster.node(&leader).request("PUT", "/v1/kv/k", Some("1")).status, 200);
}

#[test]
fn a_fourth_node_joins_through_the_members_api_and_catches_up() {
    let mut cluster = Cluster::start("ws", &[SECRET, SECRET, SECRET], &[]);
    let leader = cluster.wait_for_leader(&["n1", "n2", "n3"]);
    put_eventually(cluster.node(&leader), "before", "1", CONVERGE_TIMEOUT);
    // n4 starts knowing every member (itself included); the others learn of it through consensus.
    let address = format!("ws://127.0.0.1:{}", support::free_port());
    let data_dir = cluster.directory.path().join("n4");
    let mut args =
        vec!["--id".to_owned(), "n4".into(), "--listen".into(), address.clone(), "--data-dir".into()];
    args.push(data_dir.to_str().unwrap().to_owned());
    for node in &cluster.nodes {
        args.extend(["--peer".to_owned(), format!("{}={}", node.id, node.peer)]);
    }
    args.extend(support::timer_args());
    let log = cluster.directory.path().join("n4.log");
    cluster.nodes.push(Node::start("n4", args, SECRET, &data_dir, &log));
    let (code, _, error) = cli(cluster.node(&leader), &["members", "add", "n4", &address]);
    assert_eq!(code, 0, "{error}\n{}", cluster.logs());
    wait_until(CONVERGE_TIMEOUT, "n4 to catch up", || {
        let (status, body) = cluster.node("n4").try_get("/v1/kv/before")?;
        (status == 200 && body["value"] == json!(1)).then_some(())
    });
    let (_, members) = cluster.node(&leader).try_get("/v1/members").unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 4, "{members}");
    // And it can be removed again.
    let (code, _, error) = cli(cluster.node(&leader), &["members", "remove", "n4"]);
    assert_eq!(code, 0, "{error}");
    let (_, members) = cluster.node(&leader).try_get("/v1/members").unwrap();
    assert_eq!(members["members"].as_array().unwrap().len(), 3, "{members}");
}

#[test]
fn events_stream_node_events_over_websocket() {
    use std::io::{BufRead, BufReader};
    let cluster = single_node(&[]);
    let node = cluster.node("n1");
    let mut listener = support::ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_concord"))
            .args(["events", "--node", &node.api])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (sender, receiver) = std::sync::mpsc::channel();
    let stderr = listener.0.stderr.take().unwrap();
    let stdout = listener.0.stdout.take().unwrap();
    let to_stdout = sender.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let line = receiver.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(line.starts_with("watching ws://"), "{line}");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = to_stdout.send(line);
        }
    });
    put_eventually(node, "light", r#""on""#, CONVERGE_TIMEOUT);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let line = receiver.recv_timeout(remaining).expect("no state:changed event for the write");
        if line.starts_with("state:changed ") {
            assert!(line.contains("light"), "{line}");
            break;
        }
    }
}

//! Config: the lesson's examples parse from JSON and TOML, every invalid case names its field, and
//! the quorum arithmetic matches a table.

use std::time::Duration;

use concord_core::config::{Config, ConfigError, MechanismKind, Quorum};

fn from_toml(text: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse(error.to_string()))?;
    config.validate()?;
    Ok(config)
}

/// Each lesson example, written as JSON and as TOML.
struct Example {
    name: &'static str,
    json: &'static str,
    toml: &'static str,
    check: fn(&Config),
}

const EXAMPLES: &[Example] = &[
    Example {
        name: "simple majority (createConsensusTrait)",
        json: r#"{ "mechanism": "simple_majority", "timeout": 5000 }"#,
        toml: "mechanism = \"simple_majority\"\ntimeout = 5000\n",
        check: |config| {
            assert_eq!(config.mechanism, MechanismKind::SimpleMajority);
            assert_eq!(config.timeout, Duration::from_millis(5000));
            // The lesson's default quorum for simple majority: 0.51, i.e. 2 of 3.
            assert_eq!(config.quorum, Quorum::Fraction(0.51));
            assert_eq!(config.quorum.required(3), 2);
        },
    },
    Example {
        name: "raft",
        json: r#"{ "mechanism": "raft", "timeout": 3000, "heartbeatInterval": 1000, "electionTimeout": [3000, 5000] }"#,
        toml:
            "mechanism = \"raft\"\ntimeout = 3000\nheartbeatInterval = 1000\nelectionTimeout = [3000, 5000]\n",
        check: |config| {
            assert_eq!(config.mechanism, MechanismKind::Raft);
            assert_eq!(config.timeout, Duration::from_millis(3000));
            assert_eq!(config.heartbeat_interval, Duration::from_millis(1000));
            assert_eq!(config.election_timeout.min, Duration::from_millis(3000));
            assert_eq!(config.election_timeout.max, Duration::from_millis(5000));
        },
    },
    Example {
        name: "performance tips",
        json: r#"{
            "mechanism": "raft",
            "batchUpdates": true,
            "batchWindow": 50,
            "compression": true,
            "snapshotInterval": 1000,
            "heartbeatInterval": 500,
            "electionTimeout": [1500, 3000]
        }"#,
        toml: "mechanism = \"raft\"\nbatchUpdates = true\nbatchWindow = 50\ncompression = true\n\
               snapshotInterval = 1000\nheartbeatInterval = 500\nelectionTimeout = [1500, 3000]\n",
        check: |config| {
            assert!(config.batch_updates);
            assert_eq!(config.batch_window, Duration::from_millis(50));
            assert!(config.compression);
            assert_eq!(config.snapshot_interval, 1000);
            assert_eq!(config.heartbeat_interval, Duration::from_millis(500));
            assert_eq!(
                config.election_timeout_range(),
                (Duration::from_millis(1500), Duration::from_millis(3000))
            );
        },
    },
    Example {
        name: "multiplayer game",
        json: r#"{ "mechanism": "raft", "nodes": 5, "quorum": 3 }"#,
        toml: "mechanism = \"raft\"\nnodes = 5\nquorum = 3\n",
        check: |config| {
            assert_eq!(config.nodes, Some(5));
            assert_eq!(config.quorum, Quorum::Count(3));
            assert_eq!(config.quorum.required(5), 3);
        },
    },
    Example {
        name: "voting agent (quorum 0.51)",
        json: r#"{ "mechanism": "simple_majority", "timeout": 5000, "quorum": 0.51 }"#,
        toml: "mechanism = \"simple_majority\"\ntimeout = 5000\nquorum = 0.51\n",
        check: |config| {
            assert_eq!(config.quorum, Quorum::Fraction(0.51));
        },
    },
];

#[test]
fn the_lessons_examples_parse_from_json_and_toml_alike() {
    for example in EXAMPLES {
        let from_json =
            Config::from_json(example.json).unwrap_or_else(|e| panic!("{} (JSON): {e}", example.name));
        let from_toml = from_toml(example.toml).unwrap_or_else(|e| panic!("{} (TOML): {e}", example.name));
        (example.check)(&from_json);
        assert_eq!(from_json, from_toml, "{}: JSON and TOML disagree", example.name);
    }
}

#[test]
fn an_empty_config_is_a_valid_raft_config_and_snake_case_is_accepted() {
    let config = Config::from_json("{}").unwrap();
    assert_eq!(config, Config::default());
    assert_eq!(config.mechanism, MechanismKind::Raft);
    let snake = Config::from_json(
        r#"{ "mechanism": "simpleMajority", "heartbeat_interval": 50, "election_timeout": [150, 300], "batch_window": 5 }"#,
    )
    .unwrap();
    assert_eq!(snake.mechanism, MechanismKind::SimpleMajority);
    assert_eq!(snake.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(snake.election_timeout.max, Duration::from_millis(300));
    assert_eq!(snake.batch_window, Duration::from_millis(5));
}

#[test]
fn a_config_survives_serialization_to_json_and_toml() {
    let mut config = Config::for_mechanism(MechanismKind::SimpleMajority);
    config.quorum = Quorum::Count(2);
    config.nodes = Some(3);
    config.compression = true;
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"heartbeatInterval\""), "{json}");
    assert_eq!(Config::from_json(&json).unwrap(), config);
    let toml_text = toml::to_string(&config).unwrap();
    assert_eq!(from_toml(&toml_text).unwrap(), config);
}

/// An invalid config, and the field its error must name.
const INVALID: &[(&str, &str)] = &[
    // Election timeout against the heartbeat, and the range itself.
    (r#"{ "heartbeatInterval": 1000, "electionTimeout": [1500, 3000] }"#, "electionTimeout"),
    (r#"{ "electionTimeout": [5000, 3000] }"#, "electionTimeout"),
    (r#"{ "electionTimeout": [0, 0] }"#, "electionTimeout"),
    (r#"{ "electionTimeout": [3000] }"#, "electionTimeout"),
    (r#"{ "electionTimeout": "3s" }"#, "electionTimeout"),
    // Quorum out of range, as a count and as a fraction.
    (r#"{ "quorum": 0 }"#, "quorum"),
    (r#"{ "quorum": 0.0 }"#, "quorum"),
    (r#"{ "quorum": -1 }"#, "quorum"),
    (r#"{ "quorum": 1.5 }"#, "quorum"),
    (r#"{ "quorum": "most" }"#, "quorum"),
    (r#"{ "mechanism": "simple_majority", "quorum": 0.4 }"#, "quorum"),
    (r#"{ "mechanism": "raft", "quorum": 0.5 }"#, "quorum"),
    (r#"{ "mechanism": "raft", "nodes": 5, "quorum": 6 }"#, "quorum"),
    (r#"{ "mechanism": "raft", "nodes": 4, "quorum": 2 }"#, "quorum"),
    (r#"{ "mechanism": "simple_majority", "nodes": 4, "quorum": 2 }"#, "quorum"),
    (r#"{ "mechanism": "raft", "advisory": true, "quorum": 0.4 }"#, "quorum"),
    (r#"{ "nodes": 0 }"#, "nodes"),
    // Mechanism and unknown fields.
    (r#"{ "mechanism": "paxos" }"#, "mechanism"),
    (r#"{ "mechanism": 3 }"#, "mechanism"),
    (r#"{ "heartbeat": 100 }"#, "heartbeat"),
    (r#"{ "heartbeatInterval": "fast" }"#, "heartbeatInterval"),
    (r#"{ "timeout": -5 }"#, "timeout"),
    // Zero and impossible bounds.
    (r#"{ "timeout": 0 }"#, "timeout"),
    (r#"{ "heartbeatInterval": 0 }"#, "heartbeatInterval"),
    (r#"{ "maxMessageBytes": 0 }"#, "maxMessageBytes"),
    (r#"{ "maxMessageBytes": 512 }"#, "maxMessageBytes"),
    (r#"{ "maxEntriesPerMessage": 0 }"#, "maxEntriesPerMessage"),
    (r#"{ "maxInflightMessages": 0 }"#, "maxInflightMessages"),
    (r#"{ "maxInflightBytes": 0 }"#, "maxInflightBytes"),
    (r#"{ "maxBatchEntries": 0 }"#, "maxBatchEntries"),
    (r#"{ "maxPendingProposals": 0 }"#, "maxPendingProposals"),
    (r#"{ "maxPendingReads": 0 }"#, "maxPendingReads"),
    (r#"{ "snapshotChunkBytes": 0 }"#, "snapshotChunkBytes"),
    (r#"{ "maxClientSessions": 0 }"#, "maxClientSessions"),
    (r#"{ "maxClientRecords": 0 }"#, "maxClientRecords"),
    (r#"{ "timeout": 5000, "clientSessionExpiry": 49999 }"#, "clientSessionExpiry"),
    (r#"{ "maxKeyBytes": 0 }"#, "maxKeyBytes"),
    (r#"{ "maxValueBytes": 0 }"#, "maxValueBytes"),
    (r#"{ "maxBatchCommands": 0 }"#, "maxBatchCommands"),
    (r#"{ "maxEventBacklog": 0 }"#, "maxEventBacklog"),
    (
        r#"{ "maxMessageBytes": 65536, "snapshotChunkBytes": 65536, "maxValueBytes": 1024 }"#,
        "snapshotChunkBytes",
    ),
    (r#"{ "maxMessageBytes": 65536, "snapshotChunkBytes": 1024, "maxValueBytes": 65536 }"#, "maxValueBytes"),
    // Safety switches that only work together.
    (r#"{ "leaseReads": true, "checkQuorum": false }"#, "leaseReads"),
    (r#"{ "leaseClockDriftMaxPerMille": 1000 }"#, "leaseClockDriftMaxPerMille"),
];

#[test]
fn each_invalid_config_is_refused_with_an_error_naming_the_field() {
    for (json, field) in INVALID {
        let error = Config::from_json(json).expect_err(json);
        match &error {
            ConfigError::Invalid { field: named, .. } => assert_eq!(named, field, "{json}: {error}"),
            _ => {
                assert!(error.to_string().contains(field), "{json}: error {error:?} does not name `{field}`")
            }
        }
        // The display always names it, whichever kind of error it is.
        assert!(error.to_string().contains(field), "{json}: {error}");
    }
}

#[test]
fn a_weak_quorum_is_allowed_for_simple_majority_only_when_advisory() {
    let config =
        Config::from_json(r#"{ "mechanism": "simple_majority", "quorum": 0.4, "advisory": true }"#).unwrap();
    assert_eq!(config.quorum.required(5), 2);
    assert!(!config.quorum.is_strict_majority(5));
    Config::from_json(r#"{ "mechanism": "simple_majority", "nodes": 4, "quorum": 2, "advisory": true }"#)
        .unwrap();
}

#[test]
fn invalid_toml_names_the_field_too() {
    for (text, field) in [
        ("mechanism = \"paxos\"\n", "mechanism"),
        ("heartbeat = 100\n", "heartbeat"),
        ("quorum = 1.5\n", "quorum"),
        ("quorum = nan\n", "quorum"),
        ("quorum = inf\n", "quorum"),
        ("electionTimeout = [-1, 300]\n", "electionTimeout"),
        ("heartbeatInterval = 1000\nelectionTimeout = [1500, 3000]\n", "electionTimeout"),
    ] {
        let error = from_toml(text).expect_err(text);
        assert!(error.to_string().contains(field), "{text:?}: {error}");
    }
}

#[test]
fn quorum_required_matches_the_table() {
    let table: &[(Quorum, usize, usize)] = &[
        (Quorum::Fraction(0.51), 1, 1),
        (Quorum::Fraction(0.51), 2, 2),
        (Quorum::Fraction(0.51), 3, 2),
        (Quorum::Fraction(0.51), 4, 3),
        (Quorum::Fraction(0.51), 5, 3),
        (Quorum::Fraction(0.51), 6, 4),
        (Quorum::Fraction(0.51), 7, 4),
        (Quorum::Fraction(0.5), 4, 2),
        (Quorum::Fraction(0.6), 5, 3),
        (Quorum::Fraction(0.7), 10, 7),
        (Quorum::Fraction(0.3), 10, 3),
        (Quorum::Fraction(1.0), 3, 3),
        (Quorum::Fraction(1.0), 1, 1),
        (Quorum::Fraction(0.51), 0, 1),
        (Quorum::Count(3), 5, 3),
        (Quorum::Count(1), 3, 1),
        (Quorum::Count(4), 3, 4),
    ];
    for &(quorum, voters, required) in table {
        assert_eq!(quorum.required(voters), required, "{quorum:?} of {voters}");
    }
    for (quorum, voters, strict) in [
        (Quorum::Fraction(0.51), 4, true),
        (Quorum::Fraction(0.5), 4, false),
        (Quorum::Fraction(0.5), 3, true),
        (Quorum::Count(3), 5, true),
        (Quorum::Count(2), 4, false),
    ] {
        assert_eq!(quorum.is_strict_majority(voters), strict, "{quorum:?} of {voters}");
    }
}

#[test]
fn extreme_numbers_in_any_field_give_a_result_not_a_panic() {
    let fields = [
        "timeout",
        "quorum",
        "nodes",
        "heartbeatInterval",
        "batchWindow",
        "snapshotInterval",
        "leaseClockDriftMaxPerMille",
        "maxMessageBytes",
        "maxEntriesPerMessage",
        "maxInflightMessages",
        "maxInflightBytes",
        "maxBatchEntries",
        "maxApplyEntries",
        "maxPendingProposals",
        "maxPendingReads",
        "compressionThresholdBytes",
        "snapshotChunkBytes",
        "maxClientSessions",
        "maxClientRecords",
        "clientSessionExpiry",
        "maxKeyBytes",
        "maxValueBytes",
        "maxBatchCommands",
        "maxEventBacklog",
        "maxHandedOverMessages",
    ];
    let numbers = ["0", "1", "4294967295", "4294967296", "18446744073709551615", "-1", "1e308", "0.5"];
    for field in fields {
        for number in numbers {
            for mechanism in ["raft", "simple_majority"] {
                let json = format!(r#"{{ "mechanism": "{mechanism}", "{field}": {number} }}"#);
                let result = std::panic::catch_unwind(|| Config::from_json(&json));
                assert!(result.is_ok(), "{json} panicked");
            }
        }
    }
    for range in ["[0, 18446744073709551615]", "[18446744073709551615, 18446744073709551615]"] {
        for heartbeat in ["1", "18446744073709551615"] {
            let json = format!(r#"{{ "heartbeatInterval": {heartbeat}, "electionTimeout": {range} }}"#);
            let result = std::panic::catch_unwind(|| Config::from_json(&json));
            assert!(result.is_ok(), "{json} panicked");
        }
    }
}

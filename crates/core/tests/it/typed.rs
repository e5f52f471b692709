//! Typed values: anything serde can encode is stored as bytes and read back as the same type.

use std::collections::BTreeMap;

use concord_core::typed::{decode_value, encode_value, ValueError};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde::{Deserialize, Serialize};

use crate::strategies;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct GameConfig {
    max_players: u32,
    name: String,
    scores: BTreeMap<String, i64>,
    lock: Option<(String, u64)>,
}

#[test]
fn values_round_trip() {
    let strategy = (
        any::<u32>(),
        "\\PC{0,16}",
        prop::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..4),
        prop::option::of(("[a-z]{1,6}", any::<u64>())),
    )
        .prop_map(|(max_players, name, scores, lock)| GameConfig { max_players, name, scores, lock });
    let mut runner = TestRunner::new(strategies::seeded(256, 0x5EED_0004));
    runner
        .run(&strategy, |value| {
            let bytes = encode_value(&value).unwrap();
            prop_assert_eq!(decode_value::<GameConfig>(&bytes).unwrap(), value);
            Ok(())
        })
        .unwrap();
    // Unsized values encode too, and i64 counters read back as the state machine stores them.
    let bytes = encode_value("playing").unwrap();
    assert_eq!(decode_value::<String>(&bytes).unwrap(), "playing");
    assert_eq!(
        decode_value::<i64>(&concord_core::prelude::KvStateMachine::encode_counter(-42)).unwrap(),
        -42
    );
}

#[test]
fn trailing_bytes_and_wrong_types_are_errors() {
    let mut bytes = encode_value(&7u32).unwrap().to_vec();
    bytes.push(0);
    let error: ValueError = decode_value::<u32>(&bytes).unwrap_err();
    assert_eq!(error.direction, "decode");
    assert_eq!(error.type_name, "u32");
    assert!(error.reason.contains("1 trailing bytes"), "{error}");

    let error = decode_value::<GameConfig>(&[0xFF]).unwrap_err();
    assert!(error.type_name.ends_with("GameConfig"), "{error}");
    assert!(decode_value::<bool>(&[2]).is_err());
    assert!(decode_value::<String>(&[]).is_err());
}

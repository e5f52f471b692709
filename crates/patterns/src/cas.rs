//! Atomic compare-and-swap with typed values, and a read-modify-write loop built on it.

use bytes::Bytes;
use concord_core::command::Expectation;
use concord_core::error::ProposalError;
use concord_core::typed::{decode_value, encode_value};
use concord_runtime::Consensus;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::PatternError;

/// Times one compare-and-swap is proposed again after a slot refused for contention (simple
/// majority) before the refusal is returned.
pub const CONTENTION_RETRIES_MAX: u32 = 8;

/// The outcome of a typed compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Swap<T> {
    /// Whether the swap happened.
    pub swapped: bool,
    /// The key's value after the command: the new value if it swapped, the value that made the
    /// comparison fail if not (`None`: absent).
    pub value: Option<T>,
    /// The key's version after the command (0: never existed).
    pub version: u64,
}

fn encode_optional<T: Serialize>(value: Option<&T>) -> Result<Option<Bytes>, PatternError> {
    value.map(encode_value).transpose().map_err(PatternError::from)
}

async fn swap<T: DeserializeOwned>(
    consensus: &Consensus,
    key: &str,
    expected: Expectation,
    new: Option<Bytes>,
) -> Result<Swap<T>, PatternError> {
    let mut attempt = 0;
    let outcome = loop {
        match consensus.compare_and_swap_bytes(key, expected.clone(), new.clone()).await {
            // Simple majority refuses a slot in which proposers collided: nothing was applied, and
            // proposing again compares against whatever won.
            Err(ProposalError::Rejected { .. }) if attempt < CONTENTION_RETRIES_MAX => {
                attempt += 1;
                tokio::time::sleep(crate::contention_backoff(consensus, attempt)).await;
            }
            result => break result?,
        }
    };
    let value = outcome.value.as_deref().map(decode_value).transpose()?;
    Ok(Swap { swapped: outcome.swapped, value, version: outcome.version })
}

/// Sets `key` to `new` (`None`: deletes it) only if its value equals `expected` (`None`: absent)
/// when the command is applied — never check-then-propose. Works on both mechanisms.
pub async fn compare_and_swap<T: Serialize + DeserializeOwned>(
    consensus: &Consensus,
    key: &str,
    expected: Option<&T>,
    new: Option<&T>,
) -> Result<Swap<T>, PatternError> {
    let expected = Expectation::Value(encode_optional(expected)?);
    swap(consensus, key, expected, encode_optional(new)?).await
}

/// Sets `key` to `new` (`None`: deletes it) only if its version equals `expected_version` (0: the
/// key never existed) when the command is applied. Versions never repeat (a delete keeps its
/// version), so unlike a value comparison this cannot be fooled by an A→B→A change.
pub async fn compare_and_swap_version<T: Serialize + DeserializeOwned>(
    consensus: &Consensus,
    key: &str,
    expected_version: u64,
    new: Option<&T>,
) -> Result<Swap<T>, PatternError> {
    swap(consensus, key, Expectation::Version(expected_version), encode_optional(new)?).await
}

/// Read-modify-write without lost updates: computes `change(current)` and swaps it in by version,
/// retrying with the value that won if another writer got there first, at most `attempts_max`
/// times. Returns the last outcome (`swapped: false` once attempts run out).
///
/// `change` may run several times; it must not have side effects.
pub async fn update<T, F>(
    consensus: &Consensus,
    key: &str,
    attempts_max: usize,
    mut change: F,
) -> Result<Swap<T>, PatternError>
where
    T: Serialize + DeserializeOwned,
    F: FnMut(Option<&T>) -> Option<T>,
{
    // Version before value: if the key changes between the two reads, the swap expects the older
    // version and fails, instead of swapping in a change computed from a newer value.
    let version = consensus.version(key);
    let bytes = consensus.get_bytes(key);
    let mut current: Swap<T> =
        Swap { swapped: false, value: bytes.as_deref().map(decode_value).transpose()?, version };
    for attempt in 0..attempts_max.max(1) {
        let new = change(current.value.as_ref());
        match compare_and_swap_version(consensus, key, current.version, new.as_ref()).await {
            Ok(outcome) if outcome.swapped => return Ok(outcome),
            Ok(outcome) => current = outcome,
            // Simple majority refuses a slot in which proposers collided; nothing was applied.
            Err(PatternError::Consensus(ProposalError::Rejected { .. })) => {
                tokio::time::sleep(crate::contention_backoff(consensus, attempt as u32)).await;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(current)
}

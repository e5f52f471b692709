//! Typed values: any `Serialize` value becomes the bytes the state machine stores, and back.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that could not be encoded, or stored bytes that do not decode as the asked type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("value does not {direction} as {type_name}: {reason}")]
pub struct ValueError {
    /// `encode` or `decode`.
    pub direction: &'static str,
    /// The Rust type asked for.
    pub type_name: &'static str,
    /// The codec's message.
    pub reason: String,
}

/// Encodes a value with postcard.
pub fn encode_value<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, ValueError> {
    postcard::to_allocvec(value).map(Bytes::from).map_err(|error| ValueError {
        direction: "encode",
        type_name: std::any::type_name::<T>(),
        reason: error.to_string(),
    })
}

/// Decodes a value stored by [`encode_value`]; trailing bytes are an error.
pub fn decode_value<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ValueError> {
    let error =
        |reason: String| ValueError { direction: "decode", type_name: std::any::type_name::<T>(), reason };
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(error(format!("{} trailing bytes", rest.len()))),
        Err(e) => Err(error(e.to_string())),
    }
}

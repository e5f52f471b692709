//! The wire codec: postcard-encoded messages in a length-delimited, versioned envelope.
//!
//! A frame is
//!
//! ```text
//! +----------------+-----------+---------+-------------------------------------------+
//! | length: u32 BE | version:u8| flags:u8| body: postcard(EnvelopeBody), maybe LZ4   |
//! +----------------+-----------+---------+-------------------------------------------+
//! ```
//!
//! where `length` counts everything after itself. Decoding checks the length against the limit
//! before allocating, rejects unknown versions and flags, trailing bytes after the body, and a
//! compressed body whose declared size exceeds the limit. Every failure is a [`CodecError`].

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::id::{ClusterId, NodeId};
use crate::message::Message;

/// The protocol version this build speaks. 2: client sessions carry their acknowledgement
/// (`ClientSession::answered_below`), and snapshots the session table's. 3: snapshots carry each
/// client's last activity (session expiry), and `CommandFailure::SessionTableFull` exists.
pub const PROTOCOL_VERSION: u8 = 3;
/// Bytes before the body: length, version, flags.
pub const HEADER_BYTES: usize = 6;
const FLAG_COMPRESSED: u8 = 0b0000_0001;
const FLAGS_KNOWN: u8 = FLAG_COMPRESSED;
// An LZ4 sequence turns each extra match-length byte (255) into at most 255 output bytes; the rest
// of a block (tokens, offsets, the final literals) adds a few bytes at most.
const LZ4_EXPANSION_MAX: u64 = 255;
const LZ4_EXPANSION_SLACK_BYTES: u64 = 64;

/// A message with its routing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The cluster it belongs to.
    pub cluster_id: ClusterId,
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The message.
    pub message: Message,
}

/// Why a frame could not be encoded or decoded. Peer-caused variants mean: drop the frame (and, on
/// a stream transport, the connection).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Fewer bytes than the header or the declared length.
    #[error("truncated frame: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// The declared or actual size is above the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// Flag bits this build does not know.
    #[error("unknown frame flags {0:#04x}")]
    UnknownFlags(u8),
    /// More bytes than the declared length, or left after the body.
    #[error("{0} trailing bytes after the frame body")]
    TrailingBytes(usize),
    /// The body does not decode.
    #[error("malformed frame body: {0}")]
    Malformed(String),
    /// The compressed body does not decompress.
    #[error("malformed compressed body: {0}")]
    Decompression(String),
    /// The frame belongs to another cluster.
    #[error("frame for cluster {got:?}, this is cluster {expected:?}")]
    WrongCluster {
        /// This cluster.
        expected: ClusterId,
        /// The frame's.
        got: ClusterId,
    },
    /// Encoding failed (a bug or a message too large to encode).
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Encodes and decodes frames under a size limit and an optional compression threshold.
#[derive(Clone, Debug)]
pub struct Codec {
    /// Largest whole frame, header included.
    pub max_frame_bytes: usize,
    /// Compress bodies larger than this; `None` disables compression.
    pub compression_threshold_bytes: Option<usize>,
}

impl Codec {
    /// A codec from the config's `max_message_bytes`, `compression` and threshold.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Codec {
            max_frame_bytes: config.max_message_bytes as usize,
            compression_threshold_bytes: config
                .compression
                .then_some(config.compression_threshold_bytes as usize),
        }
    }

    /// Encodes an envelope into one frame.
    pub fn encode(&self, envelope: &Envelope) -> Result<Bytes, CodecError> {
        let mut frame = Vec::with_capacity(128);
        frame.extend_from_slice(&[0; HEADER_BYTES]);
        let mut frame =
            postcard::to_extend(envelope, frame).map_err(|error| CodecError::Encode(error.to_string()))?;
        let mut flags = 0;
        let body_len = frame.len() - HEADER_BYTES;
        if let Some(threshold) = self.compression_threshold_bytes {
            if body_len > threshold {
                let compressed = lz4_flex::compress_prepend_size(&frame[HEADER_BYTES..]);
                if compressed.len() < body_len {
                    frame.truncate(HEADER_BYTES);
                    frame.extend_from_slice(&compressed);
                    flags |= FLAG_COMPRESSED;
                }
            }
        }
        // The length field is a u32: a limit set above 4 GiB must not let a larger frame through
        // with its length silently cut.
        let length = u32::try_from(frame.len() - 4).ok().filter(|_| frame.len() <= self.max_frame_bytes);
        let Some(length) = length else {
            return Err(CodecError::TooLarge {
                size: frame.len() as u64,
                limit: (self.max_frame_bytes as u64).min(u64::from(u32::MAX) + 4),
            });
        };
        frame[0..4].copy_from_slice(&length.to_be_bytes());
        frame[4] = PROTOCOL_VERSION;
        frame[5] = flags;
        Ok(Bytes::from(frame))
    }

    /// Given the first bytes of a stream, the size of the whole frame that starts there, or `None`
    /// if fewer than 4 bytes are present. Rejects an oversized frame before anything is allocated.
    pub fn frame_length(&self, prefix: &[u8]) -> Result<Option<usize>, CodecError> {
        let Some(length_bytes) = prefix.get(0..4) else { return Ok(None) };
        let length =
            u32::from_be_bytes([length_bytes[0], length_bytes[1], length_bytes[2], length_bytes[3]]) as u64;
        let total = length + 4;
        if total > self.max_frame_bytes as u64 {
            return Err(CodecError::TooLarge { size: total, limit: self.max_frame_bytes as u64 });
        }
        if (total as usize) < HEADER_BYTES {
            return Err(CodecError::Truncated { needed: HEADER_BYTES, available: total as usize });
        }
        Ok(Some(total as usize))
    }

    /// Decodes exactly one frame; bytes beyond its declared length are an error.
    pub fn decode(&self, frame: &[u8]) -> Result<Envelope, CodecError> {
        let total = self
            .frame_length(frame)?
            .ok_or(CodecError::Truncated { needed: HEADER_BYTES, available: frame.len() })?;
        if frame.len() < total {
            return Err(CodecError::Truncated { needed: total, available: frame.len() });
        }
        if frame.len() > total {
            return Err(CodecError::TrailingBytes(frame.len() - total));
        }
        let version = frame[4];
        if version != PROTOCOL_VERSION {
            return Err(CodecError::UnsupportedVersion(version));
        }
        let flags = frame[5];
        if flags & !FLAGS_KNOWN != 0 {
            return Err(CodecError::UnknownFlags(flags));
        }
        let body = &frame[HEADER_BYTES..];
        if flags & FLAG_COMPRESSED != 0 {
            let Some(size_bytes) = body.get(0..4) else {
                return Err(CodecError::Decompression("missing size prefix".into()));
            };
            let declared =
                u32::from_le_bytes([size_bytes[0], size_bytes[1], size_bytes[2], size_bytes[3]]) as u64;
            if declared > self.max_frame_bytes as u64 {
                return Err(CodecError::TooLarge { size: declared, limit: self.max_frame_bytes as u64 });
            }
            // LZ4 cannot expand more than about 255 times, so a size beyond that is a lie, refused
            // before the output buffer is allocated: a tiny frame must not cost a maximum-size buffer.
            let compressed = (body.len() - 4) as u64;
            if declared > compressed * LZ4_EXPANSION_MAX + LZ4_EXPANSION_SLACK_BYTES {
                return Err(CodecError::Decompression(format!(
                    "declared size {declared} is impossible for {compressed} compressed bytes"
                )));
            }
            let inflated = lz4_flex::decompress_size_prepended(body)
                .map_err(|error| CodecError::Decompression(error.to_string()))?;
            decode_body(&inflated)
        } else {
            decode_body(body)
        }
    }

    /// Decodes one frame and checks that it belongs to `cluster`.
    pub fn decode_for(&self, cluster: ClusterId, frame: &[u8]) -> Result<Envelope, CodecError> {
        let envelope = self.decode(frame)?;
        if envelope.cluster_id != cluster {
            return Err(CodecError::WrongCluster { expected: cluster, got: envelope.cluster_id });
        }
        Ok(envelope)
    }
}

fn decode_body(body: &[u8]) -> Result<Envelope, CodecError> {
    let (envelope, rest) = postcard::take_from_bytes::<Envelope>(body)
        .map_err(|error| CodecError::Malformed(error.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(envelope)
}

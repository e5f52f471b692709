//! The concord node (placeholder while the crate is written).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

//! ZeroMQ transport for concord (being written).
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

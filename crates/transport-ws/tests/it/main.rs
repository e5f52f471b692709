//! Integration tests of the WebSocket transport: the shared conformance suite (plain and TLS) and
//! WebSocket-specific cases.

mod conformance;
mod forged;
mod support;
mod tls;

//! Integration tests of the ZeroMQ transport: the shared conformance suite and ZeroMQ-specific
//! cases.

mod conformance;
mod forged;
mod restart;
mod support;

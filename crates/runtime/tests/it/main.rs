//! Runtime integration tests on tokio's paused clock: virtual time, no real sleeps.

mod api;
mod majority;
mod support;

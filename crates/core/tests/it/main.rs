//! Integration tests of concord-core: one binary, one module per area.

mod codec;
mod config;
mod state_machine;
mod storage;
mod strategies;
mod typed;

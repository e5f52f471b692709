//! Integration tests of the patterns, on real clusters in virtual time, on the state machine with
//! explicit timestamps, and in the deterministic simulator.

mod cas;
mod counter;
mod lock;
mod optimistic;
mod simulation;
mod state_machine;
mod support;

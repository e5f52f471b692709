//! Integration tests of `concord-majority`: protocol scenarios on a tiny in-test cluster. (The
//! randomized simulation is its own binary, `tests/simulation.rs`, which `cargo xtask sim` runs.)

mod harness;
mod protocol;

//! Integration tests of `concord-majority`: protocol scenarios on a tiny in-test cluster, and the
//! randomized simulation on `concord-sim`.

mod harness;
mod protocol;
mod simulation;

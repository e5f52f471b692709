//! Integration tests of the simulator, driven by test doubles (the real mechanisms test themselves
//! with it in their own crates).

mod checker;
mod doubles;
mod scenario;
mod simulator;

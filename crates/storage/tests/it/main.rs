//! Integration tests of `concord-storage` on the real file system: damaged files give typed
//! errors, and acknowledged entries survive a SIGKILL of the writing process.

mod corrupt;
mod sigkill;
mod support;

//! Leases in the deterministic simulator (filled in below).

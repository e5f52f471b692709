//! A fast keyed hash for tables keyed by 64-bit numbers (client ids, sequence numbers), looked up
//! on every proposal or applied entry.
//!
//! The numbers are random (client ids) or handed out by the node itself (sequences), so a keyed
//! SplitMix64 finalizer spreads them as well as SipHash does, at a fraction of its cost. The key is
//! random per table (drawn from the standard library's hasher seeds), so a peer that forges ids
//! cannot aim them at one bucket. Iteration order must never leave such a table: sort first.

use std::hash::{BuildHasher, Hasher};

/// Builds [`U64Hasher`]s with one random key per table.
#[derive(Clone, Debug)]
pub struct U64Hashing {
    key: u64,
}

impl Default for U64Hashing {
    fn default() -> Self {
        U64Hashing { key: std::collections::hash_map::RandomState::new().hash_one(0x5e55_1075_u64) | 1 }
    }
}

impl BuildHasher for U64Hashing {
    type Hasher = U64Hasher;

    fn build_hasher(&self) -> U64Hasher {
        U64Hasher(self.key)
    }
}

/// The hasher of [`U64Hashing`]: meant for `u64` keys (other input is hashed byte by byte).
#[derive(Debug)]
pub struct U64Hasher(u64);

impl Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.write_u64(u64::from(*byte));
        }
    }

    fn write_u64(&mut self, value: u64) {
        // High bits feed hashbrown's tags and low bits its buckets, so every output bit must
        // depend on every input bit: SplitMix64's finalizer (two multiply-xorshift rounds) does
        // that; a single multiply leaves its low bits blind to the input's high bits.
        let mut mixed = self.0 ^ value;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = mixed ^ (mixed >> 31);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn consecutive_and_random_looking_numbers_spread_over_buckets_and_tags() {
        let hashing = U64Hashing::default();
        for numbers in [(0..4096u64).collect::<Vec<_>>(), (0..4096u64).map(|n| n << 40).collect()] {
            let hashes: Vec<u64> = numbers.iter().map(|n| hashing.hash_one(n)).collect();
            let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
            let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
            // A random function fills about 2,589 of 4,096 buckets with 4,096 keys (1 - 1/e).
            assert!(buckets.len() > 2300, "{} of 4096 buckets used", buckets.len());
            assert_eq!(tags.len(), 128, "every 7-bit tag is used");
        }
    }
}

//! Versions are hashes of content, so that two replicas give a client the same version for the
//! same data, and a restarted server does not make every client re-apply what it has.
//!
//! FNV-1a over a canonical form of what a resource is made from: a Listener's and a Cluster's
//! name, target or policy and the release (whose code encodes them), a ClusterLoadAssignment's
//! [`Assignment`](crate::resources::Assignment) model and region (its metadata maps would encode
//! in any order). A stream that wakes with nothing new hashes a few strings and encodes
//! nothing. Integers are hashed little-endian, so replicas on different architectures agree too.

use std::hash::{Hash, Hasher};

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv64 {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn write_i64(&mut self, i: i64) {
        self.write(&i.to_le_bytes());
    }

    fn write_isize(&mut self, i: isize) {
        self.write_i64(i as i64);
    }
}

/// A version: 16 hex digits of the hash of `value`.
pub fn of(value: &impl Hash) -> String {
    let mut hasher = Fnv64::default();
    value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// The version of a response: of its type and its resources' (name, version) pairs, in the
/// order given (callers sort by name).
pub fn of_response<'a>(
    type_url: &str,
    resources: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut hasher = Fnv64::default();
    type_url.hash(&mut hasher);
    for (name, version) in resources {
        name.hash(&mut hasher);
        version.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_its_reference_values() {
        // The FNV-1a 64 test vectors: "" and "a".
        let hash = |bytes: &[u8]| {
            let mut h = Fnv64::default();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn versions_follow_content_only() {
        assert_eq!(of(&("echo", 3u32)), of(&("echo", 3u32)));
        assert_ne!(of(&("echo", 3u32)), of(&("echo", 4u32)));
        let a = of_response("t", [("a", "1"), ("b", "2")]);
        assert_eq!(a, of_response("t", [("a", "1"), ("b", "2")]));
        assert_ne!(a, of_response("t", [("a", "1"), ("b", "3")]));
        assert_ne!(a, of_response("t", [("a", "1")]));
        assert_ne!(a, of_response("u", [("a", "1"), ("b", "2")]));
        // A name boundary cannot be confused with content.
        assert_ne!(
            of_response("t", [("ab", "c")]),
            of_response("t", [("a", "bc")])
        );
        assert_eq!(a.len(), 16);
    }
}

//! The stream hash and the category rule (spec section 19).
//!
//! The hash only narrows searches in index files; every hit is compared with
//! the full name, so two names with one hash never mix.

/// 64-bit FNV-1a of `bytes` (spec 19): offset basis `0xcbf29ce484222325`,
/// prime `0x100000001b3`.
pub fn stream_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The category of a stream: the part of its name before the first `-`, or
/// `None` if the name has no `-` (spec 19).
///
/// ```
/// assert_eq!(annal::category_of("order-42"), Some("order"));
/// assert_eq!(annal::category_of("a-b-c"), Some("a"));
/// assert_eq!(annal::category_of("orders"), None);
/// ```
pub fn category_of(stream: &str) -> Option<&str> {
    stream.split_once('-').map(|(c, _)| c)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, reason = "tests: a panic is a failure")]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_test_vectors() {
        assert_eq!(stream_hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stream_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stream_hash(b"foobar"), 0x8594_4171_f739_67e8);
    }
}

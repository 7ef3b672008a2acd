//! Unsigned LEB128 varints (spec 3.6), the minimal encoding only: what the
//! compact batch (`batch`) and sealed plaintexts (`sealed`) are made of.
//! Pure functions over bytes.

/// Append `v` to `out` as an unsigned LEB128 varint (the minimal one).
#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of `v` as a varint.
#[inline]
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Why a varint did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The bytes end inside it.
    Truncated,
    /// More than 64 bits, or a longer encoding than the value needs.
    Invalid,
}

/// Read the minimal LEB128 varint at the start of `bytes`: its value and
/// length.
#[inline]
pub(crate) fn get_varint(bytes: &[u8]) -> Result<(u64, usize), VarintError> {
    let mut v: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let low = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(VarintError::Invalid);
        }
        v |= low << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(VarintError::Invalid);
            }
            return Ok((v, i + 1));
        }
    }
    if bytes.len() >= 10 {
        Err(VarintError::Invalid)
    } else {
        Err(VarintError::Truncated)
    }
}

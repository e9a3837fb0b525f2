//! HyperLogLog registers as Redis stores them, for PFCOUNT over keys of several slots: the
//! proxy reads each key's raw value, takes the register-wise maximum, and estimates the
//! cardinality with Redis's own estimator (`hyperloglog.c`), so the count is the one a single
//! node would give.
//!
//! A value is `"HYLL"`, an encoding byte (0 dense, 1 sparse), 3 unused bytes, an 8-byte cached
//! cardinality, then the registers: 16384 six-bit registers packed little-endian (dense), or
//! run-length opcodes (sparse): `00xxxxxx` xxxxxx+1 zeros, `01xxxxxx yyyyyyyy` xxxxxxyyyyyyyy+1
//! zeros, `1vvvvvxx` xx+1 registers of value vvvvv+1.

/// Registers per HyperLogLog (2^14).
pub const REGISTERS: usize = 1 << 14;

const HEADER: usize = 16;
const BITS: usize = 6;
const DENSE_SIZE: usize = HEADER + (REGISTERS * BITS).div_ceil(8);
/// 64 - 14: the highest register value that still means "not all bits seen".
const Q: usize = 50;
const ALPHA_INF: f64 = 0.721_347_520_444_481_7;

/// Why a value could not be read as a HyperLogLog; the words are Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HllError {
    /// Not a HyperLogLog at all.
    NotHll,
    /// A sparse HyperLogLog whose runs do not add up.
    Corrupt,
}

impl HllError {
    /// The error reply Redis gives.
    pub fn message(self) -> &'static str {
        match self {
            HllError::NotHll => "WRONGTYPE Key is not a valid HyperLogLog string value.",
            HllError::Corrupt => "INVALIDOBJ Corrupted HLL object detected",
        }
    }
}

/// Raises each of `max`'s registers to the value's, if higher (Redis's `hllMerge`).
pub fn merge_max(max: &mut [u8; REGISTERS], value: &[u8]) -> Result<(), HllError> {
    if value.len() < HEADER || &value[..4] != b"HYLL" {
        return Err(HllError::NotHll);
    }
    let registers = &value[HEADER..];
    match value[4] {
        0 if value.len() == DENSE_SIZE => {
            for (i, m) in max.iter_mut().enumerate() {
                let byte = i * BITS / 8;
                let shift = i * BITS % 8;
                let b0 = usize::from(registers.get(byte).copied().unwrap_or(0));
                let b1 = usize::from(registers.get(byte + 1).copied().unwrap_or(0));
                let v = (((b0 >> shift) | (b1 << (8 - shift))) & 63) as u8;
                *m = (*m).max(v);
            }
            Ok(())
        }
        1 => {
            let mut i = 0;
            let mut p = 0;
            while let Some(&op) = registers.get(p) {
                if i > REGISTERS {
                    return Err(HllError::Corrupt);
                }
                if op & 0x80 != 0 {
                    let value = ((op >> 2) & 0x1f) + 1;
                    let run = usize::from(op & 0x3) + 1;
                    for m in max.get_mut(i..i + run).ok_or(HllError::Corrupt)? {
                        *m = (*m).max(value);
                    }
                    i += run;
                    p += 1;
                } else if op & 0x40 != 0 {
                    let low = *registers.get(p + 1).ok_or(HllError::Corrupt)?;
                    i += ((usize::from(op & 0x3f) << 8) | usize::from(low)) + 1;
                    p += 2;
                } else {
                    i += usize::from(op & 0x3f) + 1;
                    p += 1;
                }
            }
            if i == REGISTERS {
                Ok(())
            } else {
                Err(HllError::Corrupt)
            }
        }
        _ => Err(HllError::NotHll),
    }
}

/// The cardinality estimate of `registers` (Redis's `hllCount`: Ertl's improved estimator).
pub fn count(registers: &[u8; REGISTERS]) -> u64 {
    let mut histogram = [0u32; 64];
    for &r in registers.iter() {
        histogram[usize::from(r & 63)] += 1;
    }
    let m = REGISTERS as f64;
    let mut z = m * tau((m - f64::from(histogram[Q + 1])) / m);
    for j in (1..=Q).rev() {
        z += f64::from(histogram[j]);
        z *= 0.5;
    }
    z += m * sigma(f64::from(histogram[0]) / m);
    (ALPHA_INF * m * m / z).round() as u64
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if before == z {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * y;
        if before == z {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sparse(ops: &[u8]) -> Vec<u8> {
        let mut v = b"HYLL\x01\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        v.extend_from_slice(ops);
        v
    }

    #[test]
    fn empty_sparse_counts_zero_and_bad_values_are_refused() {
        let mut max = [0u8; REGISTERS];
        // XZERO of 16384: 0x7f 0xff.
        assert_eq!(merge_max(&mut max, &sparse(&[0x7f, 0xff])), Ok(()));
        assert_eq!(count(&max), 0);
        assert_eq!(merge_max(&mut max, b"hello"), Err(HllError::NotHll));
        assert_eq!(
            merge_max(&mut max, b"HYLL\x00short-dense-value"),
            Err(HllError::NotHll)
        );
        assert_eq!(
            merge_max(&mut max, &sparse(&[0x7f, 0xfe])),
            Err(HllError::Corrupt)
        );
        assert_eq!(
            merge_max(&mut max, &sparse(&[0x7f])),
            Err(HllError::Corrupt)
        );
    }

    #[test]
    fn sparse_values_and_dense_registers_are_read_in_place() {
        let mut max = [0u8; REGISTERS];
        // Register 0 = 3 (VAL 3 x1: 1 00010 00), then 16383 zeros (XZERO 16383: 0x7f 0xfe).
        merge_max(&mut max, &sparse(&[0b1000_1000, 0x7f, 0xfe])).unwrap();
        assert_eq!((max[0], max[1]), (3, 0));
        // Dense: register 1 = 5 lives in bits 6..12 (byte 0 bits 6-7, byte 1 bits 0-3).
        let mut dense = b"HYLL\x00\0\0\0\0\0\0\0\0\0\0\0".to_vec();
        dense.resize(DENSE_SIZE, 0);
        dense[HEADER] = 5 << 6;
        dense[HEADER + 1] = 5 >> 2;
        merge_max(&mut max, &dense).unwrap();
        assert_eq!((max[0], max[1], max[2]), (3, 5, 0));
        assert_eq!(count(&max), 2);
    }
}

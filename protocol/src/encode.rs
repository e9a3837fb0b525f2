//! Encoding frames for a RESP2 or RESP3 peer.
//!
//! [`encode`] writes any [`Frame`]; for a RESP2 peer it downgrades RESP3 types the way Redis's
//! `addReply*` functions do. The `encode_*` helpers write the common scalar replies without
//! building a frame. Numbers are formatted with `itoa` and doubles like `%.17g`.

use std::fmt::Write as _;

use bytes::{BufMut, BytesMut};

use crate::{Frame, Version};

/// Appends `frame` to `dst`, downgrading RESP3 types for a RESP2 peer as Redis does
/// (maps flattened, sets/push as arrays, doubles/big numbers/verbatim as bulk strings,
/// booleans as 1/0, attributes dropped).
///
/// | frame           | RESP3                  | RESP2                                  |
/// |-----------------|------------------------|----------------------------------------|
/// | `Null`          | `_\r\n`                | `$-1\r\n`                              |
/// | `NullArray`     | `_\r\n`                | `*-1\r\n`                              |
/// | `Map`           | `%N` + pairs           | `*2N` + pairs                          |
/// | `Set` / `Push`  | `~N` / `>N`            | `*N`                                   |
/// | `Double`        | `,1.5\r\n`             | `$3\r\n1.5\r\n`                        |
/// | `Boolean`       | `#t\r\n`               | `:1\r\n`                               |
/// | `BigNumber`     | `(123\r\n`             | `$3\r\n123\r\n`                        |
/// | `Verbatim`      | `=N\r\ntxt:...\r\n`    | bulk string of the text                |
/// | `Attribute`     | `\|N` + pairs + frame  | the frame alone                        |
///
/// Simple strings and errors have CR and LF replaced by spaces (see [`encode_error`]).
/// Doubles are formatted as by [`format_double`]. Never fails; recursion depth is the frame's
/// nesting depth.
pub fn encode(frame: &Frame, version: Version, dst: &mut BytesMut) {
    let resp3 = version == Version::Resp3;
    match frame {
        Frame::Simple(text) => encode_simple(text, dst),
        Frame::Error(text) => encode_error(text, dst),
        Frame::Integer(n) => encode_integer(*n, dst),
        Frame::Bulk(payload) => encode_bulk(payload, dst),
        Frame::Null if resp3 => dst.put_slice(b"_\r\n"),
        Frame::Null => dst.put_slice(b"$-1\r\n"),
        Frame::NullArray if resp3 => dst.put_slice(b"_\r\n"),
        Frame::NullArray => dst.put_slice(b"*-1\r\n"),
        Frame::Array(items) => encode_items(b'*', items, version, dst),
        Frame::Set(items) => encode_items(if resp3 { b'~' } else { b'*' }, items, version, dst),
        Frame::Push(items) => encode_items(if resp3 { b'>' } else { b'*' }, items, version, dst),
        Frame::Map(pairs) => {
            if resp3 {
                put_len(b'%', pairs.len(), dst);
            } else {
                put_len(b'*', pairs.len().saturating_mul(2), dst);
            }
            encode_pairs(pairs, version, dst);
        }
        Frame::Double(text) if resp3 => put_line(b',', text, dst),
        Frame::Double(text) => encode_bulk(text, dst),
        Frame::Boolean(b) if resp3 => dst.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Boolean(b) => encode_integer(i64::from(*b), dst),
        Frame::BigNumber(digits) if resp3 => put_line(b'(', digits, dst),
        Frame::BigNumber(digits) => encode_bulk(digits, dst),
        Frame::Verbatim { format, text } if resp3 => {
            put_len(b'=', text.len().saturating_add(4), dst);
            dst.reserve(text.len() + 6);
            dst.put_slice(format);
            dst.put_u8(b':');
            dst.put_slice(text);
            dst.put_slice(b"\r\n");
        }
        Frame::Verbatim { text, .. } => encode_bulk(text, dst),
        Frame::Attribute { attrs, frame } => {
            if resp3 {
                put_len(b'|', attrs.len(), dst);
                encode_pairs(attrs, version, dst);
            }
            encode(frame, version, dst);
        }
    }
}

/// Appends `$len\r\npayload\r\n`.
pub fn encode_bulk(payload: &[u8], dst: &mut BytesMut) {
    let mut len = itoa::Buffer::new();
    let len = len.format(payload.len()).as_bytes();
    dst.reserve(len.len() + payload.len() + 5);
    dst.put_u8(b'$');
    dst.put_slice(len);
    dst.put_slice(b"\r\n");
    dst.put_slice(payload);
    dst.put_slice(b"\r\n");
}

/// Appends `-text\r\n`. `text` must not contain CR or LF (they are replaced by spaces).
///
/// `text` is everything after the `-`, starting with the error code (`ERR ...`).
pub fn encode_error(text: &[u8], dst: &mut BytesMut) {
    put_sanitized(b'-', text, dst);
}

/// Appends `+text\r\n`. Like [`encode_error`], CR and LF in `text` are replaced by spaces so
/// the reply cannot break framing.
pub fn encode_simple(text: &[u8], dst: &mut BytesMut) {
    put_sanitized(b'+', text, dst);
}

/// Appends `:n\r\n`.
pub fn encode_integer(n: i64, dst: &mut BytesMut) {
    let mut buf = itoa::Buffer::new();
    put_line(b':', buf.format(n).as_bytes(), dst);
}

/// A double formatted as Redis formats it for both RESP3 `,` and the RESP2 bulk string: C's
/// `%.17g` (as `addReplyDouble` in Redis 7.0), with `inf`, `-inf` and `nan` spelled out.
///
/// Seventeen significant digits, so it reads back as the same double; trailing zeros dropped;
/// an exponent only below 1e-4 or from 1e17 on: `1.5`, `3`, `-0`, `0.10000000000000001`,
/// `1e+17`, `9.5367431640625e-07`.
pub fn format_double(d: f64) -> DoubleText {
    let mut out = DoubleText::default();
    if d.is_nan() {
        out.push(b"nan");
    } else if d.is_infinite() {
        out.push(if d < 0.0 { b"-inf" } else { b"inf" });
    } else {
        percent_17g(d, &mut out);
    }
    out
}

/// The text of a double from [`format_double`]: at most 32 bytes, no allocation.
#[derive(Clone, Copy, Default)]
pub struct DoubleText {
    buf: [u8; 32],
    len: usize,
}

// === impl DoubleText ===

impl DoubleText {
    /// The formatted bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }

    /// The formatted text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    fn push(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes.get(..dst.len()).unwrap_or_default());
            self.len = end;
        }
    }

    fn push_zeros(&mut self, n: usize) {
        for _ in 0..n {
            self.push(b"0");
        }
    }
}

impl std::fmt::Debug for DoubleText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for DoubleText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Write for DoubleText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        if self.len + s.len() > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.push(s.as_bytes());
        Ok(())
    }
}

/// C's `%.17g` for a finite `d`.
fn percent_17g(d: f64, out: &mut DoubleText) {
    const PRECISION: i32 = 17;
    // `{:.16e}` rounds exactly to 17 significant digits: `D.DDDDDDDDDDDDDDDDe[-]X`.
    let mut sci = DoubleText::default();
    if write!(sci, "{:.16e}", d.abs()).is_err() {
        return;
    }
    let sci = sci.as_bytes();
    let (mantissa, exponent) = match memchr::memchr(b'e', sci) {
        Some(e) => (
            sci.get(..e).unwrap_or_default(),
            sci.get(e + 1..).unwrap_or_default(),
        ),
        None => (sci, &b"0"[..]),
    };
    let mut digits = [0u8; 20];
    let mut ndigits = 0usize;
    for &b in mantissa.iter().filter(|b| b.is_ascii_digit()) {
        if let Some(slot) = digits.get_mut(ndigits) {
            *slot = b;
            ndigits += 1;
        }
    }
    // No `#` flag: trailing zeros go, but keep one digit.
    while ndigits > 1 && digits.get(ndigits - 1) == Some(&b'0') {
        ndigits -= 1;
    }
    let digits = digits.get(..ndigits).unwrap_or_default();
    let x: i32 = std::str::from_utf8(exponent)
        .ok()
        .and_then(|e| e.parse().ok())
        .unwrap_or(0);

    if d.is_sign_negative() {
        out.push(b"-");
    }
    if (-4..PRECISION).contains(&x) {
        if x >= 0 {
            let int_len = x.unsigned_abs() as usize + 1;
            let (int, frac) = digits.split_at(int_len.min(digits.len()));
            out.push(int);
            out.push_zeros(int_len - int.len());
            if !frac.is_empty() {
                out.push(b".");
                out.push(frac);
            }
        } else {
            out.push(b"0.");
            out.push_zeros(x.unsigned_abs() as usize - 1);
            out.push(digits);
        }
    } else {
        let (first, rest) = digits.split_at(1.min(digits.len()));
        out.push(first);
        if !rest.is_empty() {
            out.push(b".");
            out.push(rest);
        }
        out.push(if x < 0 { b"e-" } else { b"e+" });
        let exp = x.unsigned_abs();
        if exp < 10 {
            out.push(b"0");
        }
        let mut buf = itoa::Buffer::new();
        out.push(buf.format(exp).as_bytes());
    }
}

fn encode_items(prefix: u8, items: &[Frame], version: Version, dst: &mut BytesMut) {
    put_len(prefix, items.len(), dst);
    for item in items {
        encode(item, version, dst);
    }
}

fn encode_pairs(pairs: &[(Frame, Frame)], version: Version, dst: &mut BytesMut) {
    for (k, v) in pairs {
        encode(k, version, dst);
        encode(v, version, dst);
    }
}

/// Appends `<prefix><n>\r\n`.
fn put_len(prefix: u8, n: usize, dst: &mut BytesMut) {
    let mut buf = itoa::Buffer::new();
    put_line(prefix, buf.format(n).as_bytes(), dst);
}

/// Appends `<prefix><text>\r\n`.
fn put_line(prefix: u8, text: &[u8], dst: &mut BytesMut) {
    dst.reserve(text.len() + 3);
    dst.put_u8(prefix);
    dst.put_slice(text);
    dst.put_slice(b"\r\n");
}

/// Appends `<prefix><text>\r\n` with CR and LF in `text` replaced by spaces.
fn put_sanitized(prefix: u8, text: &[u8], dst: &mut BytesMut) {
    if memchr::memchr2(b'\r', b'\n', text).is_none() {
        put_line(prefix, text, dst);
        return;
    }
    dst.reserve(text.len() + 3);
    dst.put_u8(prefix);
    for &b in text {
        dst.put_u8(if b == b'\r' || b == b'\n' { b' ' } else { b });
    }
    dst.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests;

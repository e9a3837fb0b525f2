//! Incremental decoding of RESP2/RESP3 frames.
//!
//! One element parser ([`element`]) reads a single type byte and what directly belongs to it
//! (a line, a length-prefixed blob, or an aggregate header) and checks [`Limits`] as soon as a
//! length is known. Two drivers sit on top of it:
//!
//! - [`Scanner`] (and the one-shot [`frame_len`]) only counts: it keeps a stack of "children
//!   still missing" per open aggregate and remembers where it stopped, so each byte of a reply
//!   is looked at once however many reads it arrives in.
//! - [`decode`] first finds the frame's length with [`frame_len`], then splits those bytes off
//!   the buffer and builds the [`Frame`] from them. Building therefore never starts on a
//!   partial frame and never allocates for bytes that have not arrived.
//!
//! Both drivers are iterative (an explicit stack bounded by `max_depth`), so deep nesting
//! cannot overflow the call stack.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{Frame, Limits, ProtocolError};

/// Decodes one complete frame from the front of `buf`, advancing `buf` past it.
///
/// Returns `Ok(None)` if `buf` does not yet hold a complete frame (nothing is consumed).
/// Payloads of the returned frame share `buf`'s allocation.
///
/// Handles every RESP2 and RESP3 type: `+ - : $ * _ , # ( = % ~ > |`, the RESP2 nulls `$-1`
/// and `*-1` (as [`Frame::Null`] and [`Frame::NullArray`]) and the RESP3 blob error `!`
/// (as [`Frame::Error`]). An attribute `|` becomes a [`Frame::Attribute`] that wraps the frame
/// following it.
///
/// # Errors
/// Any [`ProtocolError`]; `buf` is then in an unspecified position and the stream cannot be
/// resynchronised.
///
/// Stateless: every call rescans the partial frame from its start. Use [`Scanner`] (and
/// decode only once it reports a length) when large frames arrive in many reads.
pub fn decode(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Frame>, ProtocolError> {
    let Some(len) = frame_len(buf, limits)? else {
        return Ok(None);
    };
    if len > buf.len() {
        // The scanner never reports more than it has seen; stay panic-free regardless.
        return Ok(None);
    }
    let bytes = buf.split_to(len).freeze();
    build(&bytes, limits).map(Some)
}

/// The length in bytes of the first complete frame in `buf`, without building it.
///
/// `Ok(None)` means more bytes are needed. Stateless: rescans from the start on every call;
/// use [`Scanner`] on a stream.
///
/// # Errors
/// The same as [`decode`]: the two agree on every input.
pub fn frame_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
    Scanner::default().scan(buf, limits)
}

/// A resumable [`frame_len`]: remembers how far it got in a partial frame so that a large
/// reply arriving in many reads is scanned once, not once per read.
///
/// State between calls, all relative to the start of the frame being scanned:
///
/// | field       | meaning                                                              |
/// |-------------|----------------------------------------------------------------------|
/// | `pos`       | start of the first element not yet complete (all before it is valid) |
/// | `line_from` | how far the line of the element at `pos` was searched for `\n`       |
/// | `stack`     | for each open aggregate, innermost last, children still missing      |
///
/// A length-prefixed payload that is still arriving costs one header re-parse per call (at
/// most 22 bytes), not a rescan of the payload.
#[derive(Debug, Default, Clone)]
pub struct Scanner {
    pos: usize,
    line_from: usize,
    stack: SmallVec<[usize; 8]>,
}

/// A RESP aggregate type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Array,
    Map,
    Set,
    Push,
    Attribute,
}

/// One element as read by [`element`]: ranges are absolute offsets into the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Elem {
    Simple(usize, usize),
    Error(usize, usize),
    Integer(i64),
    Double(usize, usize),
    Boolean(bool),
    BigNumber(usize, usize),
    Null,
    NullArray,
    Bulk(usize, usize),
    Verbatim([u8; 3], usize, usize),
    /// An aggregate header and how many child frames follow it (2N for a map, 2N+1 for an
    /// attribute, whose last child is the frame it describes).
    Aggregate(Kind, usize),
}

/// The result of reading one element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Step {
    /// The element and the offset just past it.
    Done(Elem, usize),
    /// More bytes are needed; a line has been searched for `\n` up to this offset.
    Partial(usize),
}

/// Why a `<digits>\r\n` header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a decimal number (or out of `i64` range).
    Invalid,
    /// The `\r` ending the number is not followed by `\n`.
    MissingCrlf,
}

// === impl Scanner ===

impl Scanner {
    /// A scanner at the start of a frame.
    pub fn new() -> Scanner {
        Scanner::default()
    }

    /// Scans `buf`, which must start with the frame this scanner has been scanning (the caller
    /// only appends to it between calls). Returns the frame's total length once complete, and
    /// resets itself for the next frame.
    ///
    /// `Ok(None)` means more bytes are needed; the scanner keeps its place. If `buf` is shorter
    /// than what was already scanned (the caller replaced the buffer), the scanner starts over
    /// rather than panic.
    ///
    /// # Errors
    /// The same as [`decode`]. The scanner resets itself; the stream cannot be resynchronised.
    pub fn scan(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        if buf.len() < self.pos || buf.len() < self.line_from {
            self.reset();
        }
        let result = self.run(buf, limits);
        match result {
            Ok(None) => {}
            // A complete frame leaves the stack empty.
            Ok(Some(_)) => (self.pos, self.line_from) = (0, 0),
            Err(_) => self.reset(),
        }
        result
    }

    /// Forgets any partial frame.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.line_from = 0;
        self.stack.clear();
    }

    fn run(&mut self, buf: &[u8], limits: &Limits) -> Result<Option<usize>, ProtocolError> {
        let mut pos = self.pos;
        let mut line_from = self.line_from;
        loop {
            // Bulk strings with short headers are most of what replies hold; this is the same
            // as `element` would do for them, without building an `Elem`.
            let step = match (buf.get(pos), small_len(buf, pos + 1)) {
                (Some(b'$'), Some((len, start))) if len <= limits.max_bulk_len => {
                    match payload(buf, start, len)? {
                        Some((end, next)) => Step::Done(Elem::Bulk(start, end), next),
                        None => Step::Partial(0),
                    }
                }
                _ => element(buf, pos, line_from, limits)?,
            };
            match step {
                Step::Partial(searched) => {
                    self.pos = pos;
                    self.line_from = searched;
                    return Ok(None);
                }
                Step::Done(elem, next) => {
                    pos = next;
                    line_from = 0;
                    if let Elem::Aggregate(_, children) = elem {
                        if self.stack.len() >= limits.max_depth {
                            return Err(ProtocolError::TooDeep {
                                limit: limits.max_depth,
                            });
                        }
                        if children > 0 {
                            self.stack.push(children);
                            continue;
                        }
                    }
                    if complete_child(&mut self.stack) {
                        return Ok(Some(pos));
                    }
                }
            }
        }
    }
}

/// Records that one child of the innermost open aggregate is complete, closing every
/// aggregate this completes. Returns true when the outermost frame is complete.
fn complete_child(stack: &mut SmallVec<[usize; 8]>) -> bool {
    while let Some(missing) = stack.last_mut() {
        *missing = missing.saturating_sub(1);
        if *missing > 0 {
            return false;
        }
        stack.pop();
    }
    true
}

// === element parsing ===

/// Reads the element starting at `buf[pos]`.
///
/// `line_from` resumes a search for `\n` (0 means from the start of the line). Lengths are
/// checked against `limits` as soon as their header is complete, before waiting for the
/// payload.
pub(crate) fn element(
    buf: &[u8],
    pos: usize,
    line_from: usize,
    limits: &Limits,
) -> Result<Step, ProtocolError> {
    let Some(&prefix) = buf.get(pos) else {
        return Ok(Step::Partial(0));
    };
    let body = pos + 1;
    match prefix {
        b'+' | b'-' | b':' | b',' | b'#' | b'_' | b'(' => {
            let Some((start, end, next)) = line(buf, body, line_from, limits)? else {
                return Ok(Step::Partial(buf.len()));
            };
            let text = buf.get(start..end).unwrap_or_default();
            let elem = match prefix {
                b'+' => Elem::Simple(start, end),
                b'-' => Elem::Error(start, end),
                b':' => Elem::Integer(parse_i64(text).ok_or(ProtocolError::BadValue("integer"))?),
                b',' if parse_double(text).is_some() => Elem::Double(start, end),
                b',' => return Err(ProtocolError::BadValue("double")),
                b'#' => match text {
                    b"t" => Elem::Boolean(true),
                    b"f" => Elem::Boolean(false),
                    _ => return Err(ProtocolError::BadValue("boolean")),
                },
                b'_' if text.is_empty() => Elem::Null,
                b'_' => return Err(ProtocolError::BadValue("null")),
                _ if is_big_number(text) => Elem::BigNumber(start, end),
                _ => return Err(ProtocolError::BadValue("big number")),
            };
            Ok(Step::Done(elem, next))
        }
        b'$' | b'=' | b'!' => {
            let (len, start) = match small_len(buf, body) {
                Some(small) => small,
                None => {
                    let Some((n, start)) = header(buf, body).map_err(bulk_header_error)? else {
                        return Ok(Step::Partial(0));
                    };
                    if n == -1 && prefix == b'$' {
                        return Ok(Step::Done(Elem::Null, start));
                    }
                    let len = usize::try_from(n).map_err(|_| ProtocolError::BadBulkLength)?;
                    (len, start)
                }
            };
            if len > limits.max_bulk_len {
                return Err(ProtocolError::BulkTooLarge {
                    limit: limits.max_bulk_len,
                });
            }
            let Some((end, next)) = payload(buf, start, len)? else {
                return Ok(Step::Partial(0));
            };
            let elem = match prefix {
                b'$' => Elem::Bulk(start, end),
                b'!' => Elem::Error(start, end),
                _ => match buf.get(start..end) {
                    Some(&[a, b, c, b':', ..]) => Elem::Verbatim([a, b, c], start + 4, end),
                    _ => return Err(ProtocolError::BadValue("verbatim string")),
                },
            };
            Ok(Step::Done(elem, next))
        }
        b'*' | b'%' | b'~' | b'>' | b'|' => {
            let (count, next) = match small_len(buf, body) {
                Some(small) => small,
                None => {
                    let Some((n, next)) = header(buf, body).map_err(array_header_error)? else {
                        return Ok(Step::Partial(0));
                    };
                    if n == -1 && prefix == b'*' {
                        return Ok(Step::Done(Elem::NullArray, next));
                    }
                    let count =
                        usize::try_from(n).map_err(|_| ProtocolError::BadMultibulkLength)?;
                    (count, next)
                }
            };
            if count > limits.max_array_len {
                return Err(ProtocolError::ArrayTooLarge {
                    limit: limits.max_array_len,
                });
            }
            let too_large = || ProtocolError::ArrayTooLarge {
                limit: limits.max_array_len,
            };
            let (kind, children) = match prefix {
                b'*' => (Kind::Array, count),
                b'~' => (Kind::Set, count),
                b'>' => (Kind::Push, count),
                b'%' => (Kind::Map, count.checked_mul(2).ok_or_else(too_large)?),
                _ => (
                    Kind::Attribute,
                    count
                        .checked_mul(2)
                        .and_then(|c| c.checked_add(1))
                        .ok_or_else(too_large)?,
                ),
            };
            Ok(Step::Done(Elem::Aggregate(kind, children), next))
        }
        other => Err(ProtocolError::BadPrefix(other)),
    }
}

/// Finds the CRLF ending the line whose content starts at `start`.
///
/// Returns `(start, end, next)`: the content is `buf[start..end]`, the next element starts at
/// `next`. `Ok(None)` means no `\n` yet. A line is held to `max_bulk_len` like any payload.
fn line(
    buf: &[u8],
    start: usize,
    line_from: usize,
    limits: &Limits,
) -> Result<Option<(usize, usize, usize)>, ProtocolError> {
    let from = line_from.max(start);
    let Some(off) = buf.get(from..).and_then(find_lf) else {
        if buf.len().saturating_sub(start) > limits.max_bulk_len.saturating_add(1) {
            return Err(ProtocolError::BulkTooLarge {
                limit: limits.max_bulk_len,
            });
        }
        return Ok(None);
    };
    let nl = from + off;
    // The length check comes first so the verdict does not depend on how the bytes arrived:
    // a partial line fails the same check above.
    if nl - start > limits.max_bulk_len.saturating_add(1) {
        return Err(ProtocolError::BulkTooLarge {
            limit: limits.max_bulk_len,
        });
    }
    if nl <= start || buf.get(nl - 1) != Some(&b'\r') {
        return Err(ProtocolError::MissingCrlf);
    }
    Ok(Some((start, nl - 1, nl + 1)))
}

/// The offset of the first `\n` in `haystack`.
#[inline]
fn find_lf(haystack: &[u8]) -> Option<usize> {
    // Most lines in replies are a few bytes (`+OK`, `:1`, `$5`); a plain loop beats memchr's
    // setup there, and memchr takes over for long lines.
    const SHORT: usize = 16;
    let (head, tail) = haystack.split_at(haystack.len().min(SHORT));
    match head.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i),
        None => memchr::memchr(b'\n', tail).map(|i| i + head.len()),
    }
}

/// Checks that `len` payload bytes at `start` are present and followed by CRLF.
///
/// Returns `(end, next)` with the payload at `buf[start..end]`, or `Ok(None)` if incomplete.
pub(crate) fn payload(
    buf: &[u8],
    start: usize,
    len: usize,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let end = start.checked_add(len).ok_or(ProtocolError::BadBulkLength)?;
    let Some(crlf) = buf.get(end..end.saturating_add(2)) else {
        return Ok(None);
    };
    if crlf != b"\r\n" {
        return Err(ProtocolError::MissingCrlf);
    }
    Ok(Some((end, end + 2)))
}

fn bulk_header_error(e: HeaderError) -> ProtocolError {
    match e {
        HeaderError::Invalid => ProtocolError::BadBulkLength,
        HeaderError::MissingCrlf => ProtocolError::MissingCrlf,
    }
}

fn array_header_error(e: HeaderError) -> ProtocolError {
    match e {
        HeaderError::Invalid => ProtocolError::BadMultibulkLength,
        HeaderError::MissingCrlf => ProtocolError::MissingCrlf,
    }
}

/// The common case of [`header`]: a length of one or two digits with its CRLF present.
///
/// Returns `(len, next)`, or `None` to fall back on [`header`] (which gives the same answer
/// for these inputs, just slower).
#[inline(always)]
pub(crate) fn small_len(buf: &[u8], start: usize) -> Option<(usize, usize)> {
    match *buf.get(start..start + 3)? {
        [d @ b'0'..=b'9', b'\r', b'\n'] => Some((usize::from(d - b'0'), start + 3)),
        [d1 @ b'1'..=b'9', d2 @ b'0'..=b'9', b'\r'] if buf.get(start + 3) == Some(&b'\n') => {
            Some((
                usize::from(d1 - b'0') * 10 + usize::from(d2 - b'0'),
                start + 4,
            ))
        }
        _ => None,
    }
}

/// Reads the signed decimal length at `buf[start..]` and the CRLF after it.
///
/// Returns `Ok(Some((n, next)))`, or `Ok(None)` if the line is incomplete. The number follows
/// Redis's `string2ll`: an optional `-`, then digits without leading zeros. Anything else fails
/// at the first bad byte, so a header never needs more than 22 bytes to be judged.
#[inline]
pub(crate) fn header(buf: &[u8], start: usize) -> Result<Option<(i64, usize)>, HeaderError> {
    let rest = buf.get(start..).unwrap_or_default();
    let (negative, digits) = match rest {
        [] => return Ok(None),
        [b'-', tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let mut value: u64 = 0;
    let mut len = 0;
    for &b in digits {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            break;
        }
        if len == 19 {
            // `i64::MAX` has 19 digits; 19 digits cannot overflow the u64 either.
            return Err(HeaderError::Invalid);
        }
        value = value * 10 + u64::from(digit);
        len += 1;
    }
    if len > 1 && digits.first() == Some(&b'0') {
        // A leading zero, as in "00" or "012".
        return Err(HeaderError::Invalid);
    }
    match (digits.get(len), digits.get(len + 1)) {
        (Some(b'\r'), Some(b'\n')) if len > 0 => {}
        (None, _) => return Ok(None),
        (Some(b'\r'), None) if len > 0 => return Ok(None),
        (Some(b'\r'), Some(_)) if len > 0 => return Err(HeaderError::MissingCrlf),
        _ => return Err(HeaderError::Invalid),
    }
    let n = if negative {
        if value == 0 {
            return Err(HeaderError::Invalid);
        }
        0i64.checked_sub_unsigned(value)
            .ok_or(HeaderError::Invalid)?
    } else {
        i64::try_from(value).map_err(|_| HeaderError::Invalid)?
    };
    Ok(Some((n, start + usize::from(negative) + len + 2)))
}

/// Parses a whole byte string as an `i64` with Redis's `string2ll` rules.
pub(crate) fn parse_i64(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'1'..=b'9', ..] => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// Parses a RESP3 double: a decimal or exponent number, `inf`, `-inf` or `nan`.
fn parse_double(text: &[u8]) -> Option<f64> {
    // Rust's parser also takes "infinity" and any letter case, which is harmless.
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A RESP3 big number: an optional `-` and at least one digit.
fn is_big_number(text: &[u8]) -> bool {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
}

// === building frames ===

/// An aggregate being filled in by [`build`].
struct Open {
    kind: Kind,
    children: usize,
    items: Vec<Frame>,
}

/// Builds the frame that fills `bytes` exactly, as already validated by [`frame_len`].
fn build(bytes: &Bytes, limits: &Limits) -> Result<Frame, ProtocolError> {
    let mut stack: Vec<Open> = Vec::new();
    let mut pos = 0;
    loop {
        let Step::Done(elem, next) = element(bytes, pos, 0, limits)? else {
            // Unreachable: the scan saw the whole frame in these bytes.
            return Err(ProtocolError::MissingCrlf);
        };
        pos = next;
        let mut frame = match elem {
            Elem::Aggregate(kind, children) if children > 0 => {
                stack.push(Open {
                    kind,
                    children,
                    // `children` is trusted here: the scan found that many elements in
                    // `bytes`, each at least three bytes long.
                    items: Vec::with_capacity(children),
                });
                continue;
            }
            Elem::Aggregate(kind, _) => finish(kind, Vec::new())?,
            Elem::Simple(s, e) => Frame::Simple(sub(bytes, s, e)),
            Elem::Error(s, e) => Frame::Error(sub(bytes, s, e)),
            Elem::Integer(n) => Frame::Integer(n),
            Elem::Double(s, e) => Frame::Double(sub(bytes, s, e)),
            Elem::Boolean(b) => Frame::Boolean(b),
            Elem::BigNumber(s, e) => Frame::BigNumber(sub(bytes, s, e)),
            Elem::Null => Frame::Null,
            Elem::NullArray => Frame::NullArray,
            Elem::Bulk(s, e) => Frame::Bulk(sub(bytes, s, e)),
            Elem::Verbatim(format, s, e) => Frame::Verbatim {
                format,
                text: sub(bytes, s, e),
            },
        };
        loop {
            let Some(top) = stack.last_mut() else {
                return Ok(frame);
            };
            top.items.push(frame);
            if top.items.len() < top.children {
                break;
            }
            let Some(open) = stack.pop() else {
                break;
            };
            frame = finish(open.kind, open.items)?;
        }
    }
}

/// `bytes[s..e]` as a shared slice. The ranges come from [`element`] and are always in
/// bounds; an empty slice stands in rather than a panic if that were ever wrong.
fn sub(bytes: &Bytes, s: usize, e: usize) -> Bytes {
    if s <= e && e <= bytes.len() {
        bytes.slice(s..e)
    } else {
        Bytes::new()
    }
}

/// Turns the children of a complete aggregate into its frame.
fn finish(kind: Kind, mut items: Vec<Frame>) -> Result<Frame, ProtocolError> {
    Ok(match kind {
        Kind::Array => Frame::Array(items),
        Kind::Set => Frame::Set(items),
        Kind::Push => Frame::Push(items),
        Kind::Map => Frame::Map(pairs(items)),
        Kind::Attribute => {
            let frame = items.pop().ok_or(ProtocolError::BadMultibulkLength)?;
            Frame::Attribute {
                attrs: pairs(items),
                frame: Box::new(frame),
            }
        }
    })
}

/// Pairs up `[k1, v1, k2, v2, ...]`.
fn pairs(items: Vec<Frame>) -> Vec<(Frame, Frame)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

#[cfg(test)]
mod tests;

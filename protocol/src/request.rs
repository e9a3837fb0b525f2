//! [`Request`]: a client command with its raw bytes and argument positions, and the request
//! decoder ([`decode_request`], [`RequestDecoder`]).
//!
//! A multibulk request is parsed in place: the decoder records where each argument lies and
//! then splits the request's bytes off the read buffer, so nothing is copied. An inline request
//! is split with Redis's `sdssplitargs` rules and re-encoded once as multibulk, so `raw` can
//! always be forwarded to a backend as it is.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use smallvec::SmallVec;

use crate::decode::{header, payload, small_len, HeaderError};
use crate::{Limits, ProtocolError};

/// Argument offsets are stored as `u32`, so an encoded request must stay below 4 GiB.
const MAX_RAW_LEN: usize = u32::MAX as usize;

/// A client command: an array of bulk strings.
///
/// `raw` always holds the command as a valid RESP multibulk array (an inline command is
/// re-encoded once when parsed), so it can be written to a backend as it is. Arguments are
/// byte ranges into `raw`: parsing a request copies nothing and allocates nothing for up to
/// eight arguments.
///
/// Invariant: there is at least one argument.
#[derive(Clone, PartialEq, Eq)]
pub struct Request {
    /// Invariant: a multibulk array of `args.len()` bulk strings.
    raw: Bytes,
    /// (start, end) of each argument's payload within `raw`.
    args: SmallVec<[(u32, u32); 8]>,
}

// === impl Request ===

impl Request {
    /// Builds a request from arguments, encoding them as a RESP multibulk array.
    ///
    /// # Panics
    /// If `args` is empty, or if the encoding would exceed 4 GiB.
    pub fn from_args<I, A>(args: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let args: SmallVec<[A; 8]> = args.into_iter().collect();
        assert!(!args.is_empty(), "a request needs at least a command name");
        let size = args.iter().fold(header_len(args.len()), |size, a| {
            size.saturating_add(bulk_len(a.as_ref().len()))
        });
        assert!(size <= MAX_RAW_LEN, "a request must be smaller than 4 GiB");
        let mut raw = BytesMut::with_capacity(size);
        let mut ranges = SmallVec::with_capacity(args.len());
        put_header(b'*', args.len(), &mut raw);
        for a in &args {
            ranges.push(put_bulk(a.as_ref(), &mut raw));
        }
        Request {
            raw: raw.freeze(),
            args: ranges,
        }
    }

    /// The raw RESP bytes of the whole request.
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The number of arguments, including the command name. Always at least 1.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    /// Always false: a request has at least its command name.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Argument `i` (0 is the command name), or `None` past the end.
    pub fn arg(&self, i: usize) -> Option<&[u8]> {
        let (s, e) = *self.args.get(i)?;
        self.raw.get(s as usize..e as usize)
    }

    /// Argument `i` as a zero-copy `Bytes` slice of `raw`.
    pub fn arg_bytes(&self, i: usize) -> Option<Bytes> {
        let (s, e) = *self.args.get(i)?;
        Some(self.raw.slice(s as usize..e as usize))
    }

    /// The command name (argument 0), as sent (case unchanged).
    pub fn name(&self) -> &[u8] {
        self.arg(0).unwrap_or_default()
    }

    /// Iterates over all arguments, starting with the command name.
    pub fn args(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        self.args
            .iter()
            .map(move |&(s, e)| self.raw.get(s as usize..e as usize).unwrap_or_default())
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for a in self.args() {
            list.entry(&String::from_utf8_lossy(a));
        }
        list.finish()
    }
}

/// Decodes one client request from the front of `buf`.
///
/// Accepts multibulk (`*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n`) and inline (`ECHO hi\r\n`, with
/// Redis's quoting rules) requests. Empty requests (`*0\r\n`, `*-1\r\n` or any negative count, a blank inline line) are
/// consumed and skipped, as Redis does.
///
/// Returns `Ok(Some(request))` and advances `buf` past it; `Ok(None)` if more bytes are needed
/// (`buf` unchanged, except that skipped empty requests are consumed); `Err` if the bytes are
/// not a valid request or break `limits`, after which the connection must be closed.
///
/// Stateless: a partial request is re-parsed from its start on the next call. That costs one
/// header per argument already received, never a rescan of payloads; a session that may see
/// very long requests arrive piecemeal can keep a [`RequestDecoder`] instead.
pub fn decode_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    loop {
        let (mut remaining, mut pos) = match start(buf, limits, 0)? {
            Start::Partial { .. } => return Ok(None),
            Start::Skip(n) => {
                buf.advance(n);
                continue;
            }
            Start::Inline(request, n) => {
                buf.advance(n);
                return Ok(Some(*request));
            }
            Start::Multibulk { count, pos } => (count, pos),
        };
        let mut args = SmallVec::new();
        if !bulks(buf, &mut pos, &mut remaining, &mut args, limits)? {
            return Ok(None);
        }
        return Ok(split_request(buf, pos, args));
    }
}

/// A resumable [`decode_request`]: remembers the arguments of a partial request so each byte
/// is parsed once however many reads the request arrives in.
///
/// The caller must only append to `buf` between calls that return `Ok(None)`. State:
///
/// | field       | meaning                                                                 |
/// |-------------|-------------------------------------------------------------------------|
/// | `pos`       | 0: between requests; else where the next bulk header of a multibulk is |
/// | `remaining` | bulk strings still to read                                              |
/// | `args`      | payload ranges of the bulk strings read so far                          |
/// | `searched`  | how far an inline line has been searched for `\n`                       |
#[derive(Debug, Default, Clone)]
pub struct RequestDecoder {
    pos: usize,
    remaining: usize,
    args: SmallVec<[(u32, u32); 8]>,
    searched: usize,
}

/// How the bytes at the front of the buffer begin.
enum Start {
    /// More bytes are needed; an inline line has been searched for `\n` up to here.
    Partial { searched: usize },
    /// An empty request of this many bytes, to consume and skip.
    Skip(usize),
    /// An inline request and the bytes its line takes. Boxed to keep the common variants
    /// small: this enum is returned on every call.
    Inline(Box<Request>, usize),
    /// A multibulk header: `count` bulk strings follow from `pos`.
    Multibulk { count: usize, pos: usize },
}

// === impl RequestDecoder ===

impl RequestDecoder {
    /// A decoder between requests.
    pub fn new() -> RequestDecoder {
        RequestDecoder::default()
    }

    /// Decodes one request from the front of `buf`, exactly like [`decode_request`], resuming
    /// where the previous call stopped.
    ///
    /// # Errors
    /// As [`decode_request`]. The decoder resets itself.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Request>, ProtocolError> {
        if buf.len() < self.pos || buf.len() < self.searched {
            // The caller replaced the buffer: start over rather than trust stale offsets.
            self.reset();
        }
        loop {
            if self.pos == 0 {
                let start = start(buf, limits, self.searched);
                self.searched = 0;
                match start {
                    Err(e) => return Err(e),
                    Ok(Start::Partial { searched }) => {
                        self.searched = searched;
                        return Ok(None);
                    }
                    Ok(Start::Skip(n)) => {
                        buf.advance(n);
                        continue;
                    }
                    Ok(Start::Inline(request, n)) => {
                        buf.advance(n);
                        return Ok(Some(*request));
                    }
                    Ok(Start::Multibulk { count, pos }) => {
                        self.pos = pos;
                        self.remaining = count;
                        self.args.clear();
                    }
                }
            }
            return match bulks(
                buf,
                &mut self.pos,
                &mut self.remaining,
                &mut self.args,
                limits,
            ) {
                Err(e) => {
                    self.reset();
                    Err(e)
                }
                Ok(false) => Ok(None),
                Ok(true) => {
                    let (end, args) = (self.pos, std::mem::take(&mut self.args));
                    self.reset();
                    Ok(split_request(buf, end, args))
                }
            };
        }
    }

    /// Forgets any partial request.
    pub fn reset(&mut self) {
        self.pos = 0;
        self.remaining = 0;
        self.args.clear();
        self.searched = 0;
    }
}

/// Reads what the front of `buf` starts with: a multibulk header, or a whole inline line.
///
/// `searched` resumes the search for an inline line's `\n`.
#[inline]
fn start(buf: &[u8], limits: &Limits, searched: usize) -> Result<Start, ProtocolError> {
    match buf.first() {
        None => Ok(Start::Partial { searched: 0 }),
        Some(b'*') => {
            let (count, pos) = match small_len(buf, 1) {
                Some(small) => small,
                None => {
                    let header = header(buf, 1).map_err(|e| match e {
                        HeaderError::Invalid => ProtocolError::BadMultibulkLength,
                        HeaderError::MissingCrlf => ProtocolError::MissingCrlf,
                    })?;
                    let Some((n, pos)) = header else {
                        return Ok(Start::Partial { searched: 0 });
                    };
                    // Redis skips a multibulk header whose count is 0 or negative, as if
                    // the client had sent nothing (`*-10\r\n` is not an error).
                    if n <= 0 {
                        return Ok(Start::Skip(pos));
                    }
                    let count =
                        usize::try_from(n).map_err(|_| ProtocolError::BadMultibulkLength)?;
                    (count, pos)
                }
            };
            if count == 0 {
                return Ok(Start::Skip(pos));
            }
            if count > limits.max_array_len {
                return Err(ProtocolError::ArrayTooLarge {
                    limit: limits.max_array_len,
                });
            }
            Ok(Start::Multibulk { count, pos })
        }
        Some(_) => inline(buf, limits, searched),
    }
}

/// Reads the bulk strings of a multibulk request from `*pos` until `*remaining` is 0,
/// appending their payload ranges to `args`.
///
/// Returns `Ok(true)` when the request is complete (`*pos` is then its length), `Ok(false)`
/// when more bytes are needed (`*pos` and `*remaining` say where to resume).
#[inline]
fn bulks(
    buf: &[u8],
    pos: &mut usize,
    remaining: &mut usize,
    args: &mut SmallVec<[(u32, u32); 8]>,
    limits: &Limits,
) -> Result<bool, ProtocolError> {
    let (mut p, mut left) = (*pos, *remaining);
    let complete = loop {
        if left == 0 {
            break true;
        }
        let Some(&prefix) = buf.get(p) else {
            break false;
        };
        if prefix != b'$' {
            return Err(ProtocolError::ExpectedBulk(prefix));
        }
        let (len, start) = match small_len(buf, p + 1) {
            Some(small) => small,
            None => {
                let header = header(buf, p + 1).map_err(|e| match e {
                    HeaderError::Invalid => ProtocolError::BadBulkLength,
                    HeaderError::MissingCrlf => ProtocolError::MissingCrlf,
                })?;
                let Some((n, start)) = header else {
                    break false;
                };
                let len = usize::try_from(n).map_err(|_| ProtocolError::BadBulkLength)?;
                (len, start)
            }
        };
        if len > limits.max_bulk_len {
            return Err(ProtocolError::BulkTooLarge {
                limit: limits.max_bulk_len,
            });
        }
        if start.saturating_add(len).saturating_add(2) > MAX_RAW_LEN {
            return Err(ProtocolError::RequestTooLarge { limit: MAX_RAW_LEN });
        }
        let Some((end, next)) = payload(buf, start, len)? else {
            break false;
        };
        // Both fit in u32: checked against MAX_RAW_LEN above.
        args.push((start as u32, end as u32));
        left -= 1;
        p = next;
    };
    (*pos, *remaining) = (p, left);
    Ok(complete)
}

/// Splits the complete request of `len` bytes off `buf`.
#[inline]
fn split_request(
    buf: &mut BytesMut,
    len: usize,
    args: SmallVec<[(u32, u32); 8]>,
) -> Option<Request> {
    if len > buf.len() {
        // Unreachable: `len` was measured in `buf`. Stay panic-free regardless.
        return None;
    }
    let raw = buf.split_to(len).freeze();
    Some(Request { raw, args })
}

/// Reads an inline request: one line ending in `\n` or `\r\n`.
#[inline(never)]
fn inline(buf: &[u8], limits: &Limits, searched: usize) -> Result<Start, ProtocolError> {
    // The newline must come within `max_inline_len` bytes of content.
    let window = buf.len().min(limits.max_inline_len.saturating_add(1));
    let from = searched.min(window);
    let found = buf.get(from..window).and_then(|w| memchr::memchr(b'\n', w));
    let Some(off) = found else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::InlineTooBig);
        }
        return Ok(Start::Partial { searched: window });
    };
    let nl = from + off;
    let mut line = buf.get(..nl).unwrap_or_default();
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    let mut text = Vec::new();
    let mut ranges: SmallVec<[(usize, usize); 8]> = SmallVec::new();
    split_args(line, &mut text, &mut ranges)?;
    if ranges.is_empty() {
        return Ok(Start::Skip(nl + 1));
    }
    Ok(Start::Inline(
        Box::new(encode_inline(&text, &ranges)?),
        nl + 1,
    ))
}

/// Encodes the arguments split from an inline line (`text[s..e]` for each range).
fn encode_inline(text: &[u8], ranges: &[(usize, usize)]) -> Result<Request, ProtocolError> {
    let size = ranges
        .iter()
        .fold(header_len(ranges.len()), |size, &(s, e)| {
            size.saturating_add(bulk_len(e - s))
        });
    if size > MAX_RAW_LEN {
        return Err(ProtocolError::RequestTooLarge { limit: MAX_RAW_LEN });
    }
    let mut raw = BytesMut::with_capacity(size);
    let mut args = SmallVec::with_capacity(ranges.len());
    put_header(b'*', ranges.len(), &mut raw);
    for &(s, e) in ranges {
        args.push(put_bulk(text.get(s..e).unwrap_or_default(), &mut raw));
    }
    Ok(Request {
        raw: raw.freeze(),
        args,
    })
}

/// Bytes taken by `*n\r\n` or `$n\r\n`.
fn header_len(n: usize) -> usize {
    3 + itoa::Buffer::new().format(n).len()
}

/// Bytes taken by a bulk string of `len` bytes.
fn bulk_len(len: usize) -> usize {
    header_len(len).saturating_add(len).saturating_add(2)
}

fn put_header(prefix: u8, n: usize, dst: &mut BytesMut) {
    dst.put_u8(prefix);
    dst.put_slice(itoa::Buffer::new().format(n).as_bytes());
    dst.put_slice(b"\r\n");
}

/// Appends a bulk string and returns the range of its payload within `dst`. Callers have
/// checked that `dst` stays below 4 GiB.
fn put_bulk(arg: &[u8], dst: &mut BytesMut) -> (u32, u32) {
    put_header(b'$', arg.len(), dst);
    let start = dst.len() as u32;
    dst.put_slice(arg);
    let end = dst.len() as u32;
    dst.put_slice(b"\r\n");
    (start, end)
}

/// Splits an inline line into arguments like Redis's `sdssplitargs`, appending each argument
/// to `text` and its range within `text` to `ranges`.
///
/// - Arguments are separated by whitespace (`isspace`: space, `\t`, `\n`, `\v`, `\f`, `\r`),
///   though only space, `\t`, `\n` and `\r` end an unquoted argument.
/// - `"double quotes"` take the escapes `\n \r \t \b \a \xHH`, and a backslash before any other
///   byte stands for that byte (so `\"` and `\\`).
/// - `'single quotes'` take only `\'`.
/// - A quote may start inside an argument (`a"b c"` is `ab c`), but a closing quote must be
///   followed by whitespace or the end of the line.
/// - A NUL byte ends the line, as it ends the C string `sdssplitargs` reads. (Redis 7.0 finds
///   the newline with `strchr`, so it waits forever on such a line; ending it is kinder.)
///
/// # Errors
/// [`ProtocolError::UnbalancedQuotes`] for an unterminated quote or a closing quote followed
/// by something else than whitespace.
fn split_args(
    line: &[u8],
    text: &mut Vec<u8>,
    ranges: &mut SmallVec<[(usize, usize); 8]>,
) -> Result<(), ProtocolError> {
    let line = match memchr::memchr(0, line) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    let mut i = 0;
    loop {
        while line.get(i).is_some_and(|&b| is_space(b)) {
            i += 1;
        }
        if i >= line.len() {
            return Ok(());
        }
        let start = text.len();
        let mut quote = None;
        loop {
            let Some(&b) = line.get(i) else {
                if quote.is_some() {
                    return Err(ProtocolError::UnbalancedQuotes);
                }
                break;
            };
            match quote {
                Some(b'"') => match (b, line.get(i + 1).copied()) {
                    (b'\\', Some(b'x'))
                        if line.get(i + 2).copied().and_then(hex).is_some()
                            && line.get(i + 3).copied().and_then(hex).is_some() =>
                    {
                        let hi = line.get(i + 2).copied().and_then(hex).unwrap_or(0);
                        let lo = line.get(i + 3).copied().and_then(hex).unwrap_or(0);
                        text.push(hi * 16 + lo);
                        i += 4;
                    }
                    (b'\\', Some(c)) => {
                        text.push(match c {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 2;
                    }
                    (b'"', next) => {
                        if next.is_some_and(|c| !is_space(c)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => {
                        text.push(b);
                        i += 1;
                    }
                },
                Some(_) => match (b, line.get(i + 1).copied()) {
                    (b'\\', Some(b'\'')) => {
                        text.push(b'\'');
                        i += 2;
                    }
                    (b'\'', next) => {
                        if next.is_some_and(|c| !is_space(c)) {
                            return Err(ProtocolError::UnbalancedQuotes);
                        }
                        i += 1;
                        break;
                    }
                    _ => {
                        text.push(b);
                        i += 1;
                    }
                },
                None => match b {
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        i += 1;
                        break;
                    }
                    b'"' | b'\'' => {
                        quote = Some(b);
                        i += 1;
                    }
                    _ => {
                        text.push(b);
                        i += 1;
                    }
                },
            }
        }
        ranges.push((start, text.len()));
    }
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

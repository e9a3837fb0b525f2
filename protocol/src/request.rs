//! [`Request`]: a client command with its raw bytes and argument positions.

use bytes::{Bytes, BytesMut};
use smallvec::SmallVec;

use crate::{Limits, ProtocolError};

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
    raw: Bytes,
    /// (start, end) of each argument's payload within `raw`.
    args: SmallVec<[(u32, u32); 8]>,
}

impl Request {
    /// Builds a request from arguments, encoding them as a RESP multibulk array.
    ///
    /// # Panics
    /// If `args` is empty.
    pub fn from_args<I, A>(args: I) -> Request
    where
        I: IntoIterator<Item = A>,
        A: AsRef<[u8]>,
    {
        let _ = args;
        unimplemented!()
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
            .map(move |&(s, e)| &self.raw[s as usize..e as usize])
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
/// Redis's quoting rules) requests. Empty requests (`*0\r\n`, `*-1\r\n`, a blank inline line) are
/// consumed and skipped, as Redis does.
///
/// Returns `Ok(Some(request))` and advances `buf` past it; `Ok(None)` if more bytes are needed
/// (`buf` unchanged, except that skipped empty requests are consumed); `Err` if the bytes are
/// not a valid request or break `limits`, after which the connection must be closed.
pub fn decode_request(
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Request>, ProtocolError> {
    let _ = (buf, limits);
    unimplemented!()
}

//! LMOVE, BLMOVE, RPOPLPUSH and BRPOPLPUSH whose source and destination are in different
//! slots.
//!
//! One node moves the element atomically; across slots the proxy does it in two steps:
//!
//! | stage | sends | next |
//! |-------|-------|------|
//! | pop   | `LMPOP 1 src END` (pooled), or `BLMPOP timeout 1 src END` on the client's own connection | nil: answer nil; element: push |
//! | push  | `LPUSH`/`RPUSH dst element` | done: answer the element; error (WRONGTYPE): put back |
//! | put back | `LPUSH`/`RPUSH src element`, the end it came from | done: answer the push's error |
//!
//! Every stage is one request, redirected and retried like any other, and the client's next
//! requests wait until the last one is answered. So the element is never duplicated and,
//! unless the proxy dies between the steps, never lost; but for that moment it is in neither
//! list, where one node would show it in one of them.

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::Slot;

use super::pop::{check_timeout, decode};
use super::{encode, Entry, Pending, Session};
use crate::dispatch::Target;
use crate::error::ProxyError;

/// A cross-slot list move in progress.
#[derive(Debug)]
pub(super) struct Move {
    src: Bytes,
    dst: Bytes,
    /// Pop from the left of `src` (else the right).
    from_left: bool,
    /// Push on the left of `dst` (else the right).
    to_left: bool,
    /// BLMOVE, BRPOPLPUSH: the timeout in seconds.
    timeout: Option<Bytes>,
    /// The element, once popped (push stage).
    element: Option<Bytes>,
    /// The push's refusal, while the element is put back (put-back stage).
    refused: Option<Frame>,
    pending: Pending,
}

// === impl Move ===

impl Move {
    /// Reads a move command whose (stored) keys span slots; `name` is its table name.
    pub(super) fn parse(name: &str, req: &Request) -> Result<Move, ProxyError> {
        let arg = |i| req.arg_bytes(i).unwrap_or_default();
        let end = |i| match req.arg(i) {
            Some(w) if w.eq_ignore_ascii_case(b"left") => Ok(true),
            Some(w) if w.eq_ignore_ascii_case(b"right") => Ok(false),
            _ => Err(ProxyError::Other("ERR syntax error".to_string())),
        };
        let (from_left, to_left, timeout) = match name {
            "lmove" => (end(3)?, end(4)?, None),
            "blmove" => (end(3)?, end(4)?, Some(arg(5))),
            "rpoplpush" => (false, true, None),
            "brpoplpush" => (false, true, Some(arg(3))),
            _ => return Err(ProxyError::CrossSlot("?")),
        };
        if let Some(t) = &timeout {
            check_timeout(t)?;
        }
        let src = arg(1);
        let side: &[u8] = if from_left { b"LEFT" } else { b"RIGHT" };
        let (pop, target) = match &timeout {
            Some(t) => (
                Request::from_args([b"BLMPOP".as_slice(), t, b"1", &src, side]),
                Target::Blocking(Slot::for_key(&src)),
            ),
            None => (
                Request::from_args([b"LMPOP".as_slice(), b"1", &src, side]),
                Target::Slot(Slot::for_key(&src)),
            ),
        };
        Ok(Move {
            dst: arg(2),
            src,
            from_left,
            to_left,
            timeout,
            element: None,
            refused: None,
            pending: Pending::new(pop, target),
        })
    }

    /// The pending request of this move, while it waits for its reply.
    pub(super) fn pending(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

// === impl Session: cross-slot moves ===

impl Session {
    /// The reply to the current stage of the move at queue position `idx`.
    pub(super) fn move_done(&mut self, seq: u64, idx: usize, raw: Bytes) {
        let Some(Entry::Move(m)) = self.queue.get_mut(idx) else {
            return;
        };
        let frame = decode(&raw);
        if let Some(refused) = m.refused.take() {
            // The put-back's reply: the element is where it was; the client gets the refusal.
            let answer = match frame {
                Frame::Integer(_) => refused,
                other => put_back_failed("move", &refused, &other),
            };
            return self.move_answer(idx, answer);
        }
        let answer = match (m.element.take(), frame) {
            // The pop failed: nothing was taken.
            (None, err @ Frame::Error(_)) => err,
            (None, Frame::Array(items)) => {
                // `[src, [element]]`: now push it.
                let element = match items.into_iter().nth(1) {
                    Some(Frame::Array(popped)) => match popped.into_iter().next() {
                        Some(Frame::Bulk(e)) => e,
                        _ => return self.move_answer(idx, unexpected()),
                    },
                    _ => return self.move_answer(idx, unexpected()),
                };
                let cmd: &[u8] = if m.to_left { b"LPUSH" } else { b"RPUSH" };
                let push = Request::from_args([cmd, &m.dst, &element]);
                m.pending = Pending::new(push, Target::Slot(Slot::for_key(&m.dst)));
                m.element = Some(element);
                return self.send(seq, 0, None);
            }
            (None, _) if m.timeout.is_some() => Frame::NullArray,
            (None, _) => Frame::Null,
            (Some(element), Frame::Integer(_)) => Frame::Bulk(element),
            (Some(_), Frame::Error(e)) if e.windows(UNKNOWN.len()).any(|w| w == UNKNOWN) => {
                // The push may have been applied: putting the element back could duplicate
                // it. The error says so.
                tracing::warn!(
                    client = self.client.id,
                    "cross-slot move: push outcome unknown"
                );
                Frame::Error(e)
            }
            (Some(element), other) => {
                // Not pushed (WRONGTYPE, OOM, no owner): put it back at the end it came from,
                // then answer the refusal.
                let cmd: &[u8] = if m.from_left { b"LPUSH" } else { b"RPUSH" };
                let back = Request::from_args([cmd, &m.src, &element]);
                m.pending = Pending::new(back, Target::Slot(Slot::for_key(&m.src)));
                m.refused = Some(match other {
                    err @ Frame::Error(_) => err,
                    _ => unexpected(),
                });
                return self.send(seq, 0, None);
            }
        };
        self.move_answer(idx, answer);
    }

    fn move_answer(&mut self, idx: usize, frame: Frame) {
        if let Some(entry) = self.queue.get_mut(idx) {
            *entry = Entry::Done(encode(&frame, self.client.version));
        }
    }
}

/// What the proxy's error for a request whose outcome is unknown says (`error.rs`).
pub(super) const UNKNOWN: &[u8] = b"may or may not have been applied";

/// The answer when what a cross-slot `what` took from its source could not be put back after
/// the destination refused it (`refused`): the source lost it, and the client must know.
pub(super) fn put_back_failed(what: &str, refused: &Frame, err: &Frame) -> Frame {
    let text = |f: &Frame| match f {
        Frame::Error(e) => String::from_utf8_lossy(e).into_owned(),
        other => format!("{other:?}"),
    };
    let (refused, err) = (text(refused), text(err));
    tracing::warn!(%refused, %err, "cross-slot {what}: the taken element could not be put back");
    Frame::Error(Bytes::from(format!(
        "ERR Slotway: the destination refused the cross-slot {what} ({refused}) and putting \
         the element back into the source failed ({err}): the source lost it"
    )))
}

fn unexpected() -> Frame {
    Frame::Error(Bytes::from_static(
        b"ERR Slotway: unexpected reply from a cluster node during a cross-slot move",
    ))
}

//! SMOVE whose source and destination are in different slots.
//!
//! One node moves the member atomically; across slots the proxy does it in steps that give
//! Redis's answers, errors included:
//!
//! | stage  | sends (to)                              | next |
//! |--------|-----------------------------------------|------|
//! | take   | `SREM src member` (source's node)       | error (WRONGTYPE): it; removed: add; else (no member, or no source): check |
//! | add    | `SADD dst member` (destination's node)  | done: 1; error (WRONGTYPE): put back |
//! | put back | `SADD src member` (source's node)     | done: answer the add's error |
//! | check  | `TYPE dst` (destination's node)         | set or none: 0; another type: source |
//! | source | `EXISTS src` (source's node)            | the source exists: WRONGTYPE (Redis checks the destination's type before the member); else 0 |
//!
//! Every stage is one command, so that a redirect (`ASK` during a migration) moves it whole.
//!
//! As with LMOVE across slots, the member is never in both sets and, unless the proxy dies
//! between the steps, never lost; for that moment it is in neither. If the add's outcome is
//! unknown (its connection died after sending), the member is not put back and the error says
//! the command may or may not have been applied.

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::Slot;

use super::lmove::{put_back_failed, UNKNOWN};
use super::pop::decode;
use super::{encode, Entry, Pending, Session};
use crate::dispatch::Target;

const WRONGTYPE: &[u8] = b"WRONGTYPE Operation against a key holding the wrong kind of value";

/// A cross-slot SMOVE in progress.
#[derive(Debug)]
pub(super) struct SetMove {
    src: Bytes,
    dst: Bytes,
    member: Bytes,
    stage: Stage,
    pending: Pending,
}

#[derive(Debug)]
enum Stage {
    Take,
    Add,
    Check,
    Source,
    /// The add was refused with this error; the member goes back to the source.
    PutBack(Frame),
}

// === impl SetMove ===

impl SetMove {
    /// Reads an SMOVE whose (stored) keys span slots.
    pub(super) fn parse(req: &Request) -> SetMove {
        let arg = |i| req.arg_bytes(i).unwrap_or_default();
        let (src, dst, member) = (arg(1), arg(2), arg(3));
        let srem = Request::from_args([b"SREM".as_slice(), &src, &member]);
        let pending = Pending::new(srem, Target::Slot(Slot::for_key(&src)));
        SetMove {
            src,
            dst,
            member,
            stage: Stage::Take,
            pending,
        }
    }

    /// The pending request of this move, while it waits for its reply.
    pub(super) fn pending(&mut self) -> &mut Pending {
        &mut self.pending
    }

    /// Goes on to `stage` with `req`, sent to the node of its key.
    fn next(&mut self, stage: Stage, req: Request) {
        let slot = Slot::for_key(req.arg(1).unwrap_or_default());
        self.pending = Pending::new(req, Target::Slot(slot));
        self.stage = stage;
    }
}

// === impl Session: cross-slot SMOVE ===

impl Session {
    /// The reply to the current stage of the SMOVE at queue position `idx`.
    pub(super) fn smove_done(&mut self, seq: u64, idx: usize, raw: Bytes) {
        let Some(Entry::SetMove(m)) = self.queue.get_mut(idx) else {
            return;
        };
        let answer = match std::mem::replace(&mut m.stage, Stage::Take) {
            Stage::Take => match decode(&raw) {
                Frame::Integer(1) => {
                    let add = Request::from_args([b"SADD".as_slice(), &m.dst, &m.member]);
                    m.next(Stage::Add, add);
                    return self.send(seq, 0, None);
                }
                Frame::Integer(_) => {
                    let check = Request::from_args([b"TYPE".as_slice(), &m.dst]);
                    m.next(Stage::Check, check);
                    return self.send(seq, 0, None);
                }
                err @ Frame::Error(_) => err,
                _ => unexpected(),
            },
            Stage::Add => match decode(&raw) {
                Frame::Integer(_) => Frame::Integer(1),
                // The add may have been applied: putting the member back could leave it in
                // both sets. The error says so.
                Frame::Error(e) if e.windows(UNKNOWN.len()).any(|w| w == UNKNOWN) => {
                    Frame::Error(e)
                }
                other => {
                    // Not added (WRONGTYPE, OOM, no owner): put the member back, then answer
                    // the refusal.
                    let refused = match other {
                        err @ Frame::Error(_) => err,
                        _ => unexpected(),
                    };
                    let back = Request::from_args([b"SADD".as_slice(), &m.src, &m.member]);
                    m.next(Stage::PutBack(refused), back);
                    return self.send(seq, 0, None);
                }
            },
            Stage::PutBack(refused) => match decode(&raw) {
                Frame::Integer(_) => refused,
                other => put_back_failed("SMOVE", &refused, &other),
            },
            Stage::Check => match decode(&raw) {
                Frame::Simple(t) if t.as_ref() == b"set" || t.as_ref() == b"none" => {
                    Frame::Integer(0)
                }
                Frame::Simple(_) => {
                    let exists = Request::from_args([b"EXISTS".as_slice(), &m.src]);
                    m.next(Stage::Source, exists);
                    return self.send(seq, 0, None);
                }
                err @ Frame::Error(_) => err,
                _ => unexpected(),
            },
            Stage::Source => match decode(&raw) {
                Frame::Integer(0) => Frame::Integer(0),
                Frame::Integer(_) => Frame::Error(Bytes::from_static(WRONGTYPE)),
                err @ Frame::Error(_) => err,
                _ => unexpected(),
            },
        };
        if let Some(entry) = self.queue.get_mut(idx) {
            *entry = Entry::Done(encode(&answer, self.client.version));
        }
    }
}

fn unexpected() -> Frame {
    Frame::Error(Bytes::from_static(
        b"ERR Slotway: unexpected reply from a cluster node during a cross-slot SMOVE",
    ))
}

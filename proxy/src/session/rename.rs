//! RENAME, RENAMENX and COPY whose source and destination are in different slots.
//!
//! One node renames atomically; across slots the proxy copies the value and then removes the
//! source, with Redis's own serialization:
//!
//! | stage  | sends (to)                                                     | next |
//! |--------|----------------------------------------------------------------|------|
//! | read   | a script: `DUMP src` and `PTTL src` (source's node)          | nil: `ERR no such key` (COPY: 0); else write |
//! | write  | `RESTORE dst ttl payload [REPLACE]` (destination's node)       | BUSYKEY: 0 (RENAMENX, COPY without REPLACE); COPY: 1; else remove |
//! | remove | a script: `DEL src` if `DUMP src` is still the payload (source's node) | RENAME: OK, RENAMENX: 1 |
//!
//! The destination is replaced atomically on its node (readers see the old or the new value,
//! as with the write-then-rename pattern on one node), and the source is never lost: if the
//! proxy dies between the write and the remove, both keys exist. If the source changed
//! between the read and the remove, it is left alone: as if the rename had happened first and
//! the change had created a new source. The TTL moves with the value, less the milliseconds
//! the copy took.

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::Slot;

use super::pop::decode;
use super::{encode, Entry, Pending, Session};
use crate::dispatch::Target;
use crate::error::ProxyError;

/// The value and its TTL, read together.
const READ: &[u8] = b"return {redis.call('DUMP', KEYS[1]), redis.call('PTTL', KEYS[1])}";

/// Deletes the source only if it still holds what was copied.
const REMOVE_IF_UNCHANGED: &[u8] =
    b"if redis.call('DUMP', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// A cross-slot rename or copy in progress.
#[derive(Debug)]
pub(super) struct Rename {
    command: Command,
    src: Bytes,
    dst: Bytes,
    /// RENAME, COPY ... REPLACE: overwrite the destination.
    replace: bool,
    stage: Stage,
    pending: Pending,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Rename,
    RenameNx,
    Copy,
}

#[derive(Debug)]
enum Stage {
    Read,
    /// The payload written, kept to check the source before removing it.
    Write(Bytes),
    Remove,
}

// === impl Rename ===

impl Rename {
    /// Reads a rename or copy whose (stored) keys span slots; `name` is its table name, `db`
    /// the client's database (COPY's DB option may only name that one).
    pub(super) fn parse(name: &str, req: &Request, db: u32) -> Result<Rename, ProxyError> {
        let (command, replace) = match name {
            "rename" => (Command::Rename, true),
            "renamenx" => (Command::RenameNx, false),
            "copy" => (Command::Copy, copy_replaces(req, db)?),
            _ => return Err(ProxyError::CrossSlot("?")),
        };
        let src = req.arg_bytes(1).unwrap_or_default();
        Ok(Rename {
            command,
            dst: req.arg_bytes(2).unwrap_or_default(),
            replace,
            stage: Stage::Read,
            pending: read_pending(&src),
            src,
        })
    }

    /// The pending request of this rename, while it waits for its reply.
    pub(super) fn pending(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

/// COPY's options, read as Redis reads them: true if REPLACE is given.
fn copy_replaces(req: &Request, db: u32) -> Result<bool, ProxyError> {
    let syntax = || ProxyError::Other("ERR syntax error".to_string());
    let mut replace = false;
    let mut options = req.args().skip(3);
    while let Some(option) = options.next() {
        if option.eq_ignore_ascii_case(b"replace") {
            replace = true;
        } else if option.eq_ignore_ascii_case(b"db") {
            let n = options.next().ok_or_else(syntax)?;
            let n: i64 = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    ProxyError::Other("ERR value is not an integer or out of range".to_string())
                })?;
            if n != i64::from(db) {
                return Err(ProxyError::Other(
                    "ERR Slotway serves one database per connection: COPY ... DB must name the current one"
                        .to_string(),
                ));
            }
        } else {
            return Err(syntax());
        }
    }
    Ok(replace)
}

/// The read: one script, so that the value and its TTL are read at one moment and a
/// redirect is one reply, followed like any other.
fn read_pending(src: &Bytes) -> Pending {
    let read = Request::from_args([b"EVAL".as_slice(), READ, b"1", src]);
    Pending::new(read, Target::Slot(Slot::for_key(src)))
}

// === impl Session: cross-slot renames ===

impl Session {
    /// The reply to the current stage of the rename at queue position `idx`.
    pub(super) fn rename_done(&mut self, seq: u64, idx: usize, raw: Bytes) {
        let Some(Entry::Rename(r)) = self.queue.get_mut(idx) else {
            return;
        };
        let answer = match std::mem::replace(&mut r.stage, Stage::Remove) {
            Stage::Read => match read_reply(&raw) {
                Err(e) => e,
                Ok(None) if r.command == Command::Copy => Frame::Integer(0),
                Ok(None) => error("ERR no such key"),
                Ok(Some((payload, pttl))) => {
                    let ttl = pttl.max(0).to_string();
                    let mut args: Vec<&[u8]> = vec![b"RESTORE", &r.dst, ttl.as_bytes(), &payload];
                    if r.replace {
                        args.push(b"REPLACE");
                    }
                    let write = Request::from_args(args);
                    r.pending = Pending::new(write, Target::Slot(Slot::for_key(&r.dst)));
                    r.stage = Stage::Write(payload);
                    return self.send(seq, 0, None);
                }
            },
            Stage::Write(payload) => match decode(&raw) {
                Frame::Error(e) if e.starts_with(b"BUSYKEY") && !r.replace => Frame::Integer(0),
                err @ Frame::Error(_) => err,
                _ if r.command == Command::Copy => Frame::Integer(1),
                _ => {
                    let remove = Request::from_args([
                        b"EVAL".as_slice(),
                        REMOVE_IF_UNCHANGED,
                        b"1",
                        &r.src,
                        &payload,
                    ]);
                    r.pending = Pending::new(remove, Target::Slot(Slot::for_key(&r.src)));
                    r.stage = Stage::Remove;
                    return self.send(seq, 0, None);
                }
            },
            Stage::Remove => match decode(&raw) {
                // The destination holds the value: the rename is done even if the source
                // could not be removed (it changed meanwhile, or the node failed).
                Frame::Error(e) => {
                    tracing::warn!(
                        client = self.client.id,
                        error = %String::from_utf8_lossy(&e),
                        "cross-slot rename: the source was copied but not removed"
                    );
                    done(r.command)
                }
                _ => done(r.command),
            },
        };
        if let Some(entry) = self.queue.get_mut(idx) {
            *entry = Entry::Done(encode(&answer, self.client.version));
        }
    }
}

/// The answer once the value is in place.
fn done(command: Command) -> Frame {
    match command {
        Command::Rename => Frame::Simple(Bytes::from_static(b"OK")),
        Command::RenameNx | Command::Copy => Frame::Integer(1),
    }
}

/// The read stage's reply: `None` if the source does not exist, else its payload and PTTL
/// (-1: none).
fn read_reply(raw: &[u8]) -> Result<Option<(Bytes, i64)>, Frame> {
    match decode(raw) {
        Frame::Array(items) => match items.as_slice() {
            [Frame::Null, _] => Ok(None),
            [Frame::Bulk(payload), Frame::Integer(pttl)] => Ok(Some((payload.clone(), *pttl))),
            _ => Err(error(
                "ERR Slotway: unexpected reply while reading the key to rename",
            )),
        },
        err @ Frame::Error(_) => Err(err),
        _ => Err(error(
            "ERR Slotway: unexpected reply while reading the key to rename",
        )),
    }
}

fn error(msg: &'static str) -> Frame {
    Frame::Error(Bytes::from_static(msg.as_bytes()))
}

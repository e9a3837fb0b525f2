//! SUNIONSTORE, SINTERSTORE and SDIFFSTORE whose keys span slots.
//!
//! The sources are read as SUNION / SINTER / SDIFF parts (a `Gather`, split by
//! `routing::split`), the proxy combines them, then writes the result to the destination's
//! master as one `MULTI; DEL dst; SADD dst ...; EXEC` (a lone `DEL` for an empty result, which
//! Redis stores by deleting the key), and answers the set's size once the write is done.
//!
//! Like MSET across slots this is not atomic: each source is read at its own moment, and a
//! client may see the destination before or after, never half written (the write is one
//! transaction on one node).

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::Slot;

use super::{Entry, Pending, Session};
use crate::dispatch::{Finish, Target};

impl Session {
    /// The sources of store request `seq` (queue index `idx`) have been combined into `merged`
    /// (a set, not an error): write it to `dst`, on `slot`'s master.
    pub(super) fn store_merged(
        &mut self,
        seq: u64,
        idx: usize,
        merged: Frame,
        slot: Slot,
        dst: Bytes,
    ) {
        let members = match merged {
            Frame::Array(m) | Frame::Set(m) => m,
            _ => Vec::new(),
        };
        let size = members.len();
        let del = Request::from_args([b"DEL".as_slice(), &dst]);
        let (payload, frames) = if members.is_empty() {
            (del.raw().clone(), 1)
        } else {
            let sadd = Request::from_args([b"SADD".as_slice(), &dst].into_iter().chain(
                members.iter().map(|m| match m {
                    Frame::Bulk(b) => b.as_ref(),
                    _ => b"",
                }),
            ));
            let mut payload = BytesMut::new();
            for part in [
                Request::from_args(["MULTI"]).raw(),
                del.raw(),
                sadd.raw(),
                Request::from_args(["EXEC"]).raw(),
            ] {
                payload.extend_from_slice(part);
            }
            (payload.freeze(), 4)
        };
        let mut write = Pending::new(del, Target::Slot(slot));
        write.payload = Some((payload, frames));
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return;
        };
        g.parts = vec![(write, None)];
        g.remaining = 1;
        g.finish = Finish::Stored(size);
        self.send(seq, 0, None);
    }
}

/// The answer to a store command, from the raw reply of the destination write: the set's size
/// if the write ran, else the first error.
pub(super) fn stored_reply(raw: &[u8], size: usize) -> Frame {
    let mut buf = BytesMut::from(raw);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = protocol::decode(&mut buf, &Limits::default()) {
        frames.push(f);
    }
    let error = |frames: &[Frame]| {
        frames
            .iter()
            .find(|f| matches!(f, Frame::Error(_)))
            .cloned()
    };
    match frames.as_slice() {
        // The lone DEL of an empty result.
        [Frame::Integer(_)] => Frame::Integer(0),
        [_, _, _, Frame::Array(results)] => error(results).unwrap_or(Frame::Integer(size as i64)),
        _ => error(&frames).unwrap_or_else(|| {
            Frame::Error(Bytes::from_static(
                b"ERR Slotway: unexpected reply while storing the result",
            ))
        }),
    }
}

//! SUNIONSTORE, SINTERSTORE, SDIFFSTORE, ZUNIONSTORE, ZINTERSTORE and ZDIFFSTORE whose keys
//! span slots.
//!
//! The sources are read in parts (a `Gather`, split by `routing::split`), the proxy combines
//! them, then writes the result to the destination's master as one
//! `MULTI; DEL dst; SADD dst ... (or ZADD dst score member ...); EXEC` (a lone `DEL` for an
//! empty result, which Redis stores by deleting the key), and answers the result's size once
//! the write is done.
//!
//! Like MSET across slots this is not atomic: each source is read at its own moment, and a
//! client may see the destination before or after, never half written (the write is one
//! transaction on one node).

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::split::Destination;

use super::{Entry, Pending, Session};
use crate::dispatch::{Finish, Target};

impl Session {
    /// The sources of store request `seq` (queue index `idx`) have been combined into `merged`
    /// (members, or `[member, score, ...]` for a sorted set; not an error): write it to `dst`.
    pub(super) fn store_merged(&mut self, seq: u64, idx: usize, merged: Frame, dst: Destination) {
        let items = match merged {
            Frame::Array(m) | Frame::Set(m) => m,
            _ => Vec::new(),
        };
        let bytes = |f: &Frame| -> Bytes {
            match f {
                Frame::Bulk(b) => b.clone(),
                _ => Bytes::new(),
            }
        };
        // The arguments after the key: members, or score-member pairs.
        let (command, args): (&[u8], Vec<Bytes>) = if dst.sorted {
            let pairs = items.chunks_exact(2);
            (
                b"ZADD",
                pairs.flat_map(|p| [bytes(&p[1]), bytes(&p[0])]).collect(),
            )
        } else {
            (b"SADD", items.iter().map(bytes).collect())
        };
        let size = if dst.sorted {
            args.len() / 2
        } else {
            args.len()
        };
        let del = Request::from_args([b"DEL".as_slice(), &dst.key]);
        let (payload, frames) = if size == 0 {
            (del.raw().clone(), 1)
        } else {
            let add = Request::from_args(
                [command, &dst.key]
                    .into_iter()
                    .chain(args.iter().map(|a| a.as_ref())),
            );
            let mut payload = BytesMut::new();
            for part in [
                Request::from_args(["MULTI"]).raw(),
                del.raw(),
                add.raw(),
                Request::from_args(["EXEC"]).raw(),
            ] {
                payload.extend_from_slice(part);
            }
            (payload.freeze(), 4)
        };
        let mut write = Pending::new(del, Target::Slot(dst.slot));
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

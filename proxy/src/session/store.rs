//! SUNIONSTORE, SINTERSTORE, SDIFFSTORE, ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE and BITOP whose
//! keys span slots.
//!
//! The sources are read in parts (a `Gather`, split by `routing::split`), the proxy combines
//! them, then writes the result to the destination's master as one
//! `MULTI; DEL dst; SADD dst ... (or ZADD dst score member ...); EXEC`, or one `SET` for
//! BITOP (a lone `DEL` for an empty result, which Redis stores by deleting the key), and
//! answers the result's size once the write is done.
//!
//! Like MSET across slots this is not atomic: each source is read at its own moment, and a
//! client may see the destination before or after, never half written (the write is one
//! transaction on one node).

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::split::{Destination, Written};

use super::{Entry, Pending, Session};
use crate::dispatch::{Finish, Target};

impl Session {
    /// The sources of store request `seq` (queue index `idx`) have been combined into `merged`
    /// (members, `[member, score, ...]` for a sorted set, or BITOP's value; not an error):
    /// write it to `dst`.
    pub(super) fn store_merged(&mut self, seq: u64, idx: usize, merged: Frame, dst: Destination) {
        let items = match merged {
            Frame::Array(m) | Frame::Set(m) => m,
            // BITOP's value; an empty one is stored by deleting the key.
            Frame::Bulk(v) if !v.is_empty() => vec![Frame::Bulk(v)],
            _ => Vec::new(),
        };
        let bytes = |f: &Frame| -> Bytes {
            match f {
                Frame::Bulk(b) => b.clone(),
                _ => Bytes::new(),
            }
        };
        // The arguments after the key (members, score-member pairs, the value), and the size
        // the client is told.
        let (command, args, size): (&[u8], Vec<Bytes>, usize) = match dst.kind {
            Written::Set => (b"SADD", items.iter().map(bytes).collect(), items.len()),
            Written::SortedSet => {
                let pairs = items.chunks_exact(2);
                let size = pairs.len();
                let args = pairs.flat_map(|p| [bytes(&p[1]), bytes(&p[0])]).collect();
                (b"ZADD", args, size)
            }
            Written::String => {
                let value: Vec<Bytes> = items.iter().map(bytes).collect();
                let size = value.first().map_or(0, Bytes::len);
                (b"SET", value, size)
            }
        };
        let del = Request::from_args([b"DEL".as_slice(), &dst.key]);
        let write = Request::from_args(
            [command, &dst.key]
                .into_iter()
                .chain(args.iter().map(|a| a.as_ref())),
        );
        let (payload, frames) = if size == 0 {
            (del.raw().clone(), 1)
        } else if dst.kind == Written::String {
            // SET replaces any type and any TTL, as BITOP does.
            (write.raw().clone(), 1)
        } else {
            let mut payload = BytesMut::new();
            for part in [
                Request::from_args(["MULTI"]).raw(),
                del.raw(),
                write.raw(),
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
        // The lone DEL of an empty result; the SET of a string.
        [Frame::Integer(_)] => Frame::Integer(0),
        [Frame::Simple(_)] => Frame::Integer(size as i64),
        [_, _, _, Frame::Array(results)] => error(results).unwrap_or(Frame::Integer(size as i64)),
        _ => error(&frames).unwrap_or_else(|| {
            Frame::Error(Bytes::from_static(
                b"ERR Slotway: unexpected reply while storing the result",
            ))
        }),
    }
}

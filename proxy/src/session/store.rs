//! SUNIONSTORE, SINTERSTORE, SDIFFSTORE, ZUNIONSTORE, ZINTERSTORE, ZDIFFSTORE and BITOP whose
//! keys span slots.
//!
//! The sources are read in parts (a `Gather`, split by `routing::split`), the proxy combines
//! them, then writes the result to the destination's master with one script that deletes the
//! key and adds the members (`SADD`, or `ZADD` with scores) in chunks, or one `SET` for BITOP
//! (a lone `DEL` for an empty result, which Redis stores by deleting the key), and answers the
//! result's size once the write is done. One command, so a redirect is followed like any
//! other, and atomic on its node.
//!
//! Like MSET across slots this is not atomic: each source is read at its own moment, and a
//! client may see the destination before or after, never half written (the write is one
//! transaction on one node).

use bytes::Bytes;
use protocol::{Frame, Request};
use routing::split::{Destination, Written};

use super::{Entry, Pending, Session};
use crate::dispatch::{Finish, Target};

/// Replaces `KEYS[1]` with the members (or score-member pairs) in `ARGV[2..]`, added with the
/// command `ARGV[1]` a few thousand at a time (Lua's stack limits one call's arguments).
const REPLACE: &[u8] = b"redis.call('DEL', KEYS[1]) \
for i = 2, #ARGV, 4000 do \
redis.call(ARGV[1], KEYS[1], unpack(ARGV, i, math.min(i + 3999, #ARGV))) end return 1";

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
        let args = args.iter().map(|a| a.as_ref());
        let request = if size == 0 {
            Request::from_args([b"DEL".as_slice(), &dst.key])
        } else if dst.kind == Written::String {
            // SET replaces any type and any TTL, as BITOP does.
            Request::from_args([command, &dst.key].into_iter().chain(args))
        } else {
            let head = [b"EVAL".as_slice(), REPLACE, b"1", &dst.key, command];
            Request::from_args(head.into_iter().chain(args))
        };
        let write = Pending::new(request, Target::Slot(dst.slot));
        let Some(Entry::Gather(g)) = self.queue.get_mut(idx) else {
            return;
        };
        g.parts = vec![(write, None)];
        g.remaining = 1;
        g.finish = Finish::Stored(size);
        self.send(seq, 0, None);
    }
}

/// The answer to a store command, from the reply of the destination write: the result's
/// size if the write ran, else its error.
pub(super) fn stored_answer(reply: Option<Frame>, size: usize) -> Frame {
    match reply {
        // DEL's count, the script's 1, SET's OK.
        Some(Frame::Integer(_) | Frame::Simple(_)) => Frame::Integer(size as i64),
        Some(err @ Frame::Error(_)) => err,
        _ => Frame::Error(Bytes::from_static(
            b"ERR Slotway: unexpected reply while storing the result",
        )),
    }
}

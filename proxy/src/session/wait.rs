//! WAIT through the proxy.
//!
//! A node's WAIT counts the replicas that have acknowledged the client connection's last
//! write. The client's writes went over pooled connections, shared with other clients, where a
//! WAIT would hold everyone else up; so WAIT runs on a connection of the client's own to every
//! master, once everything the client sent before it has been answered:
//!
//! ```text
//! MULTI; SET <marker> 1; DEL <marker>; EXEC; WAIT numreplicas timeout
//! ```
//!
//! The marker is a key in a slot of that master, set and deleted in one transaction (no client
//! can see it); propagating it makes that connection's last write as recent as everything
//! the client wrote before, so the node waits for all of it. The answer is the smallest count
//! over the masters: the replicas that have every write of the client.

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::split::Merge;
use routing::Slot;

use super::{Entry, Gather, Pending, Session};
use crate::dispatch::{Finish, Target};
use crate::topology::Routes;

/// The client's own connection lane used for WAIT (lane 0 is blocking commands and WATCH,
/// lanes from 1 cross-slot pops and reads).
const WAIT_LANE: u32 = u32::MAX;

/// Frames one master's WAIT payload answers with.
const WAIT_FRAMES: u32 = 5;

impl Session {
    /// Sends WAIT `req` (taken from the head of the queue) to every master.
    pub(super) fn start_wait(&mut self, req: Request) {
        let routes = self.shared.topology.routes();
        let n = routes.masters().len();
        let parts: Vec<(Pending, Option<Bytes>)> = (0..n)
            .map(|i| {
                let mut p = Pending::new(req.clone(), Target::Master(i));
                p.lane = Some(WAIT_LANE);
                if let Some(marker) = marker_key(&routes, i) {
                    let mut payload = BytesMut::new();
                    for r in [
                        Request::from_args(["MULTI"]),
                        Request::from_args([b"SET".as_slice(), &marker, b"1"]),
                        Request::from_args([b"DEL".as_slice(), &marker]),
                        Request::from_args(["EXEC"]),
                    ] {
                        payload.extend_from_slice(r.raw());
                    }
                    payload.extend_from_slice(req.raw());
                    p.payload = Some((payload.freeze(), WAIT_FRAMES));
                }
                (p, None)
            })
            .collect();
        self.meter.block(self.head_seq);
        self.meter.fanout(self.head_seq, n);
        self.queue.push_front(Entry::Gather(Box::new(Gather {
            req,
            remaining: n,
            parts,
            merge: Merge::Min,
            finish: Finish::Wait,
        })));
        for part in 0..n {
            self.send(self.head_seq, part as u32, None);
        }
    }
}

/// A key of a slot that master `i` owns, for the write that marks the connection.
fn marker_key(routes: &Routes, i: usize) -> Option<Bytes> {
    let master = routes.masters().get(i)?;
    (0..100_000u32).find_map(|n| {
        let key = format!("__slotway_wait__:{n}");
        let owner = routes.master_for(Slot::for_key(key.as_bytes()))?;
        (owner.addr() == master.addr()).then(|| Bytes::from(key))
    })
}

/// One master's answer: the WAIT reply, if the marking transaction ran (a master that owns no
/// slot gets the WAIT alone); an error otherwise.
pub(super) fn node_reply(raw: &[u8]) -> Frame {
    let mut buf = BytesMut::from(raw);
    let mut frames = Vec::new();
    while let Ok(Some(f)) = protocol::decode(&mut buf, &Limits::default()) {
        frames.push(f);
    }
    match frames.as_slice() {
        [wait] => wait.clone(),
        [_, _, _, Frame::Array(_), wait] => wait.clone(),
        [_, _, _, Frame::Error(e), _] | [Frame::Error(e), ..] => Frame::Error(e.clone()),
        _ => Frame::Error(Bytes::from_static(
            b"ERR Slotway: WAIT could not mark the connection on a master; try again",
        )),
    }
}

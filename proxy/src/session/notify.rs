//! Keyspace notifications (`__keyspace@0__:<key>`, `__keyevent@0__:<event>`) through the proxy.
//!
//! Each cluster node publishes the notifications of its own keys to its own subscribers only,
//! while a regular PUBLISH reaches every node's. A client's subscriber connection goes to one
//! master (`send_subscriber`); for the notifications of the others, a subscription that could
//! receive notifications is also made on a *mirror*: a subscriber connection of the client's to
//! each other master ([`NodePool::subscriber`], delivery parts [`MIRROR_PART`]`+ i`).
//!
//! | step | what happens |
//! |------|--------------|
//! | SUBSCRIBE to notification channels, PSUBSCRIBE to patterns that can match one (`*`, `__key*`, ...) | when the request reaches the head of the queue, the mirrors open (once) and get the notification part of it, each followed by a `PING` marker; the request waits ([`Entry::Mirroring`]) |
//! | every marker answered | the request goes to the main subscriber connection as any other; its confirmations are the client's (the mirrors' are dropped, they would count twice) |
//! | UNSUBSCRIBE / PUNSUBSCRIBE while mirrors are open | the same, whole: the mirrors stop first |
//! | a message on a mirror | written to the client if its channel is a notification channel; anything else (a PUBLISH, which the main connection brings too, confirmations) is dropped |
//!
//! So a client that saw its confirmation gets the notifications of every master's keys, and none
//! after its unsubscribe confirmation. The mirrors cover the masters of the moment they opened:
//! a failover closes one, which disconnects the client as a lost subscriber connection does
//! (it subscribes again, on the new masters); a master added to the cluster later is not
//! covered until the client subscribes again.
//!
//! Notifications name keys as stored. With co-location rules or namespaced databases those are
//! not the client's names, so subscribing to notification channels is refused then.

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};

use super::{Entry, Session};
use crate::backend::Job;
use crate::reply::{Reply, ReplyTo};

/// The delivery `part` of mirror `i` is `MIRROR_PART + i` (the main subscriber connection's is
/// 0, shard connections' are below this, the shard retry timer's is `u32::MAX`).
pub(super) const MIRROR_PART: u32 = 1 << 31;
/// Most mirrors (masters beyond the first) a client can have.
const MAX_MIRRORS: u32 = 1 << 16;
/// Sent after each command on a mirror: its answer ends the command's replies.
const MARK: &[u8] = b"*2\r\n$4\r\nPING\r\n$14\r\nslotway:mirror\r\n";
/// The argument of [`MARK`], which its answer carries.
const MARK_ARG: &[u8] = b"slotway:mirror";

/// The channel prefixes of keyspace notifications.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// True if `channel` is a keyspace notification channel.
pub(super) fn is_notification_channel(channel: &[u8]) -> bool {
    PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// True if `pattern` can match some keyspace notification channel.
fn may_match_notifications(pattern: &[u8]) -> bool {
    PREFIXES
        .iter()
        .any(|p| routing::glob::may_match_with_prefix(pattern, p))
}

/// True if `part` is a mirror's.
pub(super) fn is_mirror_part(part: u32) -> bool {
    (MIRROR_PART..MIRROR_PART + MAX_MIRRORS).contains(&part)
}

/// What of the pub/sub command `name` the mirrors must run, if anything: the notification
/// channels of a SUBSCRIBE, the patterns of a PSUBSCRIBE that can match one, and a whole
/// UNSUBSCRIBE or PUNSUBSCRIBE once mirrors are open.
pub(super) fn mirrored(name: &str, req: &Request, mirrors_open: bool) -> Option<Request> {
    let pick = |keep: fn(&[u8]) -> bool, command: &'static [u8]| {
        let picked: Vec<&[u8]> = req.args().skip(1).filter(|a| keep(a)).collect();
        (!picked.is_empty()).then(|| Request::from_args(std::iter::once(command).chain(picked)))
    };
    match name {
        "subscribe" => pick(is_notification_channel, b"SUBSCRIBE"),
        "psubscribe" => pick(may_match_notifications, b"PSUBSCRIBE"),
        "unsubscribe" | "punsubscribe" if mirrors_open => Some(req.clone()),
        _ => None,
    }
}

impl Session {
    /// Sends `mirror` on every mirror (opening them first if needed), each followed by the
    /// marker. Returns false if there is no other master (nothing to wait for).
    pub(super) fn send_mirrors(&mut self, mirror: &Request) -> bool {
        let version = self.client.version;
        let replies = self.replies.clone();
        let routes = self.shared.topology.routes();
        let Some(ps) = self.pubsub.as_mut() else {
            return false;
        };
        if ps.mirrors.is_none() {
            // Every master but the main subscriber connection's (the first, if not open yet).
            let main = ps
                .conn_node
                .clone()
                .or_else(|| routes.masters().first().map(|p| p.addr().clone()));
            ps.mirrors = Some(
                routes
                    .masters()
                    .iter()
                    .filter(|p| Some(p.addr()) != main.as_ref())
                    .zip(MIRROR_PART..MIRROR_PART + MAX_MIRRORS)
                    .map(|(pool, part)| pool.subscriber(version, replies.clone(), part))
                    .collect(),
            );
        }
        let mirrors = ps.mirrors.as_deref().unwrap_or_default();
        if mirrors.is_empty() {
            return false;
        }
        let mut payload = BytesMut::from(&mirror.raw()[..]);
        payload.extend_from_slice(MARK);
        let payload = payload.freeze();
        for conn in mirrors {
            conn.send(Job::new(payload.clone(), ReplyTo::Discard));
        }
        ps.mirror_wait = mirrors.len();
        true
    }

    /// A frame from a mirror: a notification is written to the client; the marker's answer
    /// counts towards sending the waiting request on; anything else is dropped.
    pub(super) fn on_mirror_frame(&mut self, reply: Reply) {
        let Reply::Frame(frame) = reply else {
            tracing::info!(
                client = self.client.id,
                "keyspace notification connection lost"
            );
            return self.subscriber_lost();
        };
        let mut buf = BytesMut::from(&frame[..]);
        let decoded = protocol::decode(&mut buf, &Limits::default());
        let items = match &decoded {
            Ok(Some(Frame::Array(items) | Frame::Push(items))) => items.as_slice(),
            // A marker answered outside subscribed mode (after UNSUBSCRIBE of everything).
            Ok(Some(Frame::Bulk(b))) if b.as_ref() == MARK_ARG => return self.mirror_marked(),
            _ => return,
        };
        let text = |i: usize| match items.get(i) {
            Some(Frame::Bulk(b)) => Some(b.as_ref()),
            _ => None,
        };
        match text(0) {
            Some(b"pong") if text(1) == Some(MARK_ARG) => self.mirror_marked(),
            Some(b"message") if text(1).is_some_and(is_notification_channel) => {
                self.write_notification(&frame)
            }
            Some(b"pmessage") if text(2).is_some_and(is_notification_channel) => {
                self.write_notification(&frame)
            }
            _ => {}
        }
    }

    fn write_notification(&mut self, frame: &Bytes) {
        // Never outside subscribed mode: in RESP2 a stray message would read as a reply.
        let subscribed = self
            .pubsub
            .as_ref()
            .is_some_and(|p| !(p.channels.is_empty() && p.patterns.is_empty()));
        if subscribed {
            self.wbuf.extend_from_slice(frame);
        }
    }

    /// One mirror has run the command; once all have, the request waiting at the head goes to
    /// the main subscriber connection.
    fn mirror_marked(&mut self) {
        let Some(ps) = self.pubsub.as_mut() else {
            return;
        };
        ps.mirror_wait = ps.mirror_wait.saturating_sub(1);
        if ps.mirror_wait > 0 || !matches!(self.queue.front(), Some(Entry::Mirroring(..))) {
            return;
        }
        if let Some(Entry::Mirroring(req, n)) = self.queue.pop_front() {
            self.queue.push_front(Entry::Confirming(n));
            self.send_subscriber(req);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_a_ping_of_its_argument() {
        assert_eq!(
            MARK,
            Request::from_args([&b"PING"[..], MARK_ARG]).raw().as_ref()
        );
    }
}

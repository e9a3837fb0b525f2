//! MULTI / EXEC across slots: the commands a client queued, grouped by slot at EXEC, sent as one
//! `MULTI ... EXEC` per group, and the groups' EXEC replies merged into one array in queued order.
//!
//! Each group is atomic on its node; the whole is not (a cluster cannot make it so). With
//! `cross_slot_transactions: refuse` an EXEC whose commands span slots is answered with an error
//! and nothing runs. Keyless commands (PUBLISH, TIME, PING) join the first group.
//!
//! WATCH pins a connection of the client's own to the node that owns the watched keys' slot;
//! at EXEC that slot's group runs first, on that connection. If it aborts (a watched key
//! changed), nothing else runs and EXEC answers nil, as a single node would.

use bytes::{Bytes, BytesMut};
use protocol::{Frame, Limits, Request};
use routing::{slot_in_motion, Slot};

/// A transaction being queued (between MULTI and EXEC).
#[derive(Debug, Default)]
pub struct Queued {
    /// The queued commands, with the slot of their keys (None: keyless).
    pub commands: Vec<(Option<Slot>, Request)>,
    /// A command was refused at queue time: EXEC must answer EXECABORT.
    pub dirty: bool,
}

/// One `MULTI ... EXEC` to send.
#[derive(Debug)]
pub struct Group {
    /// The slot all its keys hash to (None: only keyless commands).
    pub slot: Option<Slot>,
    /// Positions, in the client's queue, of its commands.
    pub positions: Vec<usize>,
    /// `MULTI`, the commands, `EXEC`, as one payload.
    pub payload: Bytes,
    /// True for the group of the watched slot (runs first, on the WATCH connection).
    pub watched: bool,
}

/// What one group's `MULTI ... EXEC` came back with.
#[derive(Debug, PartialEq)]
pub enum GroupOutcome {
    /// EXEC's array: one reply per command of the group.
    Replies(Vec<Frame>),
    /// EXEC answered nil: a watched key changed.
    Aborted,
    /// The node refused the group before running it: the first queue-time error of an
    /// EXECABORT, or EXEC's own `MOVED`, `ASK`, `TRYAGAIN` or `CLUSTERDOWN` (the node checks the
    /// keys again at EXEC, and a migration may have moved some since they were queued). Raw, so
    /// the caller can follow a MOVED or retry a TRYAGAIN.
    Refused(Bytes),
    /// The reply did not have the expected shape, or EXEC failed otherwise.
    Error(Frame),
}

const MULTI: &[u8] = b"*1\r\n$5\r\nMULTI\r\n";
const EXEC: &[u8] = b"*1\r\n$4\r\nEXEC\r\n";

/// Groups the queued commands by slot. `watched` is the slot of the watched keys, if any: its
/// group comes first (even if empty: `MULTI EXEC` still checks the watched keys). Keyless
/// commands join the first group whose slot `prefer`s them (the one on the node where PUBLISH
/// counts subscribers), else the first group.
pub fn group(queued: &Queued, watched: Option<Slot>, prefer: impl Fn(Slot) -> bool) -> Vec<Group> {
    let mut groups: Vec<(Option<Slot>, Vec<usize>)> = Vec::new();
    if let Some(w) = watched {
        groups.push((Some(w), Vec::new()));
    }
    let mut keyless = Vec::new();
    for (i, (slot, _)) in queued.commands.iter().enumerate() {
        match slot {
            None => keyless.push(i),
            Some(s) => match groups.iter_mut().find(|(g, _)| *g == Some(*s)) {
                Some((_, positions)) => positions.push(i),
                None => groups.push((Some(*s), vec![i])),
            },
        }
    }
    if groups.is_empty() {
        groups.push((None, Vec::new()));
    }
    let home = groups
        .iter()
        .position(|(slot, _)| slot.is_some_and(&prefer))
        .unwrap_or(0);
    if let Some((_, positions)) = groups.get_mut(home) {
        positions.extend(keyless);
        positions.sort_unstable();
    }
    groups
        .into_iter()
        .enumerate()
        .map(|(n, (slot, positions))| {
            let mut payload = BytesMut::from(MULTI);
            for &i in &positions {
                if let Some((_, req)) = queued.commands.get(i) {
                    payload.extend_from_slice(req.raw());
                }
            }
            payload.extend_from_slice(EXEC);
            Group {
                slot,
                positions,
                payload: payload.freeze(),
                watched: watched.is_some() && n == 0,
            }
        })
        .collect()
}

/// Reads the raw reply frames of one group (`+OK`, one per command, then EXEC's).
pub fn outcome(raw: &[u8], commands: usize) -> GroupOutcome {
    let limits = Limits {
        max_depth: 128,
        ..Limits::default()
    };
    let mut buf = BytesMut::from(raw);
    let mut frames = Vec::with_capacity(commands + 2);
    while let Ok(Some(f)) = protocol::decode(&mut buf, &limits) {
        frames.push(f);
    }
    if frames.len() != commands + 2 {
        return GroupOutcome::Error(bad_reply());
    }
    let exec = frames.pop().unwrap_or(Frame::Null);
    match exec {
        Frame::Array(items) if items.len() == commands => GroupOutcome::Replies(items),
        Frame::Null | Frame::NullArray => GroupOutcome::Aborted,
        Frame::Error(e) if e.starts_with(b"EXECABORT") => {
            let first = frames.into_iter().skip(1).find_map(|f| match f {
                Frame::Error(e) => Some(e),
                _ => None,
            });
            GroupOutcome::Refused(first.unwrap_or(e))
        }
        Frame::Error(e) if slot_in_motion(&e) => GroupOutcome::Refused(e),
        Frame::Error(e) => GroupOutcome::Error(Frame::Error(e)),
        _ => GroupOutcome::Error(bad_reply()),
    }
}

fn bad_reply() -> Frame {
    Frame::Error(Bytes::from_static(
        b"ERR Slotway: unexpected reply to MULTI/EXEC from a cluster node",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(cmds: &[(&[&str], Option<u16>)]) -> Queued {
        Queued {
            commands: cmds
                .iter()
                .map(|(args, slot)| {
                    (
                        slot.and_then(Slot::new),
                        Request::from_args(args.iter().map(|a| a.as_bytes())),
                    )
                })
                .collect(),
            dirty: false,
        }
    }

    #[test]
    fn groups_by_slot_with_keyless_in_the_first() {
        let queued = q(&[
            (&["ZADD", "unacked_index", "1", "t"], Some(10)),
            (&["HSET", "unacked", "t", "m"], Some(20)),
            (&["PUBLISH", "c", "m"], None),
            (&["ZCARD", "unacked_index"], Some(10)),
        ]);
        let groups = group(&queued, None, |_| false);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].positions, vec![0, 2, 3]);
        assert_eq!(groups[1].positions, vec![1]);
        assert!(groups[0].payload.starts_with(MULTI) && groups[0].payload.ends_with(EXEC));
        assert!(!groups[0].watched);
    }

    #[test]
    fn watched_slot_runs_first_even_when_empty() {
        let queued = q(&[(&["LPUSH", "q", "m"], Some(5))]);
        let groups = group(&queued, Slot::new(9), |_| false);
        assert_eq!(groups.len(), 2);
        assert!(groups[0].watched && groups[0].positions.is_empty());
        assert_eq!(&groups[0].payload[..], [MULTI, EXEC].concat().as_slice());
        let empty = group(&Queued::default(), None, |_| false);
        assert_eq!(empty.len(), 1);
    }

    #[test]
    fn outcomes() {
        assert_eq!(
            outcome(b"+OK\r\n+QUEUED\r\n*1\r\n:1\r\n", 1),
            GroupOutcome::Replies(vec![Frame::Integer(1)])
        );
        assert_eq!(
            outcome(b"+OK\r\n+QUEUED\r\n*-1\r\n", 1),
            GroupOutcome::Aborted
        );
        assert_eq!(
            outcome(
                b"+OK\r\n-MOVED 1 127.0.0.1:7001\r\n-EXECABORT Transaction discarded because of previous errors.\r\n",
                1
            ),
            GroupOutcome::Refused(Bytes::from_static(b"MOVED 1 127.0.0.1:7001"))
        );
        // Keys migrated between queueing and EXEC: EXEC itself is refused, and discarded.
        assert_eq!(
            outcome(
                b"+OK\r\n+QUEUED\r\n-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
                1
            ),
            GroupOutcome::Refused(Bytes::from_static(
                b"TRYAGAIN Multiple keys request during rehashing of slot"
            ))
        );
        assert!(matches!(
            outcome(b"+OK\r\n+QUEUED\r\n-ERR x\r\n", 1),
            GroupOutcome::Error(_)
        ));
        assert!(matches!(outcome(b"+OK\r\n", 1), GroupOutcome::Error(_)));
    }
}

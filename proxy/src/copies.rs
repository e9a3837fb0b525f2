//! Cross-slot commands that run on one node over copies of their keys: ZUNION, ZINTER, ZDIFF,
//! LCS, PFMERGE, ZRANGESTORE, GEOSEARCHSTORE, GEORADIUS[BYMEMBER] ... STORE and SORT ... STORE.
//!
//! These read several keys and write at most one, and their answers (scores summed in the
//! node's order and printed as the node prints them, LCS matches, HyperLogLog registers) are
//! best left to Redis itself. So the proxy brings the keys together:
//!
//! | stage | sends (to)                                                           |
//! |-------|----------------------------------------------------------------------|
//! | read  | `DUMP key` for every key outside the *home* slot (each key's node)    |
//! | run   | one script on the home slot's master: `RESTORE` each copy under a temporary name in the home slot, run the command with the copies' names, delete the copies, return the command's reply |
//!
//! The home slot is the written key's (the destination), or for a read the slot most of the
//! keys share. The script is atomic on its node: no client ever sees a copy, and the command
//! runs on copies that all exist, or not at all (a failed `RESTORE` is answered, nothing is
//! written). A key that did not exist at the read has no copy: its temporary name names no
//! key, as the key named none. Like MGET across slots, each key is read at its own moment.

use bytes::Bytes;
use protocol::{Frame, Request, Version};
use routing::{CommandSpec, Slot};

use crate::error::ProxyError;

/// The script's text: restores the copies `KEYS` from the payloads `ARGV[1..#KEYS]`, runs the
/// command in the rest of `ARGV`, deletes the copies, and returns the command's reply (errors
/// included).
macro_rules! run_script {
    () => {
        "local n = #KEYS \
         for i = 1, n do \
         local r = redis.pcall('RESTORE', KEYS[i], 0, ARGV[i], 'REPLACE') \
         if type(r) == 'table' and r.err then \
         if i > 1 then redis.call('DEL', unpack(KEYS, 1, i - 1)) end \
         return r end end \
         local reply = redis.pcall(unpack(ARGV, n + 1)) \
         if n > 0 then redis.call('DEL', unpack(KEYS)) end \
         return reply"
    };
}

/// The script for a RESP2 connection.
const RUN_RESP2: &[u8] = run_script!().as_bytes();

/// The script for a RESP3 connection: the command's reply keeps its RESP3 types (maps,
/// doubles) through the script.
const RUN_RESP3: &[u8] = concat!("redis.setresp(3) ", run_script!()).as_bytes();

/// True for the commands served this way when their keys span slots.
pub fn runs_on_copies(name: &str) -> bool {
    matches!(
        name,
        "zunion"
            | "zinter"
            | "zdiff"
            | "lcs"
            | "pfmerge"
            | "zrangestore"
            | "geosearchstore"
            | "georadius"
            | "georadiusbymember"
            | "sort"
    )
}

/// A cross-slot command to run over copies: where, and which keys to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copies {
    /// The client's request (key names as stored).
    req: Request,
    /// The slot the command runs in.
    home: Slot,
    /// The keys outside the home slot, each once, in order of first appearance.
    foreign: Vec<Bytes>,
    /// For each argument of `req`: the index in `foreign` of the key it names, if any.
    substitute: Vec<Option<usize>>,
}

// === impl Copies ===

impl Copies {
    /// Plans `req` (command `spec`, keys spanning slots).
    pub fn plan(spec: &CommandSpec, req: &Request) -> Result<Copies, ProxyError> {
        let mut keys = Vec::new();
        routing::keys::for_each_key(spec, req, |i| keys.push(i)).map_err(ProxyError::Keys)?;
        let slot_of = |i: usize| Slot::for_key(req.arg(i).unwrap_or_default());
        let home = match spec.name {
            // The written key: the destination first, or the STORE key last.
            "pfmerge" | "zrangestore" | "geosearchstore" => keys.first().map(|&i| slot_of(i)),
            "georadius" | "georadiusbymember" | "sort" => keys.last().map(|&i| slot_of(i)),
            // A read: where most keys are (the first such slot), so the fewest are copied.
            _ => {
                let mut counts: Vec<(Slot, usize)> = Vec::new();
                for &i in &keys {
                    let slot = slot_of(i);
                    match counts.iter_mut().find(|(s, _)| *s == slot) {
                        Some((_, n)) => *n += 1,
                        None => counts.push((slot, 1)),
                    }
                }
                // `max_by_key` keeps the last of equals: reversed, a tie goes to the first slot.
                counts.iter().rev().max_by_key(|(_, n)| *n).map(|(s, _)| *s)
            }
        };
        let Some(home) = home else {
            return Err(ProxyError::CrossSlot(spec.name));
        };
        let mut foreign: Vec<Bytes> = Vec::new();
        let mut substitute = vec![None; req.len()];
        for &i in &keys {
            if slot_of(i) == home {
                continue;
            }
            let key = req.arg_bytes(i).unwrap_or_default();
            let n = match foreign.iter().position(|k| *k == key) {
                Some(n) => n,
                None => {
                    foreign.push(key);
                    foreign.len() - 1
                }
            };
            if let Some(s) = substitute.get_mut(i) {
                *s = Some(n);
            }
        }
        Ok(Copies {
            req: req.clone(),
            home,
            foreign,
            substitute,
        })
    }

    /// The reads: `DUMP key` and its slot, for each key outside the home slot.
    pub fn reads(&self) -> Vec<(Request, Slot)> {
        self.foreign
            .iter()
            .map(|k| {
                (
                    Request::from_args([b"DUMP".as_slice(), k]),
                    Slot::for_key(k),
                )
            })
            .collect()
    }

    /// The run, from the reads' replies (in the order of [`Copies::reads`]): the script and
    /// the home slot, or the error to answer. `prefix` makes the copies' names unique (the
    /// proxy's run id, the client and the request).
    pub fn run(
        &self,
        dumps: Vec<Frame>,
        prefix: &str,
        version: Version,
    ) -> Result<(Request, Slot), Frame> {
        let tag = self.home.tag();
        let names: Vec<Bytes> = (0..self.foreign.len())
            .map(|i| Bytes::from(format!("{{{tag}}}slotway-copy:{prefix}:{i}")))
            .collect();
        let mut restored: Vec<(Bytes, Bytes)> = Vec::new();
        for (dump, name) in dumps.into_iter().zip(&names) {
            match dump {
                Frame::Bulk(payload) => restored.push((name.clone(), payload)),
                Frame::Null => {}
                err @ Frame::Error(_) => return Err(err),
                _ => {
                    return Err(Frame::Error(Bytes::from_static(
                        b"ERR Slotway: unexpected reply while copying a key",
                    )))
                }
            }
        }
        let script = match version {
            Version::Resp2 => RUN_RESP2,
            Version::Resp3 => RUN_RESP3,
        };
        let numkeys = restored.len().to_string();
        let head = [b"EVAL".as_slice(), script, numkeys.as_bytes()];
        let copies = restored.iter().map(|(name, _)| name.as_ref());
        let payloads = restored.iter().map(|(_, payload)| payload.as_ref());
        let command = self.req.args().enumerate().map(|(i, arg)| {
            match self.substitute.get(i).copied().flatten() {
                Some(n) => names.get(n).map_or(arg, |name| name.as_ref()),
                None => arg,
            }
        });
        let run = Request::from_args(
            head.into_iter()
                .chain(copies)
                .chain(payloads)
                .chain(command),
        );
        Ok((run, self.home))
    }

    /// The client's answer from the script's reply: as it is, except that LCS's map (RESP3),
    /// which comes out of the script in Lua's table order, is put back in the node's
    /// (`matches`, then `len`).
    pub fn answer(&self, reply: Frame) -> Frame {
        match reply {
            Frame::Map(mut pairs) if self.req.name().eq_ignore_ascii_case(b"lcs") => {
                pairs
                    .sort_by_key(|(k, _)| !matches!(k, Frame::Bulk(b) if b.as_ref() == b"matches"));
                Frame::Map(pairs)
            }
            reply => reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Copies {
        let req = Request::from_args(args.iter().map(|a| a.as_bytes()));
        let spec = routing::lookup(req.name(), req.arg(1)).unwrap();
        Copies::plan(spec, &req).unwrap()
    }

    fn arg(req: &Request, i: usize) -> &[u8] {
        req.arg(i).unwrap()
    }

    #[test]
    fn writes_run_in_the_destination_slot() {
        let c = plan(&["PFMERGE", "dst", "a", "{dst}b", "a"]);
        assert_eq!(c.home, Slot::for_key(b"dst"));
        // "a" is copied once; "{dst}b" already shares the destination's slot.
        assert_eq!(c.foreign, vec![Bytes::from("a")]);
        let c = plan(&["GEORADIUS", "src", "0", "0", "1", "km", "STORE", "dst"]);
        assert_eq!(c.home, Slot::for_key(b"dst"));
        assert_eq!(c.foreign, vec![Bytes::from("src")]);
        let c = plan(&["SORT", "src", "LIMIT", "0", "1", "ALPHA", "STORE", "dst"]);
        assert_eq!(c.home, Slot::for_key(b"dst"));
        assert_eq!(c.foreign, vec![Bytes::from("src")]);
        let c = plan(&["ZRANGESTORE", "dst", "src", "0", "-1"]);
        assert_eq!(c.home, Slot::for_key(b"dst"));
        assert_eq!(c.foreign, vec![Bytes::from("src")]);
    }

    #[test]
    fn reads_run_where_most_keys_are() {
        let c = plan(&["ZUNION", "3", "a", "{x}1", "{x}2", "WITHSCORES"]);
        assert_eq!(c.home, Slot::for_key(b"x"));
        assert_eq!(c.foreign, vec![Bytes::from("a")]);
        // A tie: the first key's slot.
        let c = plan(&["LCS", "a", "b"]);
        assert_eq!(c.home, Slot::for_key(b"a"));
        assert_eq!(c.foreign, vec![Bytes::from("b")]);
    }

    #[test]
    fn the_run_names_copies_in_the_home_slot_and_skips_missing_keys() {
        let c = plan(&["ZUNION", "3", "a", "b", "a", "WEIGHTS", "1", "2", "3"]);
        assert_eq!(c.reads().len(), 1);
        assert_eq!(c.reads()[0].1, Slot::for_key(b"b"));
        let (run, home) = c
            .run(
                vec![Frame::Bulk(Bytes::from("payload"))],
                "p:1:2",
                Version::Resp2,
            )
            .unwrap();
        assert_eq!(home, Slot::for_key(b"a"));
        assert_eq!(arg(&run, 1), RUN_RESP2);
        assert_eq!(arg(&run, 2), b"1");
        let copy = arg(&run, 3).to_vec();
        assert_eq!(Slot::for_key(&copy), home);
        assert!(copy.ends_with(b"slotway-copy:p:1:2:0"));
        assert_eq!(arg(&run, 4), b"payload");
        let command: Vec<&[u8]> = (5..run.len()).map(|i| arg(&run, i)).collect();
        assert_eq!(
            command,
            vec![
                b"ZUNION".as_slice(),
                b"3",
                b"a",
                &copy,
                b"a",
                b"WEIGHTS",
                b"1",
                b"2",
                b"3"
            ]
        );
        // "b" did not exist: no copy, and its name in the command names no key.
        let (run, _) = c.run(vec![Frame::Null], "p:1:2", Version::Resp3).unwrap();
        assert_eq!(arg(&run, 1), RUN_RESP3);
        assert_eq!(arg(&run, 2), b"0");
        assert!(arg(&run, 6).ends_with(b"slotway-copy:p:1:2:0"));
        // A failed read is the answer.
        let err = Frame::Error(Bytes::from("CLUSTERDOWN x"));
        assert_eq!(
            c.run(vec![err.clone()], "p", Version::Resp2).unwrap_err(),
            err
        );
    }

    #[test]
    fn lcs_map_is_put_back_in_the_nodes_order() {
        let c = plan(&["LCS", "a", "b", "IDX"]);
        let len = (Frame::Bulk(Bytes::from("len")), Frame::Integer(3));
        let matches = (Frame::Bulk(Bytes::from("matches")), Frame::Array(vec![]));
        let answer = c.answer(Frame::Map(vec![len.clone(), matches.clone()]));
        assert_eq!(answer, Frame::Map(vec![matches, len]));
    }
}

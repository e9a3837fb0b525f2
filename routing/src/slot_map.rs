//! [`SlotMap`]: which shard owns each of the 16384 slots, built from a `CLUSTER SLOTS` or
//! `CLUSTER SHARDS` reply.
//!
//! Both replies are accepted in their RESP2 shape (arrays, with maps flattened into
//! key/value arrays) and their RESP3 shape (maps). A reply that does not have the documented
//! shape is an error naming the part that is wrong, and nothing panics. One thing is skipped:
//! a node whose address the cluster does not know (no port, or port 0: a node flagged
//! `noaddr`, such as a replica that failed and whose host is gone). Such a replica is left
//! out; such a master's slots are left unassigned, as no client could reach them either.
//!
//! Node addresses are `host:port` strings, joined with `:` as Redis prints them (an IPv6 host
//! has no brackets, so the port is after the last colon). The host is the node's preferred
//! endpoint, except:
//!
//! | endpoint              | host used                                                       |
//! |-----------------------|-----------------------------------------------------------------|
//! | null or empty         | the host of the node that was queried (Redis's "unknown endpoint": use the address you connected to) |
//! | `?`                   | the node's `ip` if the reply has one, else the queried host (`?` is a hostname-mode node without a hostname) |

// Routing runs on untrusted input: no indexing, unwrapping or panicking outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use protocol::Frame;

use crate::Slot;

/// One shard: a master and its replicas, by `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// `host:port` of the master.
    pub master: String,
    /// Node id of the master, when the source gave it.
    pub master_id: Option<String>,
    /// `host:port` of each replica.
    pub replicas: Vec<String>,
}

/// A complete or partial slot → shard table.
///
/// Invariants: every entry of the slot table is either unassigned or a valid index into
/// `shards`; every shard owns at least one slot; shards are sorted by master address and no two
/// have the same master address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    slots: Box<[u16]>,
    shards: Vec<Shard>,
}

/// Why a `CLUSTER SHARDS` / `CLUSTER SLOTS` reply could not be turned into a [`SlotMap`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotMapError {
    /// The reply does not have the documented shape; the text says where.
    #[error("malformed cluster topology reply: {0}")]
    Malformed(String),
}

// === impl SlotMap ===

impl SlotMap {
    /// Marker for an unassigned slot in the table.
    const UNASSIGNED: u16 = u16::MAX;

    /// A map in which no slot has an owner.
    pub fn empty() -> SlotMap {
        SlotMap {
            slots: vec![SlotMap::UNASSIGNED; Slot::COUNT].into_boxed_slice(),
            shards: Vec::new(),
        }
    }

    /// Builds a map from a `CLUSTER SLOTS` reply. `queried` is the `host:port` that was asked,
    /// used where a node reports an empty or `?` host (Redis does so for itself when it does
    /// not know its own address; see the module docs for the exact rule).
    ///
    /// Each entry is `[start, end, master, replica...]`, a node being
    /// `[endpoint, port, id?, metadata?]`. A master that appears in several entries (one per
    /// slot range) is one shard.
    ///
    /// # Errors
    /// [`SlotMapError::Malformed`] if the reply is not an array of such entries, a slot number
    /// is not below 16384 or a range is reversed, a port is not in `1..=65535`, or a slot is
    /// claimed twice.
    pub fn from_cluster_slots(reply: &Frame, queried: &str) -> Result<SlotMap, SlotMapError> {
        let queried_host = host_of(queried);
        let entries =
            array(reply).ok_or_else(|| malformed("CLUSTER SLOTS reply is not an array"))?;
        let mut builder = Builder::new();
        for (i, entry) in entries.iter().enumerate() {
            let at = || format!("CLUSTER SLOTS entry {i}");
            let items =
                array(entry).ok_or_else(|| malformed(format!("{} is not an array", at())))?;
            let [start, end, master, replicas @ ..] = items else {
                return Err(malformed(format!(
                    "{} has {} elements, expected at least 3 (start, end, master)",
                    at(),
                    items.len()
                )));
            };
            let start = slot_number(start).ok_or_else(|| {
                malformed(format!("{}: start slot is not a number below 16384", at()))
            })?;
            let end = slot_number(end).ok_or_else(|| {
                malformed(format!("{}: end slot is not a number below 16384", at()))
            })?;
            if end < start {
                return Err(malformed(format!(
                    "{}: slot range {start}-{end} is reversed",
                    at()
                )));
            }
            let (master, master_id) = slots_node(master, queried_host)
                .map_err(|e| malformed(format!("{} master: {e}", at())))?;
            let mut replica_addrs = Vec::with_capacity(replicas.len());
            for (r, replica) in replicas.iter().enumerate() {
                let (addr, _) = slots_node(replica, queried_host)
                    .map_err(|e| malformed(format!("{} replica {r}: {e}", at())))?;
                replica_addrs.extend(addr);
            }
            let Some(master) = master else {
                continue;
            };
            let shard = Shard {
                master,
                master_id,
                replicas: replica_addrs,
            };
            builder.assign(shard, &[(start, end)])?;
        }
        Ok(builder.finish())
    }

    /// Builds a map from a `CLUSTER SHARDS` reply (RESP2 arrays or RESP3 maps). Nodes whose
    /// `health` is not `online` are left out of replicas; a master that is not online still owns
    /// its slots.
    ///
    /// Each shard is `{slots: [start, end, ...], nodes: [{id, port, tls-port?, ip, endpoint,
    /// hostname?, role, replication-offset, health}, ...]}`. The address is the endpoint (see the
    /// module docs) with the port for `transport`: `port` for plain connections, `tls-port`
    /// for TLS ones, or the other if the node has only one. Shards that own no slots are left
    /// out, as `CLUSTER SLOTS` leaves them out. `queried` is as for
    /// [`SlotMap::from_cluster_slots`].
    ///
    /// # Errors
    /// [`SlotMapError::Malformed`] if the reply is not an array of such shards, a field is
    /// missing or of the wrong type, a slot list has an odd length or a bad range, a role is
    /// neither master nor replica, a shard that owns slots has no master or more than one, or a
    /// slot is claimed twice.
    pub fn from_cluster_shards(
        reply: &Frame,
        queried: &str,
        transport: Transport,
    ) -> Result<SlotMap, SlotMapError> {
        let queried_host = host_of(queried);
        let shards =
            array(reply).ok_or_else(|| malformed("CLUSTER SHARDS reply is not an array"))?;
        let mut builder = Builder::new();
        for (i, shard) in shards.iter().enumerate() {
            let at = || format!("CLUSTER SHARDS shard {i}");
            let fields =
                Fields::new(shard).ok_or_else(|| malformed(format!("{} is not a map", at())))?;
            let slots = fields
                .get("slots")
                .ok_or_else(|| malformed(format!("{} has no \"slots\"", at())))?;
            let ranges = shard_slots(slots).map_err(|e| malformed(format!("{}: {e}", at())))?;
            let nodes = fields
                .get("nodes")
                .and_then(array)
                .ok_or_else(|| malformed(format!("{} has no \"nodes\" array", at())))?;
            let mut master: Option<(Option<String>, Option<String>)> = None;
            let mut replicas = Vec::new();
            for (n, node) in nodes.iter().enumerate() {
                let node = shards_node(node, queried_host, transport)
                    .map_err(|e| malformed(format!("{} node {n}: {e}", at())))?;
                if node.is_master {
                    if master.is_some() {
                        return Err(malformed(format!("{} has more than one master", at())));
                    }
                    master = Some((node.addr, node.id));
                } else if node.online {
                    replicas.extend(node.addr);
                }
            }
            if ranges.is_empty() {
                continue;
            }
            let Some((master, master_id)) = master else {
                return Err(malformed(format!("{} owns slots but has no master", at())));
            };
            let Some(master) = master else {
                continue; // no known address: its slots stay unassigned
            };
            builder.assign(
                Shard {
                    master,
                    master_id,
                    replicas,
                },
                &ranges,
            )?;
        }
        Ok(builder.finish())
    }

    /// The index into [`SlotMap::shards`] of the shard that owns `slot`, if any.
    pub fn shard_for(&self, slot: Slot) -> Option<usize> {
        match self.slots.get(usize::from(slot.get())).copied() {
            None | Some(SlotMap::UNASSIGNED) => None,
            Some(i) => Some(usize::from(i)),
        }
    }

    /// The shard that owns `slot`, if any.
    pub fn shard(&self, slot: Slot) -> Option<&Shard> {
        self.shards.get(self.shard_for(slot)?)
    }

    /// All shards, in a stable order (sorted by master address).
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// True if every one of the 16384 slots has an owner.
    pub fn is_complete(&self) -> bool {
        !self.slots.contains(&SlotMap::UNASSIGNED)
    }

    /// A copy of this map in which `slot` belongs to the shard whose master is `addr` (added as
    /// a new shard without replicas if unknown), as a `MOVED` reply says.
    ///
    /// A shard left without slots is dropped, and shard indexes may change (shards stay sorted
    /// by master address), so indexes from `self` are not valid in the result.
    pub fn with_moved(&self, slot: Slot, addr: &str) -> SlotMap {
        let mut slots = self.slots.clone();
        let mut shards = self.shards.clone();
        let index = match shards.iter().position(|s| s.master == addr) {
            Some(i) => i,
            None => {
                shards.push(Shard {
                    master: addr.to_owned(),
                    master_id: None,
                    replicas: Vec::new(),
                });
                shards.len() - 1
            }
        };
        if let Some(entry) = slots.get_mut(usize::from(slot.get())) {
            // At most 16384 shards own slots plus the one just added, so this fits below
            // UNASSIGNED.
            *entry = u16::try_from(index).unwrap_or(SlotMap::UNASSIGNED);
        }
        normalize(slots, shards)
    }
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap::empty()
    }
}

/// Drops shards that own no slots and sorts the rest by master address, renumbering the table.
fn normalize(mut slots: Box<[u16]>, shards: Vec<Shard>) -> SlotMap {
    let mut owned = vec![false; shards.len()];
    for &s in slots.iter() {
        if let Some(o) = owned.get_mut(usize::from(s)) {
            *o = true;
        }
    }
    let mut kept: Vec<(usize, Shard)> = shards
        .into_iter()
        .enumerate()
        .filter(|(i, _)| owned.get(*i).copied().unwrap_or(false))
        .collect();
    kept.sort_by(|a, b| a.1.master.cmp(&b.1.master));
    let mut renumber = vec![SlotMap::UNASSIGNED; owned.len()];
    for (new, (old, _)) in kept.iter().enumerate() {
        if let Some(r) = renumber.get_mut(*old) {
            *r = u16::try_from(new).unwrap_or(SlotMap::UNASSIGNED);
        }
    }
    for s in slots.iter_mut() {
        *s = renumber
            .get(usize::from(*s))
            .copied()
            .unwrap_or(SlotMap::UNASSIGNED);
    }
    SlotMap {
        slots,
        shards: kept.into_iter().map(|(_, shard)| shard).collect(),
    }
}

/// Collects shards and their slots, merging shards with the same master address.
struct Builder {
    slots: Box<[u16]>,
    shards: Vec<Shard>,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            slots: vec![SlotMap::UNASSIGNED; Slot::COUNT].into_boxed_slice(),
            shards: Vec::new(),
        }
    }

    fn assign(&mut self, shard: Shard, ranges: &[(u16, u16)]) -> Result<(), SlotMapError> {
        let index = match self.shards.iter().position(|s| s.master == shard.master) {
            Some(i) => {
                // The same master again (CLUSTER SLOTS lists it once per range): keep one shard,
                // with every replica either entry names.
                let known = self.shards.get_mut(i).map(|s| &mut s.replicas);
                if let Some(known) = known {
                    for r in shard.replicas {
                        if !known.contains(&r) {
                            known.push(r);
                        }
                    }
                }
                i
            }
            None => {
                self.shards.push(shard);
                self.shards.len() - 1
            }
        };
        // Each shard owns at least one slot, so there are at most 16384 shards.
        let index = u16::try_from(index)
            .ok()
            .filter(|&i| i != SlotMap::UNASSIGNED)
            .ok_or_else(|| malformed("more shards than slots"))?;
        for &(start, end) in ranges {
            for slot in start..=end {
                let Some(entry) = self.slots.get_mut(usize::from(slot)) else {
                    return Err(malformed(format!("slot {slot} is out of range")));
                };
                if *entry != SlotMap::UNASSIGNED && *entry != index {
                    let name = |i: u16| {
                        self.shards
                            .get(usize::from(i))
                            .map(|s| s.master.clone())
                            .unwrap_or_default()
                    };
                    return Err(malformed(format!(
                        "slot {slot} is claimed by both {} and {}",
                        name(*entry),
                        name(index)
                    )));
                }
                *entry = index;
            }
        }
        Ok(())
    }

    fn finish(self) -> SlotMap {
        normalize(self.slots, self.shards)
    }
}

/// How the proxy connects to the nodes, which decides the port taken from `CLUSTER SHARDS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP: a node's `port`.
    Plain,
    /// TLS: a node's `tls-port`.
    Tls,
}

/// One node of a `CLUSTER SHARDS` shard.
struct ShardsNode {
    /// `None` if the cluster knows no address for it (see the module docs).
    addr: Option<String>,
    id: Option<String>,
    is_master: bool,
    online: bool,
}

/// Parses a `CLUSTER SHARDS` node map.
fn shards_node(
    node: &Frame,
    queried_host: &str,
    transport: Transport,
) -> Result<ShardsNode, String> {
    let fields = Fields::new(node).ok_or("is not a map")?;
    let string = |key: &str| -> Result<Option<&str>, String> {
        match fields.get(key) {
            None | Some(Frame::Null) => Ok(None),
            Some(f) => text(f)
                .map(Some)
                .ok_or_else(|| format!("\"{key}\" is not a string")),
        }
    };
    // Redis leaves out a port it does not know: a node with neither has no known address.
    let (preferred, other) = match transport {
        Transport::Plain => ("port", "tls-port"),
        Transport::Tls => ("tls-port", "port"),
    };
    let port = match (fields.get(preferred), fields.get(other)) {
        (Some(p), _) | (None, Some(p)) => node_port(p).ok_or("port is not in 0..=65535")?,
        (None, None) => None,
    };
    let host = endpoint_host(string("endpoint")?, string("ip")?, queried_host);
    let role = string("role")?.ok_or("has no \"role\"")?;
    let is_master = match role {
        "master" | "primary" => true,
        "replica" | "slave" => false,
        other => return Err(format!("role {other:?} is neither master nor replica")),
    };
    let health = string("health")?.ok_or("has no \"health\"")?;
    Ok(ShardsNode {
        addr: port.map(|port| format!("{host}:{port}")),
        id: string("id")?.map(str::to_owned),
        is_master,
        online: health == "online",
    })
}

/// Parses a `CLUSTER SHARDS` slot list: `[start, end, start, end, ...]`.
fn shard_slots(slots: &Frame) -> Result<Vec<(u16, u16)>, String> {
    let items = array(slots).ok_or("\"slots\" is not an array")?;
    if items.len() % 2 != 0 {
        return Err(format!(
            "\"slots\" has an odd number of elements ({})",
            items.len()
        ));
    }
    items
        .chunks_exact(2)
        .map(|pair| match pair {
            [start, end] => {
                let (Some(start), Some(end)) = (slot_number(start), slot_number(end)) else {
                    return Err("\"slots\" has an element that is not a number below 16384".into());
                };
                if end < start {
                    return Err(format!("slot range {start}-{end} is reversed"));
                }
                Ok((start, end))
            }
            _ => Err("\"slots\" is not a list of pairs".into()),
        })
        .collect()
}

/// Parses a `CLUSTER SLOTS` node: `[endpoint, port, id?, metadata?]`. Returns the address
/// (`None` for port 0: no known address) and the id.
fn slots_node(
    node: &Frame,
    queried_host: &str,
) -> Result<(Option<String>, Option<String>), String> {
    let items = array(node).ok_or("is not an array")?;
    let [endpoint, port, rest @ ..] = items else {
        return Err(format!(
            "has {} elements, expected at least 2 (endpoint, port)",
            items.len()
        ));
    };
    let endpoint = match endpoint {
        Frame::Null => None,
        f => Some(text(f).ok_or("endpoint is not a string")?),
    };
    let port = node_port(port).ok_or("port is not in 0..=65535")?;
    let id = match rest.first() {
        None => None,
        Some(f) => Some(text(f).ok_or("node id is not a string")?.to_owned()),
    };
    // Metadata: a map (RESP3) or flat array (RESP2) of extra addresses, such as `ip` when the
    // endpoint is a hostname.
    let ip = match rest.get(1) {
        None => None,
        Some(meta) => {
            let fields = Fields::new(meta).ok_or("metadata is not a map")?;
            fields.get("ip").and_then(text)
        }
    };
    let host = endpoint_host(endpoint, ip, queried_host);
    Ok((port.map(|port| format!("{host}:{port}")), id))
}

/// The host to use for a node; see the module docs.
fn endpoint_host<'a>(endpoint: Option<&'a str>, ip: Option<&'a str>, queried: &'a str) -> &'a str {
    let usable = |h: &&str| !h.is_empty() && *h != "?";
    match endpoint {
        Some(e) if usable(&e) => e,
        Some("?") => ip.filter(usable).unwrap_or(queried),
        _ => queried,
    }
}

/// Everything before the last colon of `host:port` (all of it if there is no colon): the host
/// of an address as the slot map writes it (IPv6 without brackets).
pub fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').map_or(addr, |(host, _)| host)
}

/// A RESP2 flattened map (`[k, v, k, v...]`) or a RESP3 map, looked up by string key.
struct Fields<'a> {
    flat: Option<&'a [Frame]>,
    map: Option<&'a [(Frame, Frame)]>,
}

impl<'a> Fields<'a> {
    fn new(frame: &'a Frame) -> Option<Fields<'a>> {
        match unwrap_attribute(frame) {
            Frame::Map(pairs) => Some(Fields {
                flat: None,
                map: Some(pairs),
            }),
            Frame::Array(items) if items.len() % 2 == 0 => Some(Fields {
                flat: Some(items),
                map: None,
            }),
            _ => None,
        }
    }

    fn get(&self, key: &str) -> Option<&'a Frame> {
        if let Some(pairs) = self.map {
            return pairs
                .iter()
                .find(|(k, _)| text(k) == Some(key))
                .map(|(_, v)| v);
        }
        self.flat?.chunks_exact(2).find_map(|kv| match kv {
            [k, v] if text(k) == Some(key) => Some(v),
            _ => None,
        })
    }
}

fn unwrap_attribute(frame: &Frame) -> &Frame {
    match frame {
        Frame::Attribute { frame, .. } => unwrap_attribute(frame),
        f => f,
    }
}

fn array(frame: &Frame) -> Option<&[Frame]> {
    match unwrap_attribute(frame) {
        Frame::Array(items) | Frame::Set(items) => Some(items),
        _ => None,
    }
}

fn text(frame: &Frame) -> Option<&str> {
    match unwrap_attribute(frame) {
        Frame::Simple(b) | Frame::Bulk(b) | Frame::Verbatim { text: b, .. } => {
            std::str::from_utf8(b).ok()
        }
        _ => None,
    }
}

fn integer(frame: &Frame) -> Option<i64> {
    match unwrap_attribute(frame) {
        Frame::Integer(n) => Some(*n),
        // Tolerate numbers sent as strings.
        f => text(f).and_then(|t| crate::keys::string2ll(t.as_bytes())),
    }
}

fn slot_number(frame: &Frame) -> Option<u16> {
    integer(frame)
        .and_then(|n| u16::try_from(n).ok())
        .and_then(Slot::new)
        .map(Slot::get)
}

/// A node's port: `Some(None)` for 0 (no known address), `None` if it is not a port at all.
fn node_port(frame: &Frame) -> Option<Option<u16>> {
    integer(frame)
        .and_then(|n| u16::try_from(n).ok())
        .map(|p| (p != 0).then_some(p))
}

fn malformed(text: impl Into<String>) -> SlotMapError {
    SlotMapError::Malformed(text.into())
}

#[cfg(test)]
mod tests;

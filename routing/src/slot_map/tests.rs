//! Tests for the slot map: hand-built replies of both shapes, the endpoint rules, `with_moved`,
//! and malformed input. Replies captured from a real cluster are in `tests/slot_map_fixtures.rs`.

use bytes::Bytes;
use protocol::Frame;

use super::*;

fn bulk(s: &str) -> Frame {
    Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()))
}

fn int(n: i64) -> Frame {
    Frame::Integer(n)
}

fn arr(items: Vec<Frame>) -> Frame {
    Frame::Array(items)
}

fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

/// A CLUSTER SLOTS node `[endpoint, port, id, {metadata}]` (RESP3 metadata map).
fn slots_node(endpoint: Frame, port: i64, id: &str, ip: Option<&str>) -> Frame {
    let meta = match ip {
        Some(ip) => vec![(bulk("ip"), bulk(ip))],
        None => vec![],
    };
    arr(vec![endpoint, int(port), bulk(id), Frame::Map(meta)])
}

/// A CLUSTER SHARDS node, as a RESP3 map (`resp3`) or a RESP2 flat array.
fn shards_node(resp3: bool, fields: &[(&str, Frame)]) -> Frame {
    if resp3 {
        Frame::Map(fields.iter().map(|(k, v)| (bulk(k), v.clone())).collect())
    } else {
        arr(fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), v.clone()])
            .collect())
    }
}

fn node_fields(endpoint: &str, port: i64, role: &str, health: &str) -> Vec<(&'static str, Frame)> {
    vec![
        ("id", bulk(&format!("id-{port}"))),
        ("port", int(port)),
        ("ip", bulk("10.0.0.1")),
        ("endpoint", bulk(endpoint)),
        ("role", bulk(role)),
        ("replication-offset", int(0)),
        ("health", bulk(health)),
    ]
}

fn shard(resp3: bool, slots: &[i64], nodes: Vec<Frame>) -> Frame {
    shards_node(
        resp3,
        &[
            ("slots", arr(slots.iter().map(|&n| int(n)).collect())),
            ("nodes", arr(nodes)),
        ],
    )
}

fn malformed_text(result: Result<SlotMap, SlotMapError>) -> String {
    match result {
        Err(SlotMapError::Malformed(text)) => text,
        Ok(map) => panic!("expected an error, got {map:?}"),
    }
}

#[test]
fn empty_map() {
    let map = SlotMap::empty();
    assert!(!map.is_complete());
    assert_eq!(map.shard_for(slot(0)), None);
    assert!(map.shards().is_empty());
    assert_eq!(SlotMap::default(), map);
    assert_eq!(
        SlotMap::from_cluster_slots(&arr(vec![]), "h:1"),
        Ok(SlotMap::empty())
    );
    assert_eq!(
        SlotMap::from_cluster_shards(&arr(vec![]), "h:1", Transport::Plain),
        Ok(SlotMap::empty())
    );
}

#[test]
fn cluster_slots_partial_and_sorted() {
    // Listed out of address order, with a gap (slots 101-199 unassigned).
    let reply = arr(vec![
        arr(vec![
            int(200),
            int(16383),
            slots_node(bulk("10.0.0.2"), 7000, "b", None),
        ]),
        arr(vec![
            int(0),
            int(100),
            slots_node(bulk("10.0.0.1"), 7000, "a", None),
            slots_node(bulk("10.0.0.3"), 7001, "c", None),
        ]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "10.0.0.1:7000").unwrap();
    assert!(!map.is_complete());
    assert_eq!(map.shards()[0].master, "10.0.0.1:7000");
    assert_eq!(map.shards()[0].master_id.as_deref(), Some("a"));
    assert_eq!(map.shards()[0].replicas, ["10.0.0.3:7001"]);
    assert_eq!(map.shards()[1].master, "10.0.0.2:7000");
    assert_eq!(map.shard_for(slot(100)), Some(0));
    assert_eq!(map.shard_for(slot(101)), None);
    assert_eq!(map.shard_for(slot(199)), None);
    assert_eq!(map.shard_for(slot(200)), Some(1));
    assert_eq!(map.shard(slot(16383)).unwrap().master, "10.0.0.2:7000");
}

#[test]
fn cluster_slots_minimal_nodes_and_resp2_metadata() {
    // Old servers send `[ip, port]` only; RESP2 metadata is a flat array.
    let reply = arr(vec![
        arr(vec![int(0), int(8191), arr(vec![bulk("h1"), int(1)])]),
        arr(vec![
            int(8192),
            int(16383),
            arr(vec![
                bulk("?"),
                int(2),
                bulk("id2"),
                arr(vec![bulk("ip"), bulk("10.1.1.1")]),
            ]),
        ]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "q:9").unwrap();
    assert!(map.is_complete());
    assert_eq!(map.shards()[0].master, "10.1.1.1:2");
    assert_eq!(map.shards()[1].master, "h1:1");
    assert_eq!(map.shards()[1].master_id, None);
}

#[test]
fn unknown_endpoints_use_the_queried_host() {
    for endpoint in [bulk(""), Frame::Null, bulk("?")] {
        let reply = arr(vec![arr(vec![
            int(0),
            int(16383),
            slots_node(endpoint.clone(), 7001, "a", None),
            // An empty endpoint means "the host you asked", even if an ip is given.
            slots_node(
                endpoint.clone(),
                7002,
                "b",
                if endpoint == bulk("?") {
                    None
                } else {
                    Some("10.0.0.9")
                },
            ),
        ])]);
        let map = SlotMap::from_cluster_slots(&reply, "::1:7000").unwrap();
        assert_eq!(map.shards()[0].master, "::1:7001", "{endpoint:?}");
        assert_eq!(map.shards()[0].replicas, ["::1:7002"], "{endpoint:?}");
    }
    for resp3 in [false, true] {
        let mut fields = node_fields("", 7001, "master", "online");
        let reply = arr(vec![shard(
            resp3,
            &[0, 16383],
            vec![shards_node(resp3, &fields)],
        )]);
        let map =
            SlotMap::from_cluster_shards(&reply, "redis.local:7000", Transport::Plain).unwrap();
        assert_eq!(map.shards()[0].master, "redis.local:7001");
        // `?` falls back to the node's ip.
        fields[3].1 = bulk("?");
        let reply = arr(vec![shard(
            resp3,
            &[0, 16383],
            vec![shards_node(resp3, &fields)],
        )]);
        let map =
            SlotMap::from_cluster_shards(&reply, "redis.local:7000", Transport::Plain).unwrap();
        assert_eq!(map.shards()[0].master, "10.0.0.1:7001");
    }
}

#[test]
fn cluster_shards_both_shapes() {
    for resp3 in [false, true] {
        let reply = arr(vec![
            shard(
                resp3,
                &[0, 99, 200, 16383],
                vec![
                    shards_node(resp3, &node_fields("r1.example", 7003, "replica", "online")),
                    shards_node(resp3, &node_fields("m1.example", 7001, "master", "failed")),
                    shards_node(resp3, &node_fields("r2.example", 7004, "replica", "failed")),
                    shards_node(
                        resp3,
                        &node_fields("r3.example", 7005, "replica", "loading"),
                    ),
                ],
            ),
            shard(
                resp3,
                &[100, 199],
                vec![shards_node(
                    resp3,
                    &node_fields("m0.example", 7000, "master", "online"),
                )],
            ),
            // A shard without slots (a new, empty master) owns nothing and is left out.
            shard(
                resp3,
                &[],
                vec![shards_node(
                    resp3,
                    &node_fields("m9.example", 7009, "master", "online"),
                )],
            ),
        ]);
        let map = SlotMap::from_cluster_shards(&reply, "q:1", Transport::Plain).unwrap();
        assert!(map.is_complete());
        assert_eq!(
            map.shards(),
            [
                Shard {
                    master: "m0.example:7000".into(),
                    master_id: Some("id-7000".into()),
                    replicas: vec![]
                },
                Shard {
                    master: "m1.example:7001".into(),
                    master_id: Some("id-7001".into()),
                    replicas: vec!["r1.example:7003".into()],
                },
            ]
        );
        assert_eq!(map.shard_for(slot(99)), Some(1));
        assert_eq!(map.shard_for(slot(100)), Some(0));
        assert_eq!(map.shard_for(slot(200)), Some(1));
    }
}

#[test]
fn tls_port_when_there_is_no_port() {
    let fields = vec![
        ("id", bulk("x")),
        ("tls-port", int(6390)),
        ("ip", bulk("10.0.0.1")),
        ("endpoint", bulk("10.0.0.1")),
        ("role", bulk("master")),
        ("health", bulk("online")),
    ];
    let reply = arr(vec![shard(
        true,
        &[0, 16383],
        vec![shards_node(true, &fields)],
    )]);
    let map = SlotMap::from_cluster_shards(&reply, "q:1", Transport::Plain).unwrap();
    assert_eq!(map.shards()[0].master, "10.0.0.1:6390");
}

#[test]
fn the_port_for_the_transport() {
    // A node serving plain and TLS clients (tls-port with tls-cluster yes) lists both.
    let fields = vec![
        ("id", bulk("x")),
        ("port", int(6379)),
        ("tls-port", int(6390)),
        ("ip", bulk("10.0.0.1")),
        ("endpoint", bulk("10.0.0.1")),
        ("role", bulk("master")),
        ("health", bulk("online")),
    ];
    for resp3 in [false, true] {
        let reply = arr(vec![shard(
            resp3,
            &[0, 16383],
            vec![shards_node(resp3, &fields)],
        )]);
        let plain = SlotMap::from_cluster_shards(&reply, "q:1", Transport::Plain).unwrap();
        assert_eq!(plain.shards()[0].master, "10.0.0.1:6379");
        let tls = SlotMap::from_cluster_shards(&reply, "q:1", Transport::Tls).unwrap();
        assert_eq!(tls.shards()[0].master, "10.0.0.1:6390");
    }
    // A node with only a plain port is still reachable by it.
    let plain_only: Vec<_> = fields
        .iter()
        .filter(|(k, _)| *k != "tls-port")
        .cloned()
        .collect();
    let reply = arr(vec![shard(
        true,
        &[0, 16383],
        vec![shards_node(true, &plain_only)],
    )]);
    let map = SlotMap::from_cluster_shards(&reply, "q:1", Transport::Tls).unwrap();
    assert_eq!(map.shards()[0].master, "10.0.0.1:6379");
}

#[test]
fn with_moved() {
    let reply = arr(vec![
        arr(vec![
            int(0),
            int(8191),
            slots_node(bulk("b"), 1, "b", None),
            slots_node(bulk("r"), 9, "r", None),
        ]),
        arr(vec![
            int(8192),
            int(16383),
            slots_node(bulk("c"), 1, "c", None),
        ]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "q:1").unwrap();
    // To a known master: replicas are kept.
    let moved = map.with_moved(slot(5), "c:1");
    assert_eq!(moved.shard(slot(5)).unwrap().master, "c:1");
    assert_eq!(moved.shard(slot(4)).unwrap().replicas, ["r:9"]);
    assert_eq!(moved.shards().len(), 2);
    // To a new node: a new shard, sorted into place.
    let moved = map.with_moved(slot(5), "a:1");
    assert_eq!(
        moved
            .shards()
            .iter()
            .map(|s| s.master.as_str())
            .collect::<Vec<_>>(),
        ["a:1", "b:1", "c:1"]
    );
    assert_eq!(moved.shard_for(slot(5)), Some(0));
    assert_eq!(moved.shard(slot(5)).unwrap().master_id, None);
    assert_eq!(moved.shard(slot(6)).unwrap().master, "b:1");
    assert_eq!(moved.shard(slot(8192)).unwrap().master, "c:1");
    // An unassigned slot can be moved too.
    let moved = SlotMap::empty().with_moved(slot(16383), "x:1");
    assert_eq!(moved.shard(slot(16383)).unwrap().master, "x:1");
    assert_eq!(moved.shard_for(slot(0)), None);
    // A shard left without slots is dropped.
    let mut one = SlotMap::empty().with_moved(slot(0), "old:1");
    one = one.with_moved(slot(0), "new:1");
    assert_eq!(one.shards().len(), 1);
    assert_eq!(one.shards()[0].master, "new:1");
}

#[test]
fn malformed_cluster_slots() {
    let node = || slots_node(bulk("h"), 1, "id", None);
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame::Error(Bytes::from_static(
                b"ERR This instance has cluster support disabled",
            )),
            "not an array",
        ),
        (Frame::Null, "not an array"),
        (arr(vec![int(1)]), "entry 0 is not an array"),
        (arr(vec![arr(vec![int(0), int(1)])]), "expected at least 3"),
        (arr(vec![arr(vec![int(0), int(16384), node()])]), "end slot"),
        (arr(vec![arr(vec![int(-1), int(5), node()])]), "start slot"),
        (
            arr(vec![arr(vec![bulk("x"), int(5), node()])]),
            "start slot",
        ),
        (arr(vec![arr(vec![int(9), int(5), node()])]), "reversed"),
        (
            arr(vec![arr(vec![int(0), int(5), int(3)])]),
            "master: is not an array",
        ),
        (
            arr(vec![arr(vec![int(0), int(5), arr(vec![bulk("h")])])]),
            "master: has 1 elements",
        ),
        (
            arr(vec![arr(vec![
                int(0),
                int(5),
                arr(vec![bulk("h"), int(65536)]),
            ])]),
            "port",
        ),
        (
            arr(vec![arr(vec![
                int(0),
                int(5),
                arr(vec![bulk("h"), bulk("p")]),
            ])]),
            "port",
        ),
        (
            arr(vec![arr(vec![int(0), int(5), arr(vec![int(1), int(1)])])]),
            "endpoint is not a string",
        ),
        (
            arr(vec![arr(vec![
                int(0),
                int(5),
                arr(vec![bulk("h"), int(1), int(7)]),
            ])]),
            "node id",
        ),
        (
            arr(vec![arr(vec![
                int(0),
                int(5),
                arr(vec![bulk("h"), int(1), bulk("i"), int(7)]),
            ])]),
            "metadata",
        ),
        (
            arr(vec![arr(vec![int(0), int(5), node(), int(3)])]),
            "replica 0: is not an array",
        ),
        (
            arr(vec![
                arr(vec![int(0), int(5), node()]),
                arr(vec![
                    int(5),
                    int(9),
                    slots_node(bulk("other"), 1, "o", None),
                ]),
            ]),
            "slot 5 is claimed by both h:1 and other:1",
        ),
    ];
    for (reply, want) in cases {
        let text = malformed_text(SlotMap::from_cluster_slots(&reply, "q:1"));
        assert!(
            text.contains(want),
            "{reply:?}: {text:?} should mention {want:?}"
        );
    }
}

#[test]
fn malformed_cluster_shards() {
    let master = || shards_node(true, &node_fields("m", 1, "master", "online"));
    let without = |key: &str| {
        let fields: Vec<_> = node_fields("m", 1, "master", "online")
            .into_iter()
            .filter(|(k, _)| *k != key)
            .collect();
        shards_node(true, &fields)
    };
    let with = |key: &str, value: Frame| {
        let fields: Vec<_> = node_fields("m", 1, "master", "online")
            .into_iter()
            .map(|(k, v)| if k == key { (k, value.clone()) } else { (k, v) })
            .collect();
        shards_node(true, &fields)
    };
    let cases: Vec<(Frame, &str)> = vec![
        (int(3), "reply is not an array"),
        (arr(vec![int(3)]), "shard 0 is not a map"),
        (arr(vec![arr(vec![bulk("slots")])]), "shard 0 is not a map"),
        (
            arr(vec![shards_node(true, &[("nodes", arr(vec![master()]))])]),
            "no \"slots\"",
        ),
        (
            arr(vec![shards_node(
                true,
                &[("slots", arr(vec![int(0), int(1)]))],
            )]),
            "no \"nodes\" array",
        ),
        (
            arr(vec![shards_node(
                true,
                &[("slots", int(0)), ("nodes", arr(vec![master()]))],
            )]),
            "\"slots\" is not an array",
        ),
        (arr(vec![shard(true, &[0], vec![master()])]), "odd number"),
        (
            arr(vec![shard(true, &[0, 16384], vec![master()])]),
            "not a number below 16384",
        ),
        (arr(vec![shard(true, &[7, 3], vec![master()])]), "reversed"),
        (
            arr(vec![shard(true, &[0, 1], vec![int(1)])]),
            "node 0: is not a map",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![with("port", int(-1))])]),
            "port",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![without("role")])]),
            "no \"role\"",
        ),
        (
            arr(vec![shard(
                true,
                &[0, 1],
                vec![with("role", bulk("leader"))],
            )]),
            "role \"leader\"",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![with("role", int(1))])]),
            "\"role\" is not a string",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![without("health")])]),
            "no \"health\"",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![with("endpoint", int(1))])]),
            "\"endpoint\" is not a string",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![])]),
            "owns slots but has no master",
        ),
        (
            arr(vec![shard(
                true,
                &[0, 1],
                vec![shards_node(true, &node_fields("r", 2, "replica", "online"))],
            )]),
            "owns slots but has no master",
        ),
        (
            arr(vec![shard(true, &[0, 1], vec![master(), master()])]),
            "more than one master",
        ),
        (
            arr(vec![
                shard(true, &[0, 10], vec![master()]),
                shard(
                    true,
                    &[10, 20],
                    vec![shards_node(true, &node_fields("n", 2, "master", "online"))],
                ),
            ]),
            "slot 10 is claimed by both m:1 and n:2",
        ),
    ];
    for (reply, want) in cases {
        let text = malformed_text(SlotMap::from_cluster_shards(
            &reply,
            "q:1",
            Transport::Plain,
        ));
        assert!(
            text.contains(want),
            "{reply:?}: {text:?} should mention {want:?}"
        );
    }
}

#[test]
fn error_text_names_the_place() {
    let reply = arr(vec![
        arr(vec![int(0), int(5), arr(vec![bulk("h"), int(1)])]),
        arr(vec![int(0)]),
    ]);
    let err = SlotMap::from_cluster_slots(&reply, "q:1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "malformed cluster topology reply: CLUSTER SLOTS entry 1 has 1 elements, expected at least 3 \
         (start, end, master)"
    );
}

proptest::proptest! {
    /// Arbitrary frames never panic either parser.
    #[test]
    fn never_panics(frame in arb_frame()) {
        let _ = SlotMap::from_cluster_slots(&frame, "q:1");
        let _ = SlotMap::from_cluster_shards(&frame, "q:1", Transport::Plain);
    }
}

fn arb_frame() -> impl proptest::strategy::Strategy<Value = Frame> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        (-2i64..20000).prop_map(Frame::Integer),
        proptest::sample::select(vec![
            "slots", "nodes", "port", "tls-port", "ip", "endpoint", "role", "master", "replica",
            "health", "online", "id", "?", "", "h",
        ])
        .prop_map(bulk),
        Just(Frame::Null),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Frame::Array),
            proptest::collection::vec((inner.clone(), inner), 0..5).prop_map(Frame::Map),
        ]
    })
}

#[test]
fn nodes_without_an_address_are_left_out() {
    // CLUSTER SLOTS: port 0. A replica is dropped; a master's range stays unassigned.
    let reply = arr(vec![
        arr(vec![
            int(0),
            int(5),
            slots_node(bulk("10.0.0.1"), 7000, "a", None),
            arr(vec![bulk(""), int(0)]),
        ]),
        arr(vec![int(6), int(9), arr(vec![bulk("10.0.0.2"), int(0)])]),
    ]);
    let map = SlotMap::from_cluster_slots(&reply, "10.0.0.1:7000").unwrap();
    assert_eq!(map.shards().len(), 1);
    assert!(map.shards()[0].replicas.is_empty());
    assert_eq!(map.shard_for(slot(5)), Some(0));
    assert_eq!(map.shard_for(slot(6)), None);
    // CLUSTER SHARDS: no port at all.
    for resp3 in [false, true] {
        let no_port = |role: &str| {
            let fields: Vec<_> = node_fields("", 1, role, "online")
                .into_iter()
                .filter(|(k, _)| *k != "port")
                .collect();
            shards_node(resp3, &fields)
        };
        let reply = arr(vec![
            shard(
                resp3,
                &[0, 5],
                vec![
                    shards_node(resp3, &node_fields("10.0.0.1", 7000, "master", "online")),
                    no_port("replica"),
                ],
            ),
            shard(resp3, &[6, 9], vec![no_port("master")]),
        ]);
        let map = SlotMap::from_cluster_shards(&reply, "10.0.0.1:7000", Transport::Plain).unwrap();
        assert_eq!(map.shards().len(), 1);
        assert!(map.shards()[0].replicas.is_empty());
        assert_eq!(map.shard_for(slot(6)), None);
    }
}

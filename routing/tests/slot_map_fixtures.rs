//! `SlotMap` built from `CLUSTER SLOTS` / `CLUSTER SHARDS` replies captured from a real
//! 3-master / 3-replica Redis 7.0.15 cluster (see `fixtures/README.md`), in RESP2 and RESP3.

use bytes::BytesMut;
use protocol::{Frame, Limits};
use routing::{Shard, Slot, SlotMap, Transport};

const QUERIED: &str = "127.0.0.1:30101";
const ID_1: &str = "d986d677e2c63553794033096e045ac62f40ab72";
const ID_2: &str = "4b0ec29d30336ccc011d6819b7a6c42fe47f4e86";
const ID_3: &str = "5a644775376373fce7903ff470a0a5fe419e456b";

fn decode(bytes: &[u8]) -> Frame {
    let mut buf = BytesMut::from(bytes);
    let frame = protocol::decode(&mut buf, &Limits::default())
        .expect("valid RESP")
        .expect("complete frame");
    assert!(buf.is_empty(), "one reply per fixture");
    frame
}

fn shard(master: &str, id: &str, replicas: &[&str]) -> Shard {
    Shard {
        master: master.to_string(),
        master_id: Some(id.to_string()),
        replicas: replicas.iter().map(|r| r.to_string()).collect(),
    }
}

fn slot(n: u16) -> Slot {
    Slot::new(n).unwrap()
}

/// The owner of each slot, as master addresses.
fn owner(map: &SlotMap, n: u16) -> Option<&str> {
    map.shard(slot(n)).map(|s| s.master.as_str())
}

fn assert_initial_cluster(map: &SlotMap) {
    assert_eq!(
        map.shards(),
        [
            shard("127.0.0.1:30101", ID_1, &["127.0.0.1:30106"]),
            shard("127.0.0.1:30102", ID_2, &["127.0.0.1:30104"]),
            shard("127.0.0.1:30103", ID_3, &["127.0.0.1:30105"]),
        ]
    );
    assert!(map.is_complete());
    for (n, want) in [
        (0, 0),
        (5460, 0),
        (5461, 1),
        (10922, 1),
        (10923, 2),
        (16383, 2),
    ] {
        assert_eq!(map.shard_for(slot(n)), Some(want), "slot {n}");
    }
    assert_eq!(owner(map, 12182), Some("127.0.0.1:30103")); // "foo"
}

#[test]
fn cluster_slots_resp2() {
    let reply = decode(include_bytes!("fixtures/cluster_slots.resp2"));
    assert!(matches!(reply, Frame::Array(_)));
    assert_initial_cluster(&SlotMap::from_cluster_slots(&reply, QUERIED).unwrap());
}

#[test]
fn cluster_slots_resp3() {
    let reply = decode(include_bytes!("fixtures/cluster_slots.resp3"));
    assert_initial_cluster(&SlotMap::from_cluster_slots(&reply, QUERIED).unwrap());
}

#[test]
fn cluster_shards_resp2() {
    let reply = decode(include_bytes!("fixtures/cluster_shards.resp2"));
    assert_initial_cluster(
        &SlotMap::from_cluster_shards(&reply, QUERIED, Transport::Plain).unwrap(),
    );
}

#[test]
fn cluster_shards_resp3() {
    let reply = decode(include_bytes!("fixtures/cluster_shards.resp3"));
    let Frame::Array(shards) = &reply else {
        panic!("{reply:?}")
    };
    assert!(matches!(shards[0], Frame::Map(_)), "RESP3 shards are maps");
    assert_initial_cluster(
        &SlotMap::from_cluster_shards(&reply, QUERIED, Transport::Plain).unwrap(),
    );
}

#[test]
fn slots_and_shards_agree() {
    for (slots, shards) in [
        (
            &include_bytes!("fixtures/cluster_slots.resp2")[..],
            &include_bytes!("fixtures/cluster_shards.resp3")[..],
        ),
        (
            include_bytes!("fixtures/cluster_slots_hostnames.resp3"),
            include_bytes!("fixtures/cluster_shards_hostnames.resp2"),
        ),
    ] {
        let a = SlotMap::from_cluster_slots(&decode(slots), QUERIED).unwrap();
        let b = SlotMap::from_cluster_shards(&decode(shards), QUERIED, Transport::Plain).unwrap();
        assert_eq!(a, b);
    }
}

#[test]
fn replicas_that_are_not_online_are_left_out() {
    let reply = decode(include_bytes!(
        "fixtures/cluster_shards_replicas_loading.resp3"
    ));
    let map = SlotMap::from_cluster_shards(&reply, QUERIED, Transport::Plain).unwrap();
    assert_eq!(
        map.shards(),
        [
            shard("127.0.0.1:30101", ID_1, &[]),
            shard("127.0.0.1:30102", ID_2, &["127.0.0.1:30104"]),
            shard("127.0.0.1:30103", ID_3, &[]),
        ]
    );
    assert!(map.is_complete());
}

fn assert_hostname_cluster(map: &SlotMap, ip: &str) {
    let addr = |port: u16| format!("{ip}:{port}");
    assert_eq!(
        map.shards(),
        [
            shard(&addr(30101), ID_1, &[&addr(30106)]),
            shard(&addr(30102), ID_2, &[&addr(30104)]),
            shard("node3.example:30103", ID_3, &[&addr(30105)]),
        ]
    );
    assert!(map.is_complete());
    // Slots 0-99 were resharded to 30102, which now owns two ranges.
    for (n, want) in [
        (0, 1),
        (99, 1),
        (100, 0),
        (5460, 0),
        (5461, 1),
        (10922, 1),
        (10923, 2),
        (16383, 2),
    ] {
        assert_eq!(map.shard_for(slot(n)), Some(want), "slot {n}");
    }
}

#[test]
fn hostnames_and_unknown_endpoints() {
    for bytes in [
        &include_bytes!("fixtures/cluster_slots_hostnames.resp2")[..],
        include_bytes!("fixtures/cluster_slots_hostnames.resp3"),
    ] {
        let reply = decode(bytes);
        assert_hostname_cluster(
            &SlotMap::from_cluster_slots(&reply, QUERIED).unwrap(),
            "127.0.0.1",
        );
        // A `?` endpoint means "no hostname": the node's `ip` is used, not the queried host.
        assert_hostname_cluster(
            &SlotMap::from_cluster_slots(&reply, "10.9.9.9:30101").unwrap(),
            "127.0.0.1",
        );
    }
    for bytes in [
        &include_bytes!("fixtures/cluster_shards_hostnames.resp2")[..],
        include_bytes!("fixtures/cluster_shards_hostnames.resp3"),
    ] {
        let reply = decode(bytes);
        assert_hostname_cluster(
            &SlotMap::from_cluster_shards(&reply, QUERIED, Transport::Plain).unwrap(),
            "127.0.0.1",
        );
        assert_hostname_cluster(
            &SlotMap::from_cluster_shards(&reply, "10.9.9.9:30101", Transport::Plain).unwrap(),
            "127.0.0.1",
        );
    }
}

#[test]
fn with_moved_on_a_real_map() {
    let map = SlotMap::from_cluster_slots(
        &decode(include_bytes!("fixtures/cluster_slots.resp2")),
        QUERIED,
    )
    .unwrap();
    let moved = map.with_moved(slot(0), "127.0.0.1:30102");
    assert_eq!(owner(&moved, 0), Some("127.0.0.1:30102"));
    assert_eq!(owner(&moved, 1), Some("127.0.0.1:30101"));
    assert_eq!(moved.shards(), map.shards());
    // The original is unchanged.
    assert_eq!(owner(&map, 0), Some("127.0.0.1:30101"));
}

/// A replica the cluster knows no address for (`:0@0 slave,fail,noaddr` in CLUSTER NODES;
/// CLUSTER SHARDS gives it no port) is left out; the rest of the map is built.
#[test]
fn a_replica_without_an_address_is_left_out() {
    let queried = "127.0.0.1:33000";
    let expected = [
        Shard {
            master: "127.0.0.1:33000".to_string(),
            master_id: Some("4ca4349f41f16fc188577621b22300dd7e0f7eba".to_string()),
            replicas: vec![],
        },
        Shard {
            master: "127.0.0.1:33001".to_string(),
            master_id: Some("bbba8bfa211dbd43c3d1eb9f8a736474abb7266b".to_string()),
            replicas: vec!["127.0.0.1:33005".to_string()],
        },
        Shard {
            master: "127.0.0.1:33002".to_string(),
            master_id: Some("9150a91bb9b12c40402a291174dfb16a89743a50".to_string()),
            replicas: vec!["127.0.0.1:33003".to_string()],
        },
    ];
    let slots = SlotMap::from_cluster_slots(
        &decode(include_bytes!("fixtures/cluster_slots_noaddr.resp3")),
        queried,
    )
    .unwrap();
    for shards in [
        &include_bytes!("fixtures/cluster_shards_noaddr.resp2")[..],
        &include_bytes!("fixtures/cluster_shards_noaddr.resp3")[..],
    ] {
        let map = SlotMap::from_cluster_shards(&decode(shards), queried, Transport::Plain).unwrap();
        assert_eq!(map.shards(), expected);
        assert!(map.is_complete());
        assert_eq!(owner(&map, 3828), Some("127.0.0.1:33001"));
        assert_eq!(owner(&map, 15495), Some("127.0.0.1:33000"));
        assert_eq!(map, slots);
    }
}

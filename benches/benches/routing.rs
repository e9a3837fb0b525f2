//! Criterion benches for the routing crate: hash slots, command lookup and key extraction,
//! the three steps run once per request.
//!
//! `cargo bench -p slotway-benches --bench routing`

// `criterion_group!` defines an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use protocol::Request;
use routing::keys::for_each_key;
use routing::{lookup, Slot};

fn slot_for_key(c: &mut Criterion) {
    let mut group = c.benchmark_group("slot_for_key");
    let long = vec![b'k'; 100];
    for (name, key) in [
        ("short", &b"user:1000"[..]),
        ("tagged", b"{user1000}.followers"),
        ("100_bytes", &long),
    ] {
        group.bench_function(name, |b| b.iter(|| Slot::for_key(black_box(key))));
    }
    group.finish();
}

fn command_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("lookup");
    for (name, command) in [
        ("get", &b"get"[..]),
        ("GET", b"GET"),
        ("zrangebyscore", b"zrangebyscore"),
        ("unknown", b"notacommand"),
    ] {
        group.bench_function(name, |b| b.iter(|| lookup(black_box(command), None)));
    }
    group.bench_function("config_get", |b| {
        b.iter(|| lookup(black_box(b"CONFIG"), Some(black_box(b"GET"))))
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("for_each_key");
    let mut args = vec!["MSET".to_string()];
    for i in 0..10 {
        args.push(format!("key:{i}"));
        args.push(format!("value:{i}"));
    }
    let mset = Request::from_args(&args);
    let spec = lookup(b"mset", None).expect("mset in table");
    group.bench_function("mset_10_keys", |b| {
        b.iter(|| {
            let mut sum = 0;
            for_each_key(spec, black_box(&mset), |i| sum += i).expect("keys");
            sum
        })
    });
    // The whole per-request path: lookup, keys, slots.
    group.bench_function("mset_10_keys_route", |b| {
        b.iter(|| {
            let req = black_box(&mset);
            let spec = lookup(req.name(), req.arg(1)).expect("mset in table");
            let mut slots = 0u32;
            for_each_key(spec, req, |i| {
                slots ^= u32::from(Slot::for_key(req.arg(i).unwrap_or_default()).get())
            })
            .expect("keys");
            slots
        })
    });
    group.finish();
}

criterion_group!(benches, slot_for_key, command_lookup, keys);
criterion_main!(benches);

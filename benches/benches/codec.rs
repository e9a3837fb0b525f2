//! Criterion benches for the RESP codec: request decoding (the proxy's per-command hot path),
//! reply scanning (run on every backend reply), frame decoding and encoding.
//!
//! Run: `cargo bench -p slotway-benches --bench codec`.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::{
    decode, decode_request, encode, encode_bulk, encode_integer, encode_simple, Frame, Limits,
    Request, Scanner, Version,
};

fn get() -> Vec<u8> {
    Request::from_args(["GET", "user:1000"]).raw().to_vec()
}

fn set_100() -> Vec<u8> {
    Request::from_args([&b"SET"[..], b"user:1000", &[b'v'; 100]])
        .raw()
        .to_vec()
}

/// 16 commands as one read: alternating GET and SET with a 100-byte value.
fn pipeline_16() -> Vec<u8> {
    let mut wire = Vec::new();
    for i in 0..8 {
        wire.extend_from_slice(Request::from_args(["GET", &format!("key:{i}")]).raw());
        wire.extend_from_slice(
            Request::from_args([&b"SET"[..], format!("key:{i}").as_bytes(), &[b'v'; 100]]).raw(),
        );
    }
    wire
}

fn array_10() -> Vec<u8> {
    let mut wire = b"*10\r\n".to_vec();
    for i in 0..10 {
        wire.extend_from_slice(format!("$7\r\nvalue:{i}\r\n").as_bytes());
    }
    wire
}

fn bulk_100() -> Vec<u8> {
    let mut wire = BytesMut::new();
    encode_bulk(&[b'v'; 100], &mut wire);
    wire.to_vec()
}

/// Appends `wire` to a long-lived read buffer and decodes every request in it, as a session
/// does after each read (the buffer's space is reclaimed once the requests are dropped).
fn decode_all(buf: &mut BytesMut, wire: &[u8], limits: &Limits) -> usize {
    buf.extend_from_slice(wire);
    let mut n = 0;
    while let Ok(Some(request)) = decode_request(buf, limits) {
        n += black_box(request).len();
    }
    n
}

fn bench_decode_request(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("decode_request");
    for (name, wire, count) in [
        ("get", get(), 1),
        ("set_100b", set_100(), 1),
        ("inline_ping", b"PING\r\n".to_vec(), 1),
        ("pipeline_16", pipeline_16(), 16),
    ] {
        group.throughput(Throughput::Elements(count));
        group.bench_function(name, |b| {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            b.iter(|| decode_all(&mut buf, black_box(&wire), &limits))
        });
    }
    group.finish();
}

fn bench_scan(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("scan");
    for (name, wire) in [
        ("ok", b"+OK\r\n".to_vec()),
        ("bulk_100b", bulk_100()),
        ("array_10", array_10()),
        ("integer", b":1234567\r\n".to_vec()),
    ] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            let mut scanner = Scanner::new();
            b.iter(|| scanner.scan(black_box(&wire), &limits))
        });
    }
    // A 1 MiB bulk reply arriving in 64 KiB reads: one header parse per read.
    let mut big = BytesMut::new();
    encode_bulk(&vec![b'x'; 1 << 20], &mut big);
    group.throughput(Throughput::Elements(1));
    group.bench_function("bulk_1mib_in_64kib_reads", |b| {
        let mut scanner = Scanner::new();
        b.iter(|| {
            let mut end = 0;
            loop {
                end = (end + 65536).min(big.len());
                if let Ok(Some(n)) = scanner.scan(black_box(&big[..end]), &limits) {
                    return n;
                }
            }
        })
    });
    group.finish();
}

fn bench_decode(c: &mut Criterion) {
    let limits = Limits::default();
    let mut group = c.benchmark_group("decode");
    for (name, wire) in [("ok", b"+OK\r\n".to_vec()), ("array_10", array_10())] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            let mut buf = BytesMut::with_capacity(16 * 1024);
            b.iter(|| {
                buf.extend_from_slice(black_box(&wire));
                decode(&mut buf, &limits)
            })
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let value = Bytes::from(vec![b'v'; 100]);
    let array = Frame::Array(
        (0..10)
            .map(|i| Frame::Bulk(Bytes::from(format!("value:{i}"))))
            .collect(),
    );
    let map = Frame::Map(
        (0..5)
            .map(|i| {
                (
                    Frame::Bulk(Bytes::from(format!("field:{i}"))),
                    Frame::double(f64::from(i) + 0.5),
                )
            })
            .collect(),
    );
    let mut dst = BytesMut::with_capacity(64 * 1024);
    let mut bench = |name: &str, f: &mut dyn FnMut(&mut BytesMut)| {
        group.bench_function(name, |b| {
            b.iter(|| {
                dst.clear();
                f(&mut dst);
                dst.len()
            })
        });
    };
    bench("simple_ok", &mut |dst| encode_simple(black_box(b"OK"), dst));
    bench("integer", &mut |dst| {
        encode_integer(black_box(1234567), dst)
    });
    bench("bulk_100b", &mut |dst| encode_bulk(black_box(&value), dst));
    bench("frame_array_10", &mut |dst| {
        encode(black_box(&array), Version::Resp3, dst)
    });
    bench("frame_map_5_doubles_resp2", &mut |dst| {
        encode(black_box(&map), Version::Resp2, dst)
    });
    bench("request_from_args_set", &mut |dst| {
        let request = Request::from_args([&b"SET"[..], b"key", black_box(&value)]);
        dst.extend_from_slice(request.raw());
    });
    group.finish();
}

criterion_group!(
    benches,
    bench_decode_request,
    bench_scan,
    bench_decode,
    bench_encode
);
criterion_main!(benches);

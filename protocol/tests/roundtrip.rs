//! Property tests: frames and requests survive encode → fragmented reads → decode, and the
//! decoders agree with each other on every chunking.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;
use protocol::{
    decode, decode_request, encode, frame_len, Frame, Limits, Request, RequestDecoder, Scanner,
    Version,
};

/// Text for simple strings and errors: no CR or LF, which the encoder would replace.
fn line_text() -> impl Strategy<Value = Bytes> {
    vec(
        any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'),
        0..24,
    )
    .prop_map(Bytes::from)
}

fn blob() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => vec(any::<u8>(), 0..32),
        1 => vec(any::<u8>(), 0..2000),
    ]
    .prop_map(Bytes::from)
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>().prop_filter("NaN != NaN", |d| !d.is_nan()),
        (-1e6..1e6f64),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
    ]
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        blob().prop_map(Frame::Bulk),
        Just(Frame::Null),
        double().prop_map(Frame::double),
        any::<bool>().prop_map(Frame::Boolean),
        "-?[0-9]{1,40}".prop_map(|s| Frame::BigNumber(Bytes::from(s))),
        (any::<[u8; 3]>(), blob()).prop_map(|(format, text)| Frame::Verbatim { format, text }),
    ]
}

/// Any RESP3 frame. `NullArray` is left out: RESP3 has a single null, so it reads back as
/// `Null`.
fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 64, 8, |inner| {
        let pairs = vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Frame::Array),
            vec(inner.clone(), 0..8).prop_map(Frame::Set),
            vec(inner.clone(), 0..8).prop_map(Frame::Push),
            pairs.clone().prop_map(Frame::Map),
            (pairs, inner).prop_map(|(attrs, frame)| Frame::Attribute {
                attrs,
                frame: Box::new(frame),
            }),
        ]
    })
}

/// Splits `wire` into chunks whose sizes cycle through `sizes`.
fn chunks<'a>(wire: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = wire;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        vec(1..8usize, 1..16),
        vec(1..200usize, 1..16),
        vec(1..5000usize, 1..4),
    ]
}

proptest! {
    #[test]
    fn frames_survive_fragmented_reads(frames in vec(frame(), 1..6), sizes in chunk_sizes()) {
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        let mut lens = Vec::new();
        for f in &frames {
            let before = wire.len();
            encode(f, Version::Resp3, &mut wire);
            lens.push(wire.len() - before);
            let one = &wire[before..];
            prop_assert_eq!(frame_len(one, &limits), Ok(Some(one.len())));
        }

        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut scanned_buf = Vec::new();
        let mut start = 0;
        let mut scanner = Scanner::new();
        let mut scanned = Vec::new();
        for chunk in chunks(&wire, &sizes) {
            buf.extend_from_slice(chunk);
            while let Some(f) = decode(&mut buf, &limits).unwrap() {
                decoded.push(f);
            }
            scanned_buf.extend_from_slice(chunk);
            while let Some(n) = scanner.scan(&scanned_buf[start..], &limits).unwrap() {
                scanned.push(n);
                start += n;
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, frames);
        prop_assert_eq!(scanned, lens);
    }

    #[test]
    fn frames_downgrade_to_valid_resp2(frames in vec(frame(), 1..4)) {
        // A RESP2 encoding holds only RESP2 types, one frame per input frame.
        let limits = Limits::default();
        let mut wire = BytesMut::new();
        for f in &frames {
            encode(f, Version::Resp2, &mut wire);
        }
        for _ in &frames {
            let f = decode(&mut wire, &limits).unwrap().unwrap();
            prop_assert!(is_resp2(&f), "{:?}", f);
        }
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn requests_survive_fragmented_reads(
        requests in vec(vec(vec(any::<u8>(), 0..40), 1..12), 1..8),
        empties in vec(0..3usize, 8),
        sizes in chunk_sizes(),
    ) {
        let limits = Limits::default();
        let mut wire = Vec::new();
        for (i, args) in requests.iter().enumerate() {
            // Sprinkle empty requests, which must be skipped.
            match empties[i % empties.len()] {
                1 => wire.extend_from_slice(b"*0\r\n"),
                2 => wire.extend_from_slice(b"\r\n*-1\r\n"),
                _ => {}
            }
            let request = Request::from_args(args);
            prop_assert_eq!(request.len(), args.len());
            wire.extend_from_slice(request.raw());
        }

        let mut stateless = BytesMut::new();
        let mut resumable = BytesMut::new();
        let mut decoder = RequestDecoder::new();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for chunk in chunks(&wire, &sizes) {
            stateless.extend_from_slice(chunk);
            while let Some(r) = decode_request(&mut stateless, &limits).unwrap() {
                a.push(r);
            }
            resumable.extend_from_slice(chunk);
            while let Some(r) = decoder.decode(&mut resumable, &limits).unwrap() {
                b.push(r);
            }
        }
        prop_assert!(stateless.is_empty() && resumable.is_empty());
        let args = |rs: &[Request]| -> Vec<Vec<Vec<u8>>> {
            rs.iter().map(|r| r.args().map(<[u8]>::to_vec).collect()).collect()
        };
        prop_assert_eq!(&args(&a), &requests);
        prop_assert_eq!(&args(&b), &requests);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn inline_requests_survive_quoting(
        args in vec(vec(any::<u8>(), 0..20), 1..8),
        crlf in any::<bool>(),
        sizes in chunk_sizes(),
    ) {
        // Quote every argument in double quotes, escaping all but plain printable bytes.
        let mut line = Vec::new();
        for arg in &args {
            line.push(b'"');
            for &byte in arg {
                match byte {
                    b'"' | b'\\' => line.extend_from_slice(&[b'\\', byte]),
                    b' '..=b'~' => line.push(byte),
                    _ => line.extend_from_slice(format!("\\x{byte:02x}").as_bytes()),
                }
            }
            line.extend_from_slice(b"\" ");
        }
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        let mut buf = BytesMut::new();
        let mut got = None;
        for chunk in chunks(&line, &sizes) {
            prop_assert!(got.is_none());
            buf.extend_from_slice(chunk);
            got = decode_request(&mut buf, &Limits::default()).unwrap();
        }
        let got = got.unwrap();
        prop_assert_eq!(&got.args().map(<[u8]>::to_vec).collect::<Vec<_>>(), &args);
        prop_assert_eq!(got, Request::from_args(&args));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn plain_inline_requests(words in vec("[a-zA-Z0-9_:{}.-]{1,12}", 1..10)) {
        let line = format!("{}\r\n", words.join("  "));
        let mut buf = BytesMut::from(line.as_bytes());
        let request = decode_request(&mut buf, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(request, Request::from_args(&words));
    }
}

fn is_resp2(frame: &Frame) -> bool {
    match frame {
        Frame::Simple(_)
        | Frame::Error(_)
        | Frame::Integer(_)
        | Frame::Bulk(_)
        | Frame::Null
        | Frame::NullArray => true,
        Frame::Array(items) => items.iter().all(is_resp2),
        _ => false,
    }
}

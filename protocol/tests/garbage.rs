//! Property tests: arbitrary bytes never make a decoder panic, and the stateless and
//! resumable decoders reach the same verdict however the bytes are split.

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use protocol::{decode, decode_request, frame_len, Limits, RequestDecoder, Scanner};

/// Bytes biased towards RESP syntax so that the decoders get past the first byte.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        4 => prop::sample::select(vec![
            &b"*"[..], b"$", b"+", b"-", b":", b"_", b",", b"#", b"(", b"=", b"%", b"~", b">",
            b"|", b"!", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"0", b"1", b"2", b"3", b"-1",
            b"10", b"txt:", b"t", b"f", b"inf", b"nan", b"1.5", b" ", b"\"", b"'", b"\\", b"\\x",
            b"4294967295", b"99999999999", b"GET", b"\0",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => vec(any::<u8>(), 0..4),
    ];
    vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (0..40usize, 0..6usize, 0..4usize, 0..40usize).prop_map(|(bulk, array, depth, inline)| Limits {
        max_bulk_len: bulk,
        max_array_len: array,
        max_depth: depth,
        max_inline_len: inline,
    })
}

fn limits() -> impl Strategy<Value = Limits> {
    prop_oneof![Just(Limits::default()), small_limits()]
}

/// Runs every decoder over `input` and checks that they agree.
fn check(input: &[u8], limits: &Limits, step: usize) -> Result<(), TestCaseError> {
    // Frames: `decode`, `frame_len` and a `Scanner` fed `step` bytes at a time.
    let whole = frame_len(input, limits);
    let mut buf = BytesMut::from(input);
    match decode(&mut buf, limits) {
        Ok(Some(_)) => {
            let Ok(Some(n)) = whole else {
                return Err(TestCaseError::fail(format!(
                    "decode ok, frame_len {whole:?}"
                )));
            };
            prop_assert_eq!(buf.len(), input.len() - n);
        }
        Ok(None) => {
            prop_assert_eq!(&whole, &Ok(None));
            prop_assert_eq!(buf.len(), input.len());
        }
        Err(e) => prop_assert_eq!(&whole, &Err(e)),
    }
    let mut scanner = Scanner::new();
    let mut incremental = Ok(None);
    let mut end = 0;
    while end < input.len() {
        end = (end + step).min(input.len());
        incremental = scanner.scan(&input[..end], limits);
        if !matches!(incremental, Ok(None)) {
            break;
        }
    }
    prop_assert_eq!(incremental, whole);

    // Requests: stateless on the whole input, resumable fed `step` bytes at a time.
    let mut buf = BytesMut::from(input);
    let mut stateless = Vec::new();
    let stateless_end = loop {
        match decode_request(&mut buf, limits) {
            Ok(Some(r)) => {
                prop_assert!(r.arg(0).is_some());
                stateless.push(r);
            }
            other => break other.map(|_| ()),
        }
    };
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut resumable = Vec::new();
    let mut resumable_end = Ok(());
    'feed: for chunk in input.chunks(step.max(1)) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf, limits) {
                Ok(Some(r)) => resumable.push(r),
                Ok(None) => break,
                Err(e) => {
                    resumable_end = Err(e);
                    break 'feed;
                }
            }
        }
    }
    prop_assert_eq!(stateless, resumable);
    prop_assert_eq!(stateless_end, resumable_end);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(input in vec(any::<u8>(), 0..300), limits in limits(), step in 1..20usize) {
        check(&input, &limits, step)?;
    }

    #[test]
    fn resp_like_bytes_never_panic(input in resp_ish(), limits in limits(), step in 1..20usize) {
        check(&input, &limits, step)?;
    }
}

//! Fuzz target `parse`: runs every decoder of `slotway-protocol` over the input and checks
//! that none panics and that they agree.
//!
//! The first byte picks the limits (default, or tiny ones that make every limit reachable)
//! and a chunk size; the rest is the stream. Checked:
//! - `decode`, `frame_len` and a `Scanner` fed chunk by chunk reach the same verdict, and a
//!   decoded frame re-encodes (RESP3) to something `frame_len` accepts whole;
//! - `decode_request` on the whole stream and a `RequestDecoder` fed chunk by chunk return
//!   the same requests and the same error, and every request's `raw` decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::{
    decode, decode_request, encode, frame_len, Limits, RequestDecoder, Scanner, Version,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let limits = if control & 1 == 0 {
        Limits::default()
    } else {
        Limits {
            max_bulk_len: usize::from(control >> 1 & 0x1f),
            max_array_len: usize::from(control >> 2 & 0x7),
            max_depth: usize::from(control >> 5),
            max_inline_len: usize::from(control >> 1),
        }
    };
    let step = usize::from(control >> 4) + 1;
    frames(input, &limits, step);
    requests(input, &limits, step);
});

fn frames(input: &[u8], limits: &Limits, step: usize) {
    let whole = frame_len(input, limits);
    let mut buf = BytesMut::from(input);
    match decode(&mut buf, limits) {
        Ok(Some(frame)) => {
            let Ok(Some(n)) = whole else {
                panic!("decode found a frame, frame_len said {whole:?}");
            };
            assert_eq!(buf.len(), input.len() - n);
            let mut again = BytesMut::new();
            encode(&frame, Version::Resp3, &mut again);
            let relaxed = Limits {
                max_depth: usize::MAX,
                ..Limits::default()
            };
            assert_eq!(frame_len(&again, &relaxed), Ok(Some(again.len())));
            encode(&frame, Version::Resp2, &mut again);
        }
        Ok(None) => {
            assert_eq!(whole, Ok(None));
            assert_eq!(buf.len(), input.len());
        }
        Err(e) => assert_eq!(whole, Err(e)),
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
    assert_eq!(incremental, whole);
}

fn requests(input: &[u8], limits: &Limits, step: usize) {
    let mut buf = BytesMut::from(input);
    let mut whole = Vec::new();
    let whole_end = loop {
        match decode_request(&mut buf, limits) {
            Ok(Some(request)) => {
                assert!(request.arg(0).is_some());
                let mut raw = BytesMut::from(&request.raw()[..]);
                let relaxed = Limits::default();
                let again = decode_request(&mut raw, &relaxed).expect("raw is valid multibulk");
                assert_eq!(again.as_ref(), Some(&request));
                assert!(raw.is_empty());
                whole.push(request);
            }
            other => break other.map(|_| ()),
        }
    };
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut pieces = Vec::new();
    let mut pieces_end = Ok(());
    'feed: for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf, limits) {
                Ok(Some(request)) => pieces.push(request),
                Ok(None) => break,
                Err(e) => {
                    pieces_end = Err(e);
                    break 'feed;
                }
            }
        }
    }
    assert_eq!(whole, pieces);
    assert_eq!(whole_end, pieces_end);
}

//! Tests for `crate::decode`: one table of cases per RESP type, errors, limits and the
//! resumable [`Scanner`].

use bytes::{Bytes, BytesMut};

use super::{decode, frame_len, Scanner};
use crate::{Frame, Limits, ProtocolError};

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn bulk(s: &'static [u8]) -> Frame {
    Frame::Bulk(b(s))
}

/// Decodes `input`, checks the frame, that all input was consumed, that `frame_len` and a
/// byte-at-a-time `Scanner` agree on its length, and that every strict prefix is incomplete.
#[track_caller]
fn check(input: &[u8], expected: Frame) {
    let limits = Limits::default();
    let mut buf = BytesMut::from(input);
    let frame = decode(&mut buf, &limits).unwrap();
    assert_eq!(
        frame,
        Some(expected),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    assert!(buf.is_empty(), "left {:?}", buf);
    assert_eq!(frame_len(input, &limits), Ok(Some(input.len())));
    let mut scanner = Scanner::new();
    for end in 0..input.len() {
        let prefix = &input[..end];
        assert_eq!(scanner.scan(prefix, &limits), Ok(None), "prefix {end}");
        assert_eq!(frame_len(prefix, &limits), Ok(None), "prefix {end}");
        let mut buf = BytesMut::from(prefix);
        assert_eq!(decode(&mut buf, &limits), Ok(None));
        assert_eq!(buf.len(), end, "a partial frame must not be consumed");
    }
    assert_eq!(scanner.scan(input, &limits), Ok(Some(input.len())));
    assert!(idle(&scanner));
}

/// True if the scanner holds no progress.
fn idle(scanner: &Scanner) -> bool {
    scanner.pos == 0 && scanner.line_from == 0 && scanner.stack.is_empty()
}

#[track_caller]
fn check_err(input: &[u8], expected: ProtocolError) {
    check_err_with(input, &Limits::default(), expected);
}

#[track_caller]
fn check_err_with(input: &[u8], limits: &Limits, expected: ProtocolError) {
    let mut buf = BytesMut::from(input);
    assert_eq!(
        decode(&mut buf, limits),
        Err(expected.clone()),
        "{:?}",
        String::from_utf8_lossy(input)
    );
    assert_eq!(frame_len(input, limits), Err(expected.clone()));
    let mut scanner = Scanner::new();
    let mut result = Ok(None);
    for end in 1..=input.len() {
        result = scanner.scan(&input[..end], limits);
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(expected));
}

#[test]
fn simple_strings() {
    check(b"+OK\r\n", Frame::Simple(b(b"OK")));
    check(b"+\r\n", Frame::Simple(b(b"")));
    check(b"+hello world\r\n", Frame::Simple(b(b"hello world")));
    check(b"+a\rb\r\n", Frame::Simple(b(b"a\rb")));
}

#[test]
fn errors() {
    check(b"-ERR wrong\r\n", Frame::Error(b(b"ERR wrong")));
    check(
        b"-MOVED 3999 127.0.0.1:6381\r\n",
        Frame::Error(b(b"MOVED 3999 127.0.0.1:6381")),
    );
    check(b"!8\r\nERR a\r\nb\r\n", Frame::Error(b(b"ERR a\r\nb")));
    check(b"!0\r\n\r\n", Frame::Error(b(b"")));
}

#[test]
fn integers() {
    check(b":0\r\n", Frame::Integer(0));
    check(b":42\r\n", Frame::Integer(42));
    check(b":-7\r\n", Frame::Integer(-7));
    check(b":9223372036854775807\r\n", Frame::Integer(i64::MAX));
    check(b":-9223372036854775808\r\n", Frame::Integer(i64::MIN));
    for bad in [
        &b":\r\n"[..],
        b":x\r\n",
        b":1.5\r\n",
        b":+1\r\n",
        b":01\r\n",
        b":-0\r\n",
        b":-\r\n",
        b":9223372036854775808\r\n",
        b":-9223372036854775809\r\n",
    ] {
        check_err(bad, ProtocolError::BadValue("integer"));
    }
}

#[test]
fn bulk_strings() {
    check(b"$3\r\nfoo\r\n", bulk(b"foo"));
    check(b"$0\r\n\r\n", bulk(b""));
    check(b"$4\r\na\r\nb\r\n", bulk(b"a\r\nb"));
    check(b"$-1\r\n", Frame::Null);
    check_err(b"$-2\r\n", ProtocolError::BadBulkLength);
    check_err(b"$x\r\n", ProtocolError::BadBulkLength);
    check_err(b"$\r\n", ProtocolError::BadBulkLength);
    check_err(b"$03\r\nfoo\r\n", ProtocolError::BadBulkLength);
    check_err(b"$3\rXfoo\r\n", ProtocolError::MissingCrlf);
    check_err(b"$3\r\nfooXY", ProtocolError::MissingCrlf);
    check_err(b"$3\r\nfoo\rX", ProtocolError::MissingCrlf);
}

#[test]
fn arrays() {
    check(b"*0\r\n", Frame::Array(vec![]));
    check(b"*-1\r\n", Frame::NullArray);
    check(
        b"*2\r\n$3\r\nfoo\r\n:1\r\n",
        Frame::Array(vec![bulk(b"foo"), Frame::Integer(1)]),
    );
    check(
        b"*2\r\n*1\r\n+a\r\n*0\r\n",
        Frame::Array(vec![
            Frame::Array(vec![Frame::Simple(b(b"a"))]),
            Frame::Array(vec![]),
        ]),
    );
    check(
        b"*3\r\n$-1\r\n*-1\r\n_\r\n",
        Frame::Array(vec![Frame::Null, Frame::NullArray, Frame::Null]),
    );
    check_err(b"*-2\r\n", ProtocolError::BadMultibulkLength);
    check_err(b"*a\r\n", ProtocolError::BadMultibulkLength);
    check_err(b"*1\r\n?\r\n", ProtocolError::BadPrefix(b'?'));
}

#[test]
fn nulls() {
    check(b"_\r\n", Frame::Null);
    check_err(b"_x\r\n", ProtocolError::BadValue("null"));
}

#[test]
fn doubles() {
    // Kept as written, so they go out unchanged: GEOPOS prints more digits than `%.17g`.
    for text in [
        &b"1.5"[..],
        b"-0.25",
        b"3",
        b"1e+300",
        b"1.5e-7",
        b"inf",
        b"-inf",
        b"nan",
        b"85.0511287799999991",
    ] {
        let wire = [b",", text, b"\r\n"].concat();
        check(&wire, Frame::Double(Bytes::copy_from_slice(text)));
    }
    assert_eq!(
        Frame::double(1.5),
        Frame::Double(Bytes::from_static(b"1.5"))
    );
    assert_eq!(Frame::double(1.5).as_f64(), Some(1.5));
    check_err(b",\r\n", ProtocolError::BadValue("double"));
    check_err(b",1.5x\r\n", ProtocolError::BadValue("double"));
    check_err(b",\xff\r\n", ProtocolError::BadValue("double"));
}

#[test]
fn booleans() {
    check(b"#t\r\n", Frame::Boolean(true));
    check(b"#f\r\n", Frame::Boolean(false));
    check_err(b"#x\r\n", ProtocolError::BadValue("boolean"));
    check_err(b"#\r\n", ProtocolError::BadValue("boolean"));
    check_err(b"#tt\r\n", ProtocolError::BadValue("boolean"));
}

#[test]
fn big_numbers() {
    check(
        b"(3492890328409238509324850943850943825024385\r\n",
        Frame::BigNumber(b(b"3492890328409238509324850943850943825024385")),
    );
    check(b"(-12\r\n", Frame::BigNumber(b(b"-12")));
    check_err(b"(\r\n", ProtocolError::BadValue("big number"));
    check_err(b"(-\r\n", ProtocolError::BadValue("big number"));
    check_err(b"(1a\r\n", ProtocolError::BadValue("big number"));
}

#[test]
fn verbatim_strings() {
    check(
        b"=15\r\ntxt:Some string\r\n",
        Frame::Verbatim {
            format: *b"txt",
            text: b(b"Some string"),
        },
    );
    check(
        b"=4\r\nmkd:\r\n",
        Frame::Verbatim {
            format: *b"mkd",
            text: b(b""),
        },
    );
    check_err(b"=3\r\ntxt\r\n", ProtocolError::BadValue("verbatim string"));
    check_err(
        b"=4\r\ntxt.\r\n",
        ProtocolError::BadValue("verbatim string"),
    );
    // A short payload must not borrow the ':' from the next frame.
    check_err(
        b"=1\r\na\r\n:1\r\n",
        ProtocolError::BadValue("verbatim string"),
    );
    check_err(b"=-1\r\n", ProtocolError::BadBulkLength);
}

#[test]
fn maps() {
    check(b"%0\r\n", Frame::Map(vec![]));
    check(
        b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
        Frame::Map(vec![
            (Frame::Simple(b(b"first")), Frame::Integer(1)),
            (Frame::Simple(b(b"second")), Frame::Integer(2)),
        ]),
    );
    check(
        b"%1\r\n$1\r\nk\r\n%1\r\n$1\r\na\r\n#t\r\n",
        Frame::Map(vec![(
            bulk(b"k"),
            Frame::Map(vec![(bulk(b"a"), Frame::Boolean(true))]),
        )]),
    );
    check_err(b"%-1\r\n", ProtocolError::BadMultibulkLength);
}

#[test]
fn sets_and_pushes() {
    check(
        b"~3\r\n+a\r\n+b\r\n:3\r\n",
        Frame::Set(vec![
            Frame::Simple(b(b"a")),
            Frame::Simple(b(b"b")),
            Frame::Integer(3),
        ]),
    );
    check(b"~0\r\n", Frame::Set(vec![]));
    check(
        b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n",
        Frame::Push(vec![bulk(b"message"), bulk(b"ch"), bulk(b"hi")]),
    );
    check_err(b"~-1\r\n", ProtocolError::BadMultibulkLength);
    check_err(b">-1\r\n", ProtocolError::BadMultibulkLength);
}

#[test]
fn attributes() {
    check(
        b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.1923\r\n*1\r\n:2039123\r\n",
        Frame::Attribute {
            attrs: vec![(
                Frame::Simple(b(b"key-popularity")),
                Frame::Map(vec![(bulk(b"a"), Frame::double(0.1923))]),
            )],
            frame: Box::new(Frame::Array(vec![Frame::Integer(2039123)])),
        },
    );
    check(
        b"|0\r\n+OK\r\n",
        Frame::Attribute {
            attrs: vec![],
            frame: Box::new(Frame::Simple(b(b"OK"))),
        },
    );
    // An attribute inside an array describes the element after it.
    check(
        b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n",
        Frame::Array(vec![
            Frame::Attribute {
                attrs: vec![(Frame::Simple(b(b"a")), Frame::Simple(b(b"b")))],
                frame: Box::new(Frame::Integer(1)),
            },
            Frame::Integer(2),
        ]),
    );
}

#[test]
fn lines_need_crlf() {
    check_err(b"+OK\n", ProtocolError::MissingCrlf);
    check_err(b"+\n", ProtocolError::MissingCrlf);
    check_err(b":1\n", ProtocolError::MissingCrlf);
    check_err(b"*1\r+OK\r\n", ProtocolError::MissingCrlf);
}

#[test]
fn bad_prefixes() {
    for byte in [b'?', b'G', b' ', b'\r', b'\n', 0, 0xff] {
        check_err(&[byte, b'\r', b'\n'], ProtocolError::BadPrefix(byte));
    }
}

#[test]
fn decode_takes_one_frame_and_shares_the_buffer() {
    let mut buf = BytesMut::from(&b"$3\r\nfoo\r\n+OK\r\n"[..]);
    let limits = Limits::default();
    let Some(Frame::Bulk(foo)) = decode(&mut buf, &limits).unwrap() else {
        panic!("expected a bulk string");
    };
    assert_eq!(&foo[..], b"foo");
    assert_eq!(&buf[..], b"+OK\r\n");
    assert_eq!(
        decode(&mut buf, &limits).unwrap(),
        Some(Frame::Simple(b(b"OK")))
    );
    assert_eq!(decode(&mut buf, &limits).unwrap(), None);
}

#[test]
fn limits_fail_fast() {
    let limits = Limits::default();
    // Only the header has arrived: the error must not wait for (or reserve) the payload.
    check_err(
        b"*4294967295\r\n",
        ProtocolError::ArrayTooLarge {
            limit: limits.max_array_len,
        },
    );
    check_err(
        b"$99999999999\r\n",
        ProtocolError::BulkTooLarge {
            limit: limits.max_bulk_len,
        },
    );
    check_err(
        b"%2000000\r\n",
        ProtocolError::ArrayTooLarge {
            limit: limits.max_array_len,
        },
    );
    check_err(b"$99999999999999999999\r\n", ProtocolError::BadBulkLength);
    check_err(
        b"*99999999999999999999\r\n",
        ProtocolError::BadMultibulkLength,
    );
    // Before the CRLF arrives, the first byte that cannot be a number fails.
    assert_eq!(
        frame_len(b"*12x", &limits),
        Err(ProtocolError::BadMultibulkLength)
    );
    assert_eq!(
        frame_len(b"$000000", &limits),
        Err(ProtocolError::BadBulkLength)
    );
    assert_eq!(
        frame_len(b"$123456789012345678901", &limits),
        Err(ProtocolError::BadBulkLength)
    );
}

#[test]
fn configured_limits() {
    let limits = Limits {
        max_bulk_len: 3,
        max_array_len: 2,
        max_depth: 2,
        ..Limits::default()
    };
    let ok = |input: &[u8]| assert_eq!(frame_len(input, &limits), Ok(Some(input.len())));
    ok(b"$3\r\nfoo\r\n");
    ok(b"*2\r\n*2\r\n:1\r\n:2\r\n:3\r\n");
    ok(b"%1\r\n+a\r\n+b\r\n");
    ok(b"+abc\r\n");
    check_err_with(
        b"$4\r\nfour\r\n",
        &limits,
        ProtocolError::BulkTooLarge { limit: 3 },
    );
    check_err_with(
        b"*3\r\n:1\r\n:2\r\n:3\r\n",
        &limits,
        ProtocolError::ArrayTooLarge { limit: 2 },
    );
    check_err_with(
        b"*1\r\n*1\r\n*1\r\n:1\r\n",
        &limits,
        ProtocolError::TooDeep { limit: 2 },
    );
    check_err_with(
        b"*1\r\n*1\r\n*0\r\n",
        &limits,
        ProtocolError::TooDeep { limit: 2 },
    );
    check_err_with(
        b"|1\r\n+a\r\n+b\r\n*1\r\n*1\r\n:1\r\n",
        &limits,
        ProtocolError::TooDeep { limit: 2 },
    );
    // Lines are held to the bulk limit too, even before their CRLF arrives.
    check_err_with(
        b"+abcd\r\n",
        &limits,
        ProtocolError::BulkTooLarge { limit: 3 },
    );
    assert_eq!(
        frame_len(b"-abcde", &limits),
        Err(ProtocolError::BulkTooLarge { limit: 3 })
    );
    assert_eq!(frame_len(b"-abc\r", &limits), Ok(None));
}

#[test]
fn deep_nesting_is_refused_not_overflowed() {
    let mut input = b"*1\r\n".repeat(100_000);
    input.extend_from_slice(b":1\r\n");
    let limits = Limits::default();
    check_err_with(
        &input[..4 * 40],
        &limits,
        ProtocolError::TooDeep { limit: 32 },
    );
    let unlimited = Limits {
        max_depth: usize::MAX,
        ..limits
    };
    assert_eq!(frame_len(&input, &unlimited), Ok(Some(input.len())));
    let mut buf = BytesMut::from(&input[..]);
    let mut frame = decode(&mut buf, &unlimited).unwrap().unwrap();
    let mut depth = 0;
    while let Frame::Array(mut items) = frame {
        frame = items.pop().unwrap();
        depth += 1;
    }
    assert_eq!(depth, 100_000);
    assert_eq!(frame, Frame::Integer(1));
}

#[test]
fn scanner_resumes_a_large_array() {
    let limits = Limits::default();
    let mut input = b"*100000\r\n".to_vec();
    for i in 0..100_000 {
        input.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    input.extend_from_slice(b"+next\r\n");
    let total = input.len() - 7;
    let mut scanner = Scanner::new();
    let mut end = 0;
    let found = loop {
        end = (end + 997).min(input.len());
        if let Some(len) = scanner.scan(&input[..end], &limits).unwrap() {
            break len;
        }
        assert!(!idle(&scanner) || end < 10);
    };
    assert_eq!(found, total);
    assert_eq!(scanner.scan(&input[total..], &limits), Ok(Some(7)));
}

#[test]
fn scanner_resumes_a_long_line() {
    let limits = Limits::default();
    let mut input = vec![b'+'];
    input.extend_from_slice(&vec![b'x'; 1 << 20]);
    input.extend_from_slice(b"\r\n");
    let mut scanner = Scanner::new();
    for chunk in (0..input.len()).step_by(65536).skip(1) {
        assert_eq!(scanner.scan(&input[..chunk], &limits), Ok(None));
        assert_eq!(scanner.line_from, chunk, "searched up to the end");
    }
    assert_eq!(scanner.scan(&input, &limits), Ok(Some(input.len())));
}

#[test]
fn scanner_resets_after_each_frame_and_error() {
    let limits = Limits::default();
    let mut scanner = Scanner::new();
    assert_eq!(scanner.scan(b"*2\r\n:1\r\n", &limits), Ok(None));
    assert!(!idle(&scanner));
    assert_eq!(
        scanner.scan(b"*2\r\n:1\r\n:2\r\n+OK\r\n", &limits),
        Ok(Some(12))
    );
    assert!(idle(&scanner));
    assert_eq!(scanner.scan(b"+OK\r\n", &limits), Ok(Some(5)));
    assert_eq!(
        scanner.scan(b"*2\r\n?", &limits),
        Err(ProtocolError::BadPrefix(b'?'))
    );
    assert!(idle(&scanner));
    assert_eq!(scanner.scan(b":1\r\n", &limits), Ok(Some(4)));
    // A buffer shorter than what was scanned: start over instead of panicking.
    assert_eq!(scanner.scan(b"*3\r\n:1\r\n", &limits), Ok(None));
    assert_eq!(scanner.scan(b":5\r\n", &limits), Ok(Some(4)));
}

#[test]
fn small_len_agrees_with_header() {
    // Every string of up to five bytes over the characters that matter.
    let alphabet = [b'0', b'1', b'9', b'-', b'\r', b'\n', b'x'];
    let mut checked = 0;
    for len in 0..=5u32 {
        for mut code in 0..alphabet.len().pow(len) {
            let mut input = vec![b'$'];
            for _ in 0..len {
                input.push(alphabet[code % alphabet.len()]);
                code /= alphabet.len();
            }
            if let Some((n, next)) = super::small_len(&input, 1) {
                assert_eq!(
                    super::header(&input, 1),
                    Ok(Some((n as i64, next))),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 100);
}

//! Tests for `crate::request`: multibulk and inline requests, skipping of empty requests,
//! errors and limits.

use bytes::BytesMut;

use super::{decode_request, Request, RequestDecoder};
use crate::{Limits, ProtocolError};

/// Decodes every request in `input` and returns their arguments; asserts nothing is left.
#[track_caller]
fn args_of(input: &[u8]) -> Vec<Vec<String>> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    while let Some(request) = decode_request(&mut buf, &Limits::default()).unwrap() {
        assert!(!request.is_empty());
        out.push(
            request
                .args()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
        );
    }
    assert!(buf.is_empty(), "left over: {buf:?}");
    out
}

#[track_caller]
fn one(input: &[u8]) -> Vec<String> {
    let mut all = args_of(input);
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

#[track_caller]
fn err(input: &[u8]) -> ProtocolError {
    err_with(input, &Limits::default())
}

#[track_caller]
fn err_with(input: &[u8], limits: &Limits) -> ProtocolError {
    let mut buf = BytesMut::from(input);
    loop {
        match decode_request(&mut buf, limits) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error for {:?}", String::from_utf8_lossy(input)),
            Err(e) => return e,
        }
    }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn multibulk_keeps_raw_bytes_zero_copy() {
    let input = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nva\r\nl\r\n*1\r\n$4\r\nPING\r\n";
    let mut buf = BytesMut::from(&input[..]);
    let before = buf.as_ptr();
    let request = decode_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(&request.raw()[..], &input[..33]);
    assert_eq!(request.raw().as_ptr(), before, "raw shares the read buffer");
    assert_eq!(request.len(), 3);
    assert_eq!(request.name(), b"SET");
    assert_eq!(request.arg(1), Some(&b"key"[..]));
    assert_eq!(request.arg(2), Some(&b"va\r\nl"[..]));
    assert_eq!(request.arg(3), None);
    assert_eq!(&request.arg_bytes(2).unwrap()[..], b"va\r\nl");
    assert_eq!(format!("{request:?}"), r#"["SET", "key", "va\r\nl"]"#);
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(
        decode_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap(),
        Request::from_args(["PING"])
    );
}

#[test]
fn multibulk_table() {
    assert_eq!(one(b"*1\r\n$4\r\nPING\r\n"), strs(&["PING"]));
    assert_eq!(one(b"*2\r\n$4\r\nECHO\r\n$0\r\n\r\n"), strs(&["ECHO", ""]));
    let mut big = b"*10\r\n".to_vec();
    for i in 0..10 {
        big.extend_from_slice(format!("$1\r\n{i}\r\n").as_bytes());
    }
    assert_eq!(
        one(&big),
        strs(&["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
    );
    assert_eq!(
        args_of(b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        vec![strs(&["PING"]), strs(&["GET", "k"])]
    );
}

#[test]
fn empty_requests_are_skipped() {
    assert_eq!(
        args_of(b"*0\r\n*-1\r\n*-10\r\n*-9223372036854775808\r\n\r\n\n   \r\n\t\n*1\r\n$4\r\nPING\r\n*0\r\n"),
        vec![strs(&["PING"])]
    );
    // Skipped requests are consumed even when what follows is incomplete.
    let mut buf = BytesMut::from(&b"*0\r\n\r\n*1\r\n$4\r\nPI"[..]);
    assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
    assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
}

#[test]
fn partial_input_is_not_consumed() {
    let input = b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n";
    for end in 0..input.len() {
        let mut buf = BytesMut::from(&input[..end]);
        assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(buf.len(), end);
    }
    let inline = b"GET key\r\n";
    for end in 0..inline.len() {
        let mut buf = BytesMut::from(&inline[..end]);
        assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
        assert_eq!(buf.len(), end);
    }
}

#[test]
fn multibulk_errors() {
    assert_eq!(
        err(b"*2\r\n$3\r\nGET\r\n:1\r\n"),
        ProtocolError::ExpectedBulk(b':')
    );
    assert_eq!(err(b"*1\r\n+PING\r\n").to_string(), "expected '$', got '+'");
    assert_eq!(err(b"*x\r\n"), ProtocolError::BadMultibulkLength);
    assert_eq!(err(b"*-0\r\n"), ProtocolError::BadMultibulkLength);
    assert_eq!(err(b"*\r\n"), ProtocolError::BadMultibulkLength);
    assert_eq!(err(b"*01\r\n"), ProtocolError::BadMultibulkLength);
    assert_eq!(err(b"*1\r\n$-1\r\n"), ProtocolError::BadBulkLength);
    assert_eq!(err(b"*1\r\n$x\r\n"), ProtocolError::BadBulkLength);
    assert_eq!(err(b"*1\r\n$3\r\nGETXX"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"*1\r\n$3\rX"), ProtocolError::MissingCrlf);
    assert_eq!(err(b"*1\rX"), ProtocolError::MissingCrlf);
}

#[test]
fn limits_fail_fast() {
    let limits = Limits::default();
    assert_eq!(
        err(b"*4294967295\r\n"),
        ProtocolError::ArrayTooLarge {
            limit: limits.max_array_len
        }
    );
    assert_eq!(
        err(b"*1\r\n$99999999999\r\n"),
        ProtocolError::BulkTooLarge {
            limit: limits.max_bulk_len
        }
    );
    assert_eq!(
        err(b"*99999999999999999999999"),
        ProtocolError::BadMultibulkLength
    );
    let small = Limits {
        max_bulk_len: 4,
        max_array_len: 2,
        max_inline_len: 8,
        ..limits
    };
    assert_eq!(
        err_with(b"*3\r\n", &small),
        ProtocolError::ArrayTooLarge { limit: 2 }
    );
    assert_eq!(
        err_with(b"*1\r\n$5\r\n", &small),
        ProtocolError::BulkTooLarge { limit: 4 }
    );
    assert_eq!(err_with(b"GET abcde", &small), ProtocolError::InlineTooBig);
    // A line of exactly `max_inline_len` bytes before its newline is accepted.
    let mut buf = BytesMut::from(&b"GET abc\r\n"[..]);
    assert!(decode_request(&mut buf, &small).unwrap().is_some());
    let mut buf = BytesMut::from(&b"GET abcd"[..]);
    assert_eq!(decode_request(&mut buf, &small), Ok(None));
}

#[test]
fn inline_table() {
    let cases: &[(&[u8], &[&str])] = &[
        (b"PING\r\n", &["PING"]),
        (b"PING\n", &["PING"]),
        (b"  SET   key  value  \r\n", &["SET", "key", "value"]),
        (b"SET\tkey\tvalue\n", &["SET", "key", "value"]),
        (
            b"SET key \"hello world\"\r\n",
            &["SET", "key", "hello world"],
        ),
        (b"SET key 'hello world'\r\n", &["SET", "key", "hello world"]),
        (b"ECHO \"\"\r\n", &["ECHO", ""]),
        (b"ECHO ''\r\n", &["ECHO", ""]),
        (
            b"ECHO \"a\\nb\\r\\t\\\\\\\"c\"\r\n",
            &["ECHO", "a\nb\r\t\\\"c"],
        ),
        (b"ECHO \"\\x41\\x7a\\x4\\q\"\r\n", &["ECHO", "Azx4q"]),
        (b"ECHO \"\\b\\a\"\r\n", &["ECHO", "\x08\x07"]),
        (b"ECHO 'it\\'s \\n'\r\n", &["ECHO", "it's \\n"]),
        (b"ECHO 'a\"b'\r\n", &["ECHO", "a\"b"]),
        (b"ECHO \"a'b\"\r\n", &["ECHO", "a'b"]),
        // Quotes may open inside an argument.
        (b"ECHO a\"b c\"\r\n", &["ECHO", "ab c"]),
        (b"ECHO a'b'\r\n", &["ECHO", "ab"]),
        // Only space, tab, CR and LF end an unquoted argument; \v and \f are skipped
        // between arguments but are part of one.
        (b"\x0bECHO a\x0bb\r\n", &["ECHO", "a\x0bb"]),
        (b"ECHO \"x\"\x0c\r\n", &["ECHO", "x"]),
        (b"ECHO a\rb\r\n", &["ECHO", "a", "b"]),
        (b"ECHO a\r\r\n", &["ECHO", "a"]),
        // A NUL ends the line, as in Redis's C string.
        (b"ECHO a\0b \"unbalanced\r\n", &["ECHO", "a"]),
    ];
    for (input, expected) in cases {
        assert_eq!(
            one(input),
            strs(expected),
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn inline_is_reencoded_as_multibulk() {
    let mut buf = BytesMut::from(&b"SET k \"a b\"\r\nGET k\n"[..]);
    let request = decode_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(
        &request.raw()[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\na b\r\n"
    );
    assert_eq!(request, Request::from_args(["SET", "k", "a b"]));
    assert_eq!(&buf[..], b"GET k\n");
}

#[test]
fn inline_errors() {
    for input in [
        &b"ECHO \"abc\r\n"[..],
        b"ECHO 'abc\r\n",
        b"ECHO \"abc\"def\r\n",
        b"ECHO 'abc'def\r\n",
        b"ECHO \"abc\\\"\r\n",
        b"ECHO \"abc\\\r\n",
        b"ECHO \"a\0\"\r\n",
    ] {
        assert_eq!(
            err(input),
            ProtocolError::UnbalancedQuotes,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
    let mut long = vec![b'x'; 64 * 1024 + 1];
    assert_eq!(err(&long), ProtocolError::InlineTooBig);
    assert_eq!(err(&long).to_string(), "too big inline request");
    long.pop();
    let mut buf = BytesMut::from(&long[..]);
    assert_eq!(decode_request(&mut buf, &Limits::default()), Ok(None));
}

#[test]
fn request_decoder_resumes() {
    let limits = Limits::default();
    let mut input = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        input.extend_from_slice(format!("${}\r\n{i}\r\n", i.to_string().len()).as_bytes());
    }
    input.extend_from_slice(b"PING\r\n");
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for chunk in input.chunks(7) {
        buf.extend_from_slice(chunk);
        while let Some(request) = decoder.decode(&mut buf, &limits).unwrap() {
            got.push(request);
        }
    }
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].len(), 1000);
    assert_eq!(got[0].arg(999), Some(&b"999"[..]));
    assert_eq!(got[1], Request::from_args(["PING"]));
    assert!(buf.is_empty());
}

#[test]
fn request_decoder_resets_on_a_replaced_buffer() {
    let limits = Limits::default();
    let mut decoder = RequestDecoder::new();
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n"[..]);
    assert_eq!(decoder.decode(&mut buf, &limits), Ok(None));
    let mut other = BytesMut::from(&b"*1\r\n$1\r\nx\r\n"[..]);
    let request = decoder.decode(&mut other, &limits).unwrap().unwrap();
    assert_eq!(request, Request::from_args(["x"]));
}

#[test]
fn from_args_encodes_multibulk() {
    let request = Request::from_args([&b"SET"[..], b"k", b""]);
    assert_eq!(
        &request.raw()[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    );
    assert_eq!(request.len(), 3);
    assert_eq!(request.arg(2), Some(&b""[..]));
    let many = Request::from_args((0..20).map(|i| i.to_string()));
    assert_eq!(many.len(), 20);
    assert_eq!(many.arg(19), Some(&b"19"[..]));
    let mut buf = BytesMut::from(&many.raw()[..]);
    assert_eq!(
        decode_request(&mut buf, &Limits::default())
            .unwrap()
            .unwrap(),
        many
    );
}

#[test]
#[should_panic(expected = "at least a command name")]
fn from_args_refuses_an_empty_request() {
    let _ = Request::from_args(Vec::<&[u8]>::new());
}

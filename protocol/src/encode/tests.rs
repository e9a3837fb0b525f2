//! Tests for `crate::encode`: every frame in RESP3 and downgraded to RESP2, the helpers and
//! double formatting.

use bytes::{Bytes, BytesMut};

use super::{encode, encode_bulk, encode_error, encode_integer, encode_simple, format_double};
use crate::{decode, Frame, Limits, Version};

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

#[track_caller]
fn check(frame: Frame, resp3: &[u8], resp2: &[u8]) {
    for (version, expected) in [(Version::Resp3, resp3), (Version::Resp2, resp2)] {
        let mut dst = BytesMut::new();
        encode(&frame, version, &mut dst);
        assert_eq!(
            String::from_utf8_lossy(&dst),
            String::from_utf8_lossy(expected),
            "{frame:?} as {version:?}"
        );
    }
    // The RESP3 encoding decodes back to the same frame.
    let mut buf = BytesMut::from(resp3);
    assert_eq!(decode(&mut buf, &Limits::default()), Ok(Some(frame)));
}

#[test]
fn resp2_types() {
    check(Frame::Simple(b(b"OK")), b"+OK\r\n", b"+OK\r\n");
    check(Frame::Error(b(b"ERR no")), b"-ERR no\r\n", b"-ERR no\r\n");
    check(Frame::Integer(-42), b":-42\r\n", b":-42\r\n");
    check(
        Frame::Integer(i64::MIN),
        b":-9223372036854775808\r\n",
        b":-9223372036854775808\r\n",
    );
    check(
        Frame::Bulk(b(b"a\r\nb")),
        b"$4\r\na\r\nb\r\n",
        b"$4\r\na\r\nb\r\n",
    );
    check(Frame::Bulk(b(b"")), b"$0\r\n\r\n", b"$0\r\n\r\n");
    check(
        Frame::Array(vec![Frame::Integer(1), Frame::Bulk(b(b"x"))]),
        b"*2\r\n:1\r\n$1\r\nx\r\n",
        b"*2\r\n:1\r\n$1\r\nx\r\n",
    );
    check(Frame::Array(vec![]), b"*0\r\n", b"*0\r\n");
}

#[test]
fn nulls() {
    check(Frame::Null, b"_\r\n", b"$-1\r\n");
    let mut dst = BytesMut::new();
    encode(&Frame::NullArray, Version::Resp3, &mut dst);
    encode(&Frame::NullArray, Version::Resp2, &mut dst);
    assert_eq!(&dst[..], b"_\r\n*-1\r\n");
}

#[test]
fn resp3_types_and_their_downgrade() {
    check(
        Frame::Map(vec![
            (Frame::Simple(b(b"a")), Frame::Integer(1)),
            (Frame::Bulk(b(b"b")), Frame::Null),
        ]),
        b"%2\r\n+a\r\n:1\r\n$1\r\nb\r\n_\r\n",
        b"*4\r\n+a\r\n:1\r\n$1\r\nb\r\n$-1\r\n",
    );
    check(
        Frame::Set(vec![Frame::Integer(1)]),
        b"~1\r\n:1\r\n",
        b"*1\r\n:1\r\n",
    );
    check(
        Frame::Push(vec![Frame::Bulk(b(b"message"))]),
        b">1\r\n$7\r\nmessage\r\n",
        b"*1\r\n$7\r\nmessage\r\n",
    );
    check(Frame::double(1.5), b",1.5\r\n", b"$3\r\n1.5\r\n");
    check(Frame::double(3.0), b",3\r\n", b"$1\r\n3\r\n");
    check(
        Frame::double(f64::NEG_INFINITY),
        b",-inf\r\n",
        b"$4\r\n-inf\r\n",
    );
    check(Frame::Boolean(true), b"#t\r\n", b":1\r\n");
    check(Frame::Boolean(false), b"#f\r\n", b":0\r\n");
    check(
        Frame::BigNumber(b(b"-123456789012345678901234567890")),
        b"(-123456789012345678901234567890\r\n",
        b"$31\r\n-123456789012345678901234567890\r\n",
    );
    check(
        Frame::Verbatim {
            format: *b"txt",
            text: b(b"Some string"),
        },
        b"=15\r\ntxt:Some string\r\n",
        b"$11\r\nSome string\r\n",
    );
    check(
        Frame::Attribute {
            attrs: vec![(Frame::Simple(b(b"ttl")), Frame::Integer(3))],
            frame: Box::new(Frame::Array(vec![Frame::Boolean(true)])),
        },
        b"|1\r\n+ttl\r\n:3\r\n*1\r\n#t\r\n",
        b"*1\r\n:1\r\n",
    );
    // Nested RESP3 types are downgraded all the way down.
    check(
        Frame::Array(vec![Frame::Map(vec![(
            Frame::double(0.5),
            Frame::Set(vec![Frame::Boolean(false)]),
        )])]),
        b"*1\r\n%1\r\n,0.5\r\n~1\r\n#f\r\n",
        b"*1\r\n*2\r\n$3\r\n0.5\r\n*1\r\n:0\r\n",
    );
}

#[test]
fn nan_is_spelled_out() {
    let mut dst = BytesMut::new();
    encode(&Frame::double(f64::NAN), Version::Resp3, &mut dst);
    encode(&Frame::double(-f64::NAN), Version::Resp2, &mut dst);
    assert_eq!(&dst[..], b",nan\r\n$3\r\nnan\r\n");
}

#[test]
fn doubles_format_like_percent_17g() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0"),
        (-0.0, "-0"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (3.0, "3"),
        (100.0, "100"),
        (0.1, "0.10000000000000001"),
        (1.0 / 3.0, "0.33333333333333331"),
        (0.0001, "0.0001"),
        (0.00001, "1.0000000000000001e-05"),
        (1.5e-7, "1.4999999999999999e-07"),
        (9.5367431640625e-07, "9.5367431640625e-07"),
        (1e16, "10000000000000000"),
        (1e17, "1e+17"),
        (123456789012345678.0, "1.2345678901234568e+17"),
        (1e300, "1.0000000000000001e+300"),
        (f64::MAX, "1.7976931348623157e+308"),
        (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        (5e-324, "4.9406564584124654e-324"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
    ];
    for &(d, text) in cases {
        assert_eq!(format_double(d).as_str(), text, "{d:e}");
        assert_eq!(format!("{:?}", format_double(d)), text);
        assert_eq!(format_double(d).to_string(), text);
        if d.is_finite() {
            assert_eq!(text.parse::<f64>().unwrap().to_bits(), d.to_bits());
        }
    }
}

#[test]
fn helpers() {
    let mut dst = BytesMut::new();
    encode_bulk(b"hello", &mut dst);
    encode_simple(b"OK", &mut dst);
    encode_integer(1234567890123, &mut dst);
    encode_integer(0, &mut dst);
    encode_error(b"ERR unknown command", &mut dst);
    assert_eq!(
        &dst[..],
        b"$5\r\nhello\r\n+OK\r\n:1234567890123\r\n:0\r\n-ERR unknown command\r\n"
    );
}

#[test]
fn lines_cannot_break_framing() {
    let mut dst = BytesMut::new();
    encode_error(b"ERR a\r\nb\rc\nd", &mut dst);
    encode_simple(b"x\ny", &mut dst);
    encode(&Frame::Error(b(b"E\n")), Version::Resp3, &mut dst);
    assert_eq!(&dst[..], b"-ERR a  b c d\r\n+x y\r\n-E \r\n");
}

#[test]
fn encode_appends() {
    let mut dst = BytesMut::from(&b"+first\r\n"[..]);
    encode(&Frame::Integer(2), Version::Resp2, &mut dst);
    assert_eq!(&dst[..], b"+first\r\n:2\r\n");
}

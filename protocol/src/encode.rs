//! Encoding frames for a RESP2 or RESP3 peer.

use bytes::BytesMut;

use crate::{Frame, Version};

/// Appends `frame` to `dst`, downgrading RESP3 types for a RESP2 peer as Redis does
/// (maps flattened, sets/push as arrays, doubles/big numbers/verbatim as bulk strings,
/// booleans as 1/0, attributes dropped).
pub fn encode(frame: &Frame, version: Version, dst: &mut BytesMut) {
    let _ = (frame, version, dst);
    unimplemented!()
}

/// Appends `$len\r\npayload\r\n`.
pub fn encode_bulk(payload: &[u8], dst: &mut BytesMut) {
    let _ = (payload, dst);
    unimplemented!()
}

/// Appends `-text\r\n`. `text` must not contain CR or LF (they are replaced by spaces).
pub fn encode_error(text: &[u8], dst: &mut BytesMut) {
    let _ = (text, dst);
    unimplemented!()
}

/// Appends `+text\r\n`.
pub fn encode_simple(text: &[u8], dst: &mut BytesMut) {
    let _ = (text, dst);
    unimplemented!()
}

/// Appends `:n\r\n`.
pub fn encode_integer(n: i64, dst: &mut BytesMut) {
    let _ = (n, dst);
    unimplemented!()
}

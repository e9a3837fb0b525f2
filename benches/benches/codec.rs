//! Criterion benches for the RESP codec (filled in with the protocol crate).
fn main() {}

//! Criterion benches for the routing crate.
fn main() {}

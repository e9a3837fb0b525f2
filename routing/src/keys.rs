//! Which arguments of a request are keys, following the command's key specs exactly as Redis's
//! `getKeysFromCommand` does.

use protocol::Request;

use crate::CommandSpec;

/// The argument indexes of every key in `request` according to `spec` (the spec of the command,
/// or of the subcommand for container commands), in argument order, duplicates kept.
///
/// Calls `f(index)` for each key, so the caller can fold without allocating. Returns `Err` with
/// Redis's error text if the arguments cannot be parsed for keys (a `numkeys` that is not a
/// number or too large: `ERR Number of keys can't be greater than number of args`, ...).
pub fn for_each_key(
    spec: &CommandSpec,
    request: &Request,
    f: impl FnMut(usize),
) -> Result<(), &'static str> {
    let _ = (spec, request, f);
    unimplemented!()
}

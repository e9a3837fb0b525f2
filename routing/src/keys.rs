//! Which arguments of a request are keys, following the command's key specs exactly as Redis's
//! `getKeysFromCommandWithSpecs` does (Redis 7, `src/db.c`).
//!
//! For each key spec that is not `NOT_KEY`, in order, the keys start at:
//!
//! - `index`: that argument;
//! - `keyword`: the argument after the first match of the keyword, searched forwards from
//!   `start_from`, or backwards from `argc + start_from` if that is negative. No match: this
//!   spec has no keys;
//! - `unknown`: the spec is invalid;
//!
//! and run:
//!
//! - `range`: up to `first + last_key`, or to `argc + last_key` if that is negative, or, with a
//!   `limit`, over the first `1/limit` of the remaining arguments; every `step`;
//! - `keynum`: the argument at `key_num_index` is the count; the keys start at `first_key`;
//! - `unknown`: the spec is invalid.
//!
//! A spec is also invalid if its keys fall outside the arguments, if its numkeys is not a
//! number or is negative, or if it is `INCOMPLETE` and its keyword was found. If any spec is
//! invalid Redis drops what the specs found and calls the command's own key function instead.
//! Here that is: SORT's parser (the sort key and the last `STORE` key), SORT_RO's fixed key,
//! MIGRATE's parser (the `KEYS` form), and, for commands with a numkeys argument, the error
//! the command itself replies with. Other commands have no keys then.

// Routing runs on untrusted input: no indexing, unwrapping or panicking outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use protocol::Request;

use crate::command::{BeginSearch, CommandSpec, FindKeys, KeySpec};

/// The argument indexes of every key in `request` according to `spec` (the spec of the command,
/// or of the subcommand for container commands), duplicates kept, in the order Redis's
/// `COMMAND GETKEYS` reports them: key-spec order, which is argument order for every command
/// except GEORADIUS / GEORADIUSBYMEMBER given both `STORE` and `STOREDIST` (STORE's key first).
///
/// Calls `f(index)` for each key, so the caller can fold without allocating. Index 0 is the
/// command name, so keys are at index 1 or later, and always below `request.len()`.
///
/// Returns `Err` with Redis's error text (error code included, such as
/// `ERR Number of keys can't be greater than number of args`) if the command's `numkeys`
/// argument is not a number, is out of range or names more keys than there are arguments; `f`
/// has not been called then. The texts are those redis-server 7.0.15 replies with for the same
/// arguments, and differ by command family (each text below follows `ERR `):
///
/// | numkeys        | EVAL*, FCALL*                       | ZUNION*, ZINTER*, ZDIFF* | SINTERCARD, *MPOP |
/// |----------------|-------------------------------------|--------------------------|-------------------|
/// | not a number   | `value is not an integer or out of range` (FCALL: `Bad number of keys provided`) | `value is not an integer or out of range` | `numkeys should be greater than 0` |
/// | negative       | `Number of keys can't be negative`  | `at least 1 input key is needed for '<name>' command` | `numkeys should be greater than 0` |
/// | 0              | valid: no keys                      | as negative              | as negative       |
/// | too large      | `Number of keys can't be greater than number of args` | `syntax error` | SINTERCARD as EVAL, *MPOP `syntax error` |
///
/// Other bad arguments yield no keys (or the keys Redis would find) and are left for the
/// server to reject. The caller is expected to have checked the arity first
/// ([`CommandSpec::arity_ok`]).
pub fn for_each_key(
    spec: &CommandSpec,
    request: &Request,
    mut f: impl FnMut(usize),
) -> Result<(), &'static str> {
    // Most requests (GET, SET, HSET...): one key spec, one key at argument 1. What the general
    // path below finds for it, without its bookkeeping.
    if let [KeySpec {
        begin_search: BeginSearch::Index(1),
        find_keys:
            FindKeys::Range {
                last_key: 0,
                step: 1..,
                ..
            },
        incomplete: false,
        not_key: false,
    }] = spec.key_specs
    {
        if request.len() > 1 {
            f(1);
            return Ok(());
        }
    }
    let has_keyspec = spec.key_specs.iter().any(|ks| !ks.not_key);
    if has_keyspec && apply_specs(spec, request, false, &mut f) {
        return Ok(());
    }
    fallback(spec, request, &mut f)
}

/// Like [`for_each_key`], but yields the arguments of `NOT_KEY` key specs: the shard channels
/// of `SPUBLISH`, `SSUBSCRIBE` and `SUNSUBSCRIBE`, which a cluster routes by their hash slot as
/// if they were keys. Yields nothing for other commands, or if the specs do not fit the
/// arguments.
pub fn for_each_shard_channel(spec: &CommandSpec, request: &Request, mut f: impl FnMut(usize)) {
    if spec.key_specs.iter().any(|ks| ks.not_key) {
        apply_specs(spec, request, true, &mut f);
    }
}

/// The argument indexes of the keys of the command's legacy first / last / step triple (as in
/// `COMMAND INFO`), within `request`'s arguments; none if they do not fit. A cluster node
/// routes by these when the key specs do not fit the arguments: `PFMERGE dest` without
/// sources is routed by `dest`, though `COMMAND GETKEYS` (and [`for_each_key`]) find no key.
pub fn for_each_legacy_key(spec: &CommandSpec, request: &Request, f: impl FnMut(usize)) {
    let argc = request.len() as i64;
    let first = i64::from(spec.first_key);
    let last = match i64::from(spec.last_key) {
        last if last < 0 => argc + last,
        last => last,
    };
    let step = usize::try_from(spec.step).unwrap_or(0);
    if first < 1 || step == 0 || last >= argc || last < first {
        return;
    }
    (first as usize..=last as usize).step_by(step).for_each(f);
}

/// The keys Redis's SORT key function finds: the sort key (argument 1) and the last
/// `STORE <key>`, skipping the arguments of `LIMIT`, `GET` and `BY`.
///
/// This mirrors `sortGetKeys` in Redis's `db.c`, including its parsing shortcuts.
fn sort_keys(request: &Request, mut f: impl FnMut(usize)) {
    let argc = request.len();
    if argc < 2 {
        return;
    }
    f(1);
    let mut store = None;
    let mut i = 2;
    while let Some(arg) = request.arg(i) {
        if arg.eq_ignore_ascii_case(b"limit") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"store") && i + 1 < argc {
            // The last STORE wins, as in SORT itself.
            store = Some(i + 1);
        } else if arg.eq_ignore_ascii_case(b"get") || arg.eq_ignore_ascii_case(b"by") {
            i += 1;
        }
        i += 1;
    }
    if let Some(store) = store {
        f(store);
    }
}

/// The keys Redis's MIGRATE key function finds: argument 3, or with an empty argument 3 the
/// arguments after `KEYS` (searched from argument 6, skipping the arguments of `AUTH` and
/// `AUTH2`). A non-empty argument 3 together with `KEYS` is a syntax error: no keys.
///
/// This mirrors `migrateGetKeys` in Redis's `db.c`.
fn migrate_keys(request: &Request, mut f: impl FnMut(usize)) {
    let argc = request.len();
    let (mut first, mut num) = (3, 1);
    if argc > 6 {
        let mut i = 6;
        while let Some(arg) = request.arg(i) {
            if arg.eq_ignore_ascii_case(b"keys") {
                if request.arg(3).is_some_and(|k| !k.is_empty()) {
                    num = 0;
                } else {
                    first = i + 1;
                    num = argc - first;
                }
                break;
            }
            if arg.eq_ignore_ascii_case(b"auth") {
                i += 1;
            } else if arg.eq_ignore_ascii_case(b"auth2") {
                i += 2;
            }
            i += 1;
        }
    }
    for i in first..first + num {
        if i < argc {
            f(i);
        }
    }
}

/// What a command with a `numkeys` argument replies when that argument is bad, as
/// redis-server 7.0.15 does (each was checked against a real server; the texts differ by
/// command family because each parses its `numkeys` differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumKeysErrors {
    /// `numkeys` is not an integer (Redis's `string2ll` rejects it: a sign other than a leading
    /// `-`, leading zeros, spaces, overflow).
    not_integer: &'static str,
    /// `numkeys` is negative.
    negative: &'static str,
    /// `numkeys` is 0, for commands that need at least one key; `None` if 0 keys is valid.
    zero: Option<&'static str>,
    /// `numkeys` is more than the arguments that follow it.
    too_many: &'static str,
}

/// The errors a command with a `numkeys` key spec replies with. `name` is the lower-case
/// command name. Commands not known here (none in the current table) get EVAL's texts.
fn numkeys_errors(name: &str) -> NumKeysErrors {
    const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
    const NEGATIVE: &str = "ERR Number of keys can't be negative";
    const TOO_MANY: &str = "ERR Number of keys can't be greater than number of args";
    const SYNTAX: &str = "ERR syntax error";
    const GREATER_THAN_0: &str = "ERR numkeys should be greater than 0";

    // ZUNION and friends name themselves in the error.
    let at_least_one = |text: &'static str| NumKeysErrors {
        not_integer: NOT_INTEGER,
        negative: text,
        zero: Some(text),
        too_many: SYNTAX,
    };
    let positive = |too_many: &'static str| NumKeysErrors {
        not_integer: GREATER_THAN_0,
        negative: GREATER_THAN_0,
        zero: Some(GREATER_THAN_0),
        too_many,
    };
    match name {
        "fcall" | "fcall_ro" => NumKeysErrors {
            not_integer: "ERR Bad number of keys provided",
            negative: NEGATIVE,
            zero: None,
            too_many: TOO_MANY,
        },
        "zunionstore" => {
            at_least_one("ERR at least 1 input key is needed for 'zunionstore' command")
        }
        "zinterstore" => {
            at_least_one("ERR at least 1 input key is needed for 'zinterstore' command")
        }
        "zdiffstore" => at_least_one("ERR at least 1 input key is needed for 'zdiffstore' command"),
        "zunion" => at_least_one("ERR at least 1 input key is needed for 'zunion' command"),
        "zinter" => at_least_one("ERR at least 1 input key is needed for 'zinter' command"),
        "zdiff" => at_least_one("ERR at least 1 input key is needed for 'zdiff' command"),
        "zintercard" => at_least_one("ERR at least 1 input key is needed for 'zintercard' command"),
        "sintercard" => positive(TOO_MANY),
        "lmpop" | "blmpop" | "zmpop" | "bzmpop" => positive(SYNTAX),
        // eval, evalsha, eval_ro, evalsha_ro, and the default.
        _ => NumKeysErrors {
            not_integer: NOT_INTEGER,
            negative: NEGATIVE,
            zero: None,
            too_many: TOO_MANY,
        },
    }
}

/// Where one key spec puts its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// Arguments `first..=last`, every `step`; all within the request.
    Keys {
        first: usize,
        last: usize,
        step: usize,
    },
    /// The keyword was not found: this spec contributes nothing.
    None,
    /// The spec does not fit the arguments (Redis's `invalid_spec`).
    Invalid,
}

/// Runs Redis's `getKeysUsingKeySpecs` over the specs whose `not_key` equals `not_key`.
/// Returns false, having called `f` for nothing, if any of them is invalid.
fn apply_specs(
    spec: &CommandSpec,
    request: &Request,
    not_key: bool,
    f: &mut impl FnMut(usize),
) -> bool {
    // Resolve every spec before yielding anything, since one invalid spec voids them all.
    // Commands have at most three key specs; more than MAX_SPECS are resolved a second time.
    const MAX_SPECS: usize = 4;
    let mut ranges = [(0, 0, 1); MAX_SPECS];
    let mut n = 0;
    let specs = || {
        spec.key_specs
            .iter()
            .filter(move |ks| ks.not_key == not_key)
    };
    for ks in specs() {
        match resolve(ks, request) {
            Resolved::Keys { first, last, step } => {
                if let Some(slot) = ranges.get_mut(n) {
                    *slot = (first, last, step);
                }
                n += 1;
            }
            Resolved::None => {}
            Resolved::Invalid => return false,
        }
    }
    if n <= MAX_SPECS {
        for &(first, last, step) in ranges.iter().take(n) {
            (first..=last).step_by(step).for_each(&mut *f);
        }
    } else {
        for ks in specs() {
            if let Resolved::Keys { first, last, step } = resolve(ks, request) {
                (first..=last).step_by(step).for_each(&mut *f);
            }
        }
    }
    true
}

/// One key spec against the arguments, as in Redis's `getKeysUsingKeySpecs`.
fn resolve(ks: &KeySpec, request: &Request) -> Resolved {
    // Signed arithmetic as in Redis; argument counts are far below i64::MAX.
    let argc = request.len() as i64;
    let first: i64 = match ks.begin_search {
        BeginSearch::Index(pos) => i64::from(pos),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => match find_keyword(request, keyword, start_from) {
            Some(i) => i + 1,
            None => return Resolved::None,
        },
        BeginSearch::Unknown => return Resolved::Invalid,
    };
    let (first, last, step) = match ks.find_keys {
        FindKeys::Range {
            last_key,
            step,
            limit,
        } => {
            let last_key = i64::from(last_key);
            let last = if last_key >= 0 {
                first + last_key
            } else if limit == 0 {
                argc + last_key
            } else {
                // Integer division truncating towards zero, as in C.
                first + ((argc - first) / i64::from(limit) + last_key)
            };
            (first, last, step)
        }
        FindKeys::KeyNum {
            key_num_index,
            first_key,
            step,
        } => {
            let Some(count) = request
                .arg(usize::try_from(first + i64::from(key_num_index)).unwrap_or(usize::MAX))
                .and_then(string2ll)
                .filter(|&n| n >= 0)
            else {
                return Resolved::Invalid;
            };
            let first = first + i64::from(first_key);
            (first, first.saturating_add(count) - 1, step)
        }
        FindKeys::Unknown => return Resolved::Invalid,
    };
    if last >= argc || last < first || first >= argc || step == 0 || ks.incomplete {
        return Resolved::Invalid;
    }
    match (usize::try_from(first), usize::try_from(last)) {
        (Ok(first), Ok(last)) => Resolved::Keys {
            first,
            last,
            step: step as usize,
        },
        _ => Resolved::Invalid,
    }
}

/// The index of `keyword` (ignoring ASCII case), searched as Redis does: forwards from
/// `start_from` up to but excluding the last argument, or, if `start_from` is negative,
/// backwards from `argc + start_from` down to but excluding argument 1.
fn find_keyword(request: &Request, keyword: &str, start_from: i32) -> Option<i64> {
    let argc = request.len() as i64;
    let (start, end) = if start_from > 0 {
        (i64::from(start_from), argc - 1)
    } else {
        (argc + i64::from(start_from), 1)
    };
    let forward = start <= end;
    let mut i = start;
    while i != end {
        if i >= argc || i < 1 {
            break;
        }
        let arg = request.arg(i as usize)?;
        if arg.eq_ignore_ascii_case(keyword.as_bytes()) {
            return Some(i);
        }
        i += if forward { 1 } else { -1 };
    }
    None
}

/// What Redis falls back to when the key specs do not fit: the command's own key function.
fn fallback(
    spec: &CommandSpec,
    request: &Request,
    f: &mut impl FnMut(usize),
) -> Result<(), &'static str> {
    match spec.name {
        "sort" => sort_keys(request, f),
        // SORT_RO's key function always returns the sort key.
        "sort_ro" if request.len() > 1 => f(1),
        "migrate" => migrate_keys(request, f),
        _ => {
            if let Some(err) = numkeys_error(spec, request) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// The error the command replies with if one of its `numkeys` arguments is bad.
fn numkeys_error(spec: &CommandSpec, request: &Request) -> Option<&'static str> {
    for ks in spec.key_specs.iter().filter(|ks| !ks.not_key) {
        let FindKeys::KeyNum {
            key_num_index,
            first_key,
            ..
        } = ks.find_keys
        else {
            continue;
        };
        let begin = match ks.begin_search {
            BeginSearch::Index(pos) => pos as usize,
            BeginSearch::Keyword {
                keyword,
                start_from,
            } => match find_keyword(request, keyword, start_from) {
                Some(i) => i as usize + 1,
                None => continue,
            },
            BeginSearch::Unknown => continue,
        };
        // A missing numkeys argument is an arity error, which is the caller's to report.
        let Some(arg) = request.arg(begin + key_num_index as usize) else {
            continue;
        };
        let errors = numkeys_errors(spec.name);
        let Some(n) = string2ll(arg) else {
            return Some(errors.not_integer);
        };
        if n < 0 {
            return Some(errors.negative);
        }
        if n == 0 {
            match errors.zero {
                Some(err) => return Some(err),
                None => continue,
            }
        }
        let available = request.len().saturating_sub(begin + first_key as usize);
        if n as u64 > available as u64 {
            return Some(errors.too_many);
        }
    }
    None
}

/// Redis's `string2ll`: an optional `-`, then `0` alone or digits without a leading zero, at
/// most 20 bytes, in range for `i64`. Anything else (`+1`, `01`, `-0`, ` 1`) is not a number.
pub fn string2ll(s: &[u8]) -> Option<i64> {
    // LONG_STR_SIZE in Redis is 21: longer strings are rejected outright.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

#[cfg(test)]
mod tests;

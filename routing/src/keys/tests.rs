//! Tests for key extraction: one per key spec shape, plus the fallbacks.

use protocol::Request;

use super::*;
use crate::command::lookup;

/// The key indexes of `args`, using the table entry for its name (and subcommand, for
/// containers).
fn keys(args: &[&str]) -> Result<Vec<usize>, &'static str> {
    let spec = spec_of(args);
    let mut out = Vec::new();
    for_each_key(spec, &Request::from_args(args), |i| out.push(i)).map(|()| out)
}

fn spec_of(args: &[&str]) -> &'static CommandSpec {
    let name = args[0].as_bytes();
    lookup(name, args.get(1).map(|s| s.as_bytes())).expect("command in table")
}

/// The key names rather than indexes.
fn key_names<'a>(args: &[&'a str]) -> Vec<&'a str> {
    keys(args).unwrap().into_iter().map(|i| args[i]).collect()
}

#[test]
fn index_single_key() {
    assert_eq!(keys(&["GET", "foo"]), Ok(vec![1]));
    assert_eq!(keys(&["set", "foo", "bar", "EX", "10", "GET"]), Ok(vec![1]));
    assert_eq!(keys(&["BITFIELD", "k", "GET", "u4", "0"]), Ok(vec![1]));
    assert_eq!(keys(&["BITFIELD", "k"]), Ok(vec![1]));
}

#[test]
fn range_with_step() {
    // MSET: index 1, range to -1, step 2.
    assert_eq!(
        key_names(&["MSET", "a", "1", "b", "2", "c", "3"]),
        ["a", "b", "c"]
    );
    // MSET with a missing value: Redis's spec still takes every other argument.
    assert_eq!(keys(&["MSET", "a", "1", "b"]), Ok(vec![1, 3]));
}

#[test]
fn range_to_the_end() {
    assert_eq!(key_names(&["DEL", "a", "b", "c"]), ["a", "b", "c"]);
    assert_eq!(key_names(&["MGET", "a"]), ["a"]);
    // BLPOP: range to -2 (the timeout is last).
    assert_eq!(key_names(&["BLPOP", "a", "b", "0"]), ["a", "b"]);
    // No keys at all: the spec does not fit, and DEL has no key function.
    assert_eq!(keys(&["DEL"]), Ok(vec![]));
}

#[test]
fn keynum() {
    assert_eq!(
        key_names(&["EVAL", "return 1", "2", "k1", "k2", "a1"]),
        ["k1", "k2"]
    );
    assert_eq!(keys(&["EVAL", "return 1", "0", "a1"]), Ok(vec![]));
    assert_eq!(keys(&["EVAL", "return 1", "0"]), Ok(vec![]));
    assert_eq!(keys(&["evalsha", "abc", "1", "k"]), Ok(vec![3]));
    assert_eq!(key_names(&["FCALL", "f", "1", "k", "a"]), ["k"]);
}

#[test]
fn keynum_errors() {
    const TOO_MANY: &str = "ERR Number of keys can't be greater than number of args";
    const NEGATIVE: &str = "ERR Number of keys can't be negative";
    const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
    assert_eq!(keys(&["EVAL", "s", "3", "k1", "k2"]), Err(TOO_MANY));
    assert_eq!(keys(&["EVAL", "s", "3000000000", "k"]), Err(TOO_MANY));
    assert_eq!(keys(&["EVAL", "s", "-1", "k"]), Err(NEGATIVE));
    assert_eq!(keys(&["EVAL", "s", "x", "k"]), Err(NOT_INTEGER));
    assert_eq!(keys(&["EVAL", "s", "01", "k"]), Err(NOT_INTEGER));
    assert_eq!(keys(&["EVAL", "s", "+1", "k"]), Err(NOT_INTEGER));
    assert_eq!(keys(&["EVAL", "s", "", "k"]), Err(NOT_INTEGER));
    assert_eq!(
        keys(&["EVAL", "s", "99999999999999999999", "k"]),
        Err(NOT_INTEGER)
    );
    assert_eq!(
        keys(&["FCALL", "f", "x", "k"]),
        Err("ERR Bad number of keys provided")
    );
    assert_eq!(keys(&["FCALL_RO", "f", "-5"]), Err(NEGATIVE));
    assert_eq!(
        keys(&["ZUNIONSTORE", "d", "0", "a"]),
        Err("ERR at least 1 input key is needed for 'zunionstore' command")
    );
    assert_eq!(
        keys(&["zinter", "-1", "a"]),
        Err("ERR at least 1 input key is needed for 'zinter' command")
    );
    assert_eq!(
        keys(&["ZUNIONSTORE", "d", "2", "a"]),
        Err("ERR syntax error")
    );
    assert_eq!(keys(&["ZDIFF", "nan", "a"]), Err(NOT_INTEGER));
    assert_eq!(
        keys(&["SINTERCARD", "0", "a"]),
        Err("ERR numkeys should be greater than 0")
    );
    assert_eq!(keys(&["SINTERCARD", "3", "a"]), Err(TOO_MANY));
    assert_eq!(
        keys(&["LMPOP", "x", "a", "LEFT"]),
        Err("ERR numkeys should be greater than 0")
    );
    assert_eq!(keys(&["LMPOP", "5", "a", "LEFT"]), Err("ERR syntax error"));
    assert_eq!(
        keys(&["BZMPOP", "0", "0", "a", "MIN"]),
        Err("ERR numkeys should be greater than 0")
    );
}

#[test]
fn every_keynum_command_has_its_own_errors() {
    // A new keynum command in the table should get its error texts checked (see
    // `numkeys_errors`); this lists the ones that were.
    let mut keynum: Vec<&str> = crate::command::all()
        .iter()
        .filter(|c| {
            c.key_specs
                .iter()
                .any(|ks| matches!(ks.find_keys, FindKeys::KeyNum { .. }))
        })
        .map(|c| c.name)
        .collect();
    keynum.sort_unstable();
    assert_eq!(
        keynum,
        [
            "blmpop",
            "bzmpop",
            "eval",
            "eval_ro",
            "evalsha",
            "evalsha_ro",
            "fcall",
            "fcall_ro",
            "lmpop",
            "sintercard",
            "zdiff",
            "zdiffstore",
            "zinter",
            "zintercard",
            "zinterstore",
            "zmpop",
            "zunion",
            "zunionstore"
        ]
    );
}

#[test]
fn destination_and_keynum() {
    assert_eq!(
        key_names(&["ZUNIONSTORE", "dst", "2", "a", "b", "WEIGHTS", "1", "2"]),
        ["dst", "a", "b"]
    );
    assert_eq!(
        key_names(&["ZINTER", "2", "a", "b", "WITHSCORES"]),
        ["a", "b"]
    );
}

#[test]
fn keyword_and_range_with_limit() {
    // XREAD ... STREAMS: the keys are the first half of what follows STREAMS.
    assert_eq!(
        key_names(&["XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"]),
        ["s1", "s2"]
    );
    assert_eq!(
        key_names(&["xread", "block", "0", "streams", "s", "$"]),
        ["s"]
    );
    // A stream named like the keyword: the first match wins.
    assert_eq!(
        key_names(&["XREAD", "STREAMS", "streams", "0"]),
        ["streams"]
    );
    // Unbalanced: the spec rounds down, the server reports the error.
    assert_eq!(key_names(&["XREAD", "STREAMS", "a", "b", "0"]), ["a"]);
    // No STREAMS, or nothing after it: no keys.
    assert_eq!(keys(&["XREAD", "COUNT", "1"]), Ok(vec![]));
    assert_eq!(keys(&["XREAD", "COUNT", "1", "STREAMS"]), Ok(vec![]));
    assert_eq!(keys(&["XREAD", "STREAMS", "a"]), Ok(vec![]));
}

#[test]
fn xreadgroup() {
    // The keyword search starts at argument 4, after GROUP <group> <consumer>.
    assert_eq!(
        key_names(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "COUNT",
            "1",
            "STREAMS",
            "a",
            "b",
            ">",
            ">"
        ]),
        ["a", "b"]
    );
    // A group named STREAMS is skipped because the search starts after it.
    assert_eq!(
        key_names(&["XREADGROUP", "GROUP", "STREAMS", "c", "STREAMS", "s", ">"]),
        ["s"]
    );
}

#[test]
fn migrate() {
    // Single-key form: argument 3.
    assert_eq!(
        key_names(&["MIGRATE", "h", "6379", "k", "0", "5000"]),
        ["k"]
    );
    assert_eq!(
        key_names(&["MIGRATE", "h", "6379", "k", "0", "5000", "COPY", "REPLACE"]),
        ["k"]
    );
    // KEYS form: the incomplete spec sends Redis to its MIGRATE key function.
    assert_eq!(
        key_names(&["MIGRATE", "h", "6379", "", "0", "5000", "COPY", "KEYS", "a", "b"]),
        ["a", "b"]
    );
    // AUTH's argument is skipped, even when it reads `keys`.
    assert_eq!(
        key_names(&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH", "keys", "KEYS", "a"]),
        ["a"]
    );
    assert_eq!(
        key_names(&["MIGRATE", "h", "6379", "", "0", "5000", "AUTH2", "u", "keys", "KEYS", "a"]),
        ["a"]
    );
    // KEYS with a non-empty key argument is a syntax error: no keys.
    assert_eq!(
        keys(&["MIGRATE", "h", "6379", "k", "0", "5000", "KEYS", "a"]),
        Ok(vec![])
    );
}

#[test]
fn lmpop_blmpop() {
    assert_eq!(
        key_names(&["LMPOP", "2", "a", "b", "LEFT", "COUNT", "3"]),
        ["a", "b"]
    );
    assert_eq!(
        key_names(&["BLMPOP", "0.5", "2", "a", "b", "RIGHT"]),
        ["a", "b"]
    );
    assert_eq!(key_names(&["ZMPOP", "1", "z", "MIN"]), ["z"]);
    assert_eq!(key_names(&["BZMPOP", "1", "1", "z", "MAX"]), ["z"]);
}

#[test]
fn georadius_store() {
    assert_eq!(key_names(&["GEORADIUS", "g", "0", "0", "10", "km"]), ["g"]);
    assert_eq!(
        key_names(&["GEORADIUS", "g", "0", "0", "10", "km", "STORE", "dst"]),
        ["g", "dst"]
    );
    assert_eq!(
        key_names(&[
            "GEORADIUS",
            "g",
            "0",
            "0",
            "10",
            "km",
            "COUNT",
            "3",
            "STOREDIST",
            "d"
        ]),
        ["g", "d"]
    );
    assert_eq!(
        key_names(&["GEORADIUSBYMEMBER", "g", "m", "10", "km", "STORE", "dst"]),
        ["g", "dst"]
    );
    // GEORADIUS_RO has no STORE.
    assert_eq!(
        key_names(&["GEORADIUS_RO", "g", "0", "0", "10", "km"]),
        ["g"]
    );
}

#[test]
fn sort_store() {
    assert_eq!(key_names(&["SORT", "list"]), ["list"]);
    assert_eq!(
        key_names(&["SORT", "list", "STORE", "dst"]),
        ["list", "dst"]
    );
    assert_eq!(
        key_names(&["SORT", "l", "BY", "w_*", "LIMIT", "0", "10", "GET", "store", "STORE", "d"]),
        ["l", "d"]
    );
    // The last STORE wins.
    assert_eq!(
        key_names(&["SORT", "l", "STORE", "d1", "STORE", "d2"]),
        ["l", "d2"]
    );
    // A dangling STORE is no key.
    assert_eq!(key_names(&["SORT", "l", "STORE"]), ["l"]);
    // SORT_RO: only the sort key.
    assert_eq!(key_names(&["SORT_RO", "l", "BY", "x", "GET", "y"]), ["l"]);
}

#[test]
fn container_subcommands() {
    assert_eq!(key_names(&["OBJECT", "ENCODING", "k"]), ["k"]);
    assert_eq!(key_names(&["MEMORY", "USAGE", "k", "SAMPLES", "5"]), ["k"]);
    assert_eq!(key_names(&["XINFO", "STREAM", "s", "FULL"]), ["s"]);
    // The container itself has no key specs.
    let object = lookup(b"object", None).unwrap();
    let mut n = 0;
    for_each_key(
        object,
        &Request::from_args(["OBJECT", "ENCODING", "k"]),
        |_| n += 1,
    )
    .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn commands_without_keys() {
    assert_eq!(keys(&["PING"]), Ok(vec![]));
    assert_eq!(keys(&["CONFIG", "GET", "maxmemory"]), Ok(vec![]));
    // Shard channels are not keys...
    assert_eq!(keys(&["SPUBLISH", "ch", "msg"]), Ok(vec![]));
    assert_eq!(keys(&["SSUBSCRIBE", "a", "b"]), Ok(vec![]));
}

#[test]
fn shard_channels() {
    fn channels(args: &[&str]) -> Vec<usize> {
        let mut out = Vec::new();
        for_each_shard_channel(spec_of(args), &Request::from_args(args), |i| out.push(i));
        out
    }
    assert_eq!(channels(&["SPUBLISH", "ch", "msg"]), [1]);
    assert_eq!(channels(&["SSUBSCRIBE", "a", "b"]), [1, 2]);
    assert_eq!(channels(&["SUNSUBSCRIBE", "a"]), [1]);
    assert_eq!(channels(&["SUNSUBSCRIBE"]), Vec::<usize>::new());
    assert_eq!(channels(&["GET", "k"]), Vec::<usize>::new());
    assert_eq!(channels(&["PUBLISH", "ch", "m"]), Vec::<usize>::new());
}

#[test]
fn keyword_search_from_the_end() {
    // A synthetic spec: keyword searched backwards from the second-to-last argument.
    const SPEC: CommandSpec = CommandSpec {
        name: "test",
        arity: -1,
        flags: crate::Flags::NONE,
        first_key: 0,
        last_key: 0,
        step: 0,
        key_specs: &[KeySpec {
            begin_search: BeginSearch::Keyword {
                keyword: "KEYS",
                start_from: -2,
            },
            find_keys: FindKeys::Range {
                last_key: -1,
                step: 1,
                limit: 0,
            },
            incomplete: false,
            not_key: false,
        }],
        tips: &[],
        subcommands: &[],
    };
    let run = |args: &[&str]| {
        let mut out = Vec::new();
        for_each_key(&SPEC, &Request::from_args(args), |i| out.push(i)).unwrap();
        out
    };
    // The last KEYS before the final argument wins.
    assert_eq!(run(&["test", "KEYS", "a", "keys", "b", "c"]), [4, 5]);
    // The search stops before argument 1 and never looks at the last argument.
    assert_eq!(run(&["test", "KEYS", "a"]), Vec::<usize>::new());
    assert_eq!(run(&["test", "x", "KEYS"]), Vec::<usize>::new());
    assert_eq!(run(&["test", "x", "KEYS", "a"]), [3]);
}

#[test]
fn one_invalid_spec_voids_the_others() {
    // ZUNIONSTORE's first spec (the destination) fits, its keynum spec does not: no keys, the
    // command's error instead.
    assert!(keys(&["ZUNIONSTORE", "d", "5", "a"]).is_err());
    let mut called = false;
    let spec = spec_of(&["ZUNIONSTORE"]);
    let _ = for_each_key(
        spec,
        &Request::from_args(["ZUNIONSTORE", "d", "5", "a"]),
        |_| called = true,
    );
    assert!(!called);
}

#[test]
fn string2ll_matches_redis() {
    assert_eq!(string2ll(b"0"), Some(0));
    assert_eq!(string2ll(b"12"), Some(12));
    assert_eq!(string2ll(b"-12"), Some(-12));
    assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
    assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
    for bad in [
        &b""[..],
        b"-",
        b"-0",
        b"00",
        b"01",
        b"+1",
        b" 1",
        b"1 ",
        b"1a",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"123456789012345678901",
    ] {
        assert_eq!(string2ll(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

proptest::proptest! {
    /// Any arguments: no panic, and every index is a real argument after the name.
    #[test]
    fn never_panics(
        cmd in proptest::sample::select(
            crate::command::all().iter().map(|c| c.name).collect::<Vec<_>>()
        ),
        args in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::string::string_regex("[a-z]{0,3}").unwrap(),
                proptest::string::string_regex("-?[0-9]{1,3}").unwrap(),
                proptest::sample::select(vec![
                    "STREAMS".to_string(), "KEYS".to_string(), "STORE".to_string(),
                    "LIMIT".to_string(), "".to_string(), "99999999999999999999".to_string(),
                ]),
            ],
            0..8,
        ),
    ) {
        let mut all = vec![cmd.to_string()];
        all.extend(args);
        let spec = lookup(cmd.as_bytes(), all.get(1).map(|s| s.as_bytes())).unwrap();
        let request = Request::from_args(&all);
        let _ = for_each_key(spec, &request, |i| {
            assert!(i >= 1 && i < all.len(), "{all:?}: key index {i}");
        });
        for_each_shard_channel(spec, &request, |i| assert!(i >= 1 && i < all.len()));
    }
}

#[test]
fn legacy_keys_route_what_the_specs_cannot_read() {
    let legacy = |args: &[&str]| {
        let mut out = Vec::new();
        for_each_legacy_key(spec_of(args), &Request::from_args(args), |i| out.push(i));
        out
    };
    // The sources' spec starts past the end: no keys by the specs, the destination by the
    // legacy triple (1, -1, 1).
    assert_eq!(keys(&["PFMERGE", "dest"]), Ok(vec![]));
    assert_eq!(legacy(&["PFMERGE", "dest"]), [1]);
    assert_eq!(legacy(&["MSET", "a", "1", "b", "2"]), [1, 3]);
    assert_eq!(legacy(&["PING"]), Vec::<usize>::new());
}

//! Slots, key extraction and numkeys errors compared with a real redis-server 7.
//!
//! Each test starts its own `redis-server` and fails (never skips) if it is not installed.

mod support;

use protocol::{Frame, Request};
use routing::command::{all, lookup};
use routing::keys::for_each_key;
use routing::Slot;
use support::{RedisServer, Rng};

fn text(frame: &Frame) -> String {
    match frame {
        Frame::Bulk(b) | Frame::Simple(b) | Frame::Error(b) => {
            String::from_utf8_lossy(b).into_owned()
        }
        other => format!("{other:?}"),
    }
}

/// Our keys for `args`, as key names.
fn our_keys(args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, &'static str> {
    let sub = args.get(1).map(Vec::as_slice);
    let Some(spec) = lookup(&args[0], sub) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for_each_key(spec, &Request::from_args(args), |i| {
        keys.push(args[i].clone())
    })?;
    Ok(keys)
}

/// What `COMMAND GETKEYS` says: `Ok(keys)` or `Err(error text)`.
fn redis_keys(client: &mut support::Client, args: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, String> {
    let mut command = vec![b"COMMAND".to_vec(), b"GETKEYS".to_vec()];
    command.extend(args.iter().cloned());
    match client.call(&command) {
        Frame::Array(items) => Ok(items
            .iter()
            .map(|f| match f {
                Frame::Bulk(b) => b.to_vec(),
                other => panic!("COMMAND GETKEYS element {other:?}"),
            })
            .collect()),
        Frame::Error(e) => Err(String::from_utf8_lossy(&e).into_owned()),
        other => panic!("COMMAND GETKEYS reply {other:?}"),
    }
}

fn split(line: &str) -> Vec<Vec<u8>> {
    // `''` stands for an empty argument.
    line.split(' ')
        .map(|a| {
            if a == "''" {
                Vec::new()
            } else {
                a.as_bytes().to_vec()
            }
        })
        .collect()
}

#[test]
fn slots_match_cluster_keyslot() {
    let server = RedisServer::start(&["--cluster-enabled", "yes"]);
    let mut client = server.connect();
    let mut rng = Rng(0x5107_3A4E);
    let alphabet = b"abc{}{}xyz:_0123456789";
    let mut keys: Vec<Vec<u8>> = [
        "foo",
        "bar",
        "",
        "{",
        "}",
        "{}",
        "{user}1",
        "foo{}{bar}",
        "foo{{bar}}",
        "foo{bar}{zap}",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    for i in 0..500 {
        let len = rng.below(24);
        let key = (0..len)
            .map(|_| {
                if i % 3 == 0 {
                    rng.next() as u8 // any byte
                } else {
                    alphabet[rng.below(alphabet.len())]
                }
            })
            .collect();
        keys.push(key);
    }
    keys.push(vec![b'k'; 100]);
    for key in &keys {
        client.send(&[&b"CLUSTER"[..], b"KEYSLOT", key]);
    }
    for key in &keys {
        let want = match client.read() {
            Frame::Integer(n) => n,
            other => panic!("CLUSTER KEYSLOT reply {other:?}"),
        };
        assert_eq!(
            i64::from(Slot::for_key(key).get()),
            want,
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
}

/// Commands of every key spec shape, and their neighbours.
const GETKEYS_CASES: &[&str] = &[
    "GET k",
    "SET k v EX 10 GET",
    "SET k v",
    "GETEX k PERSIST",
    "GETDEL k",
    "APPEND k v",
    "MSET a 1 b 2 c 3",
    "MSETNX a 1 b 2",
    "MGET a b c",
    "DEL a b c",
    "UNLINK a",
    "EXISTS a b",
    "TOUCH a b",
    "WATCH a b",
    "EXPIRE k 10 NX",
    "RENAME a b",
    "COPY a b REPLACE",
    "DUMP k",
    "RESTORE k 0 payload",
    "EVAL s 2 k1 k2 a1",
    "EVAL_RO s 1 k1",
    "EVALSHA sha 3 a b c",
    "EVALSHA_RO sha 1 a x y",
    "FCALL f 2 a b x",
    "FCALL_RO f 1 a",
    "ZUNIONSTORE dst 2 a b WEIGHTS 1 2",
    "ZINTERSTORE dst 1 a",
    "ZDIFFSTORE dst 3 a b c",
    "ZUNION 2 a b WITHSCORES",
    "ZINTER 1 a",
    "ZDIFF 2 a b",
    "ZINTERCARD 2 a b LIMIT 1",
    "SINTERCARD 3 a b c",
    "XREAD COUNT 2 STREAMS s1 s2 0 0",
    "XREAD BLOCK 0 STREAMS s $",
    "XREAD STREAMS streams 0",
    "XREADGROUP GROUP g c COUNT 1 STREAMS a b > >",
    "XREADGROUP GROUP STREAMS c STREAMS s >",
    "XADD s * f v",
    "XINFO STREAM s FULL",
    "XGROUP CREATE s g $ MKSTREAM",
    "XAUTOCLAIM s g c 0 0-0",
    "MIGRATE h 6379 k 0 5000",
    "MIGRATE h 6379 k 0 5000 COPY REPLACE",
    "MIGRATE h 6379 '' 0 5000 KEYS a b c",
    "MIGRATE h 6379 '' 0 5000 AUTH keys KEYS a",
    "MIGRATE h 6379 '' 0 5000 AUTH2 u keys KEYS a b",
    "LMPOP 2 a b LEFT COUNT 3",
    "BLMPOP 0.5 2 a b RIGHT",
    "ZMPOP 1 z MIN",
    "BZMPOP 0 2 y z MAX COUNT 2",
    "GEORADIUS g 0 0 10 km",
    "GEORADIUS g 0 0 10 km STORE dst",
    "GEORADIUS g 0 0 10 km COUNT 3 STOREDIST dst",
    "GEORADIUSBYMEMBER g m 10 km STORE dst",
    "GEORADIUS_RO g 0 0 10 km",
    "GEOSEARCHSTORE dst src FROMMEMBER m BYRADIUS 10 km",
    "SORT l",
    "SORT l STORE dst",
    "SORT l BY w_* LIMIT 0 10 GET store STORE dst",
    "SORT l STORE d1 STORE d2",
    "SORT_RO l BY x GET y",
    "OBJECT ENCODING k",
    "OBJECT FREQ k",
    "MEMORY USAGE k SAMPLES 5",
    "BITFIELD k GET u4 0 SET u4 0 1",
    "BITFIELD_RO k GET u4 0",
    "BITOP AND dst a b",
    "BITCOUNT k 0 1",
    "SMOVE a b m",
    "SDIFFSTORE dst a b",
    "SUNION a b c",
    "LMOVE a b LEFT RIGHT",
    "BLMOVE a b LEFT RIGHT 0",
    "RPOPLPUSH a b",
    "BRPOPLPUSH a b 0",
    "BLPOP a b 0",
    "BRPOP a 1.5",
    "BZPOPMIN a b 0",
    "PFMERGE dst a b",
    "PFCOUNT a b",
    "HSET h f v f2 v2",
    "LCS a b LEN",
    "SPUBLISH ch msg",
    "PING",
    "EVAL s 0",
];

#[test]
fn keys_match_command_getkeys() {
    let server = RedisServer::start(&[]);
    let mut client = server.connect();
    for case in GETKEYS_CASES {
        let args = split(case);
        let ours = our_keys(&args);
        match redis_keys(&mut client, &args) {
            Ok(theirs) => assert_eq!(ours, Ok(theirs), "{case}"),
            // Redis found no keys ("Invalid arguments" or "no key arguments"): neither do we.
            Err(e) => assert!(
                matches!(&ours, Ok(k) if k.is_empty()) || ours.is_err(),
                "{case}: Redis says {e}, we say {ours:?}"
            ),
        }
    }
    assert!(GETKEYS_CASES.len() >= 40);
}

/// Random arguments for every command in the table, compared with `COMMAND GETKEYS`.
#[test]
fn keys_match_command_getkeys_on_random_arguments() {
    let server = RedisServer::start(&[]);
    let mut client = server.connect();
    let mut rng = Rng(0xC0FF_EE11);
    let tokens: &[&[u8]] = &[
        b"a",
        b"b",
        b"k",
        b"",
        b"0",
        b"1",
        b"2",
        b"3",
        b"-1",
        b"01",
        b"x",
        b"STREAMS",
        b"streams",
        b"KEYS",
        b"STORE",
        b"STOREDIST",
        b"LIMIT",
        b"GET",
        b"BY",
        b"AUTH",
        b"AUTH2",
        b"COPY",
        b"$",
        b">",
    ];
    let mut compared = 0;
    for spec in all() {
        // Redis 7.0 does not know the commands added for 7.2 and 7.4.
        let specs: Vec<_> = if spec.subcommands.is_empty() {
            vec![spec]
        } else {
            spec.subcommands.iter().collect()
        };
        for spec in specs {
            let name: Vec<Vec<u8>> = spec
                .name
                .split('|')
                .map(|p| p.as_bytes().to_vec())
                .collect();
            for _ in 0..30 {
                let min = spec.arity.unsigned_abs() as usize;
                let extra = if spec.arity < 0 { rng.below(6) } else { 0 };
                let mut args = name.clone();
                while args.len() < min + extra {
                    args.push(tokens[rng.below(tokens.len())].to_vec());
                }
                let ours = our_keys(&args);
                let theirs = redis_keys(&mut client, &args);
                if let Err(e) = &theirs {
                    if e.starts_with("ERR Invalid command specified") {
                        break; // newer than this redis-server
                    }
                }
                let show = || {
                    args.iter()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                match (&ours, &theirs) {
                    (Ok(ours), Ok(theirs)) => assert_eq!(ours, theirs, "{}", show()),
                    (Ok(ours), Err(e)) => assert!(
                        ours.is_empty(),
                        "{}: Redis says {e}, we say {ours:?}",
                        show()
                    ),
                    // We reply with the command's own error; Redis's key function (which parses
                    // numkeys with atoi) may still have found keys for a command that will fail.
                    (Err(_), _) => {}
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 5000, "{compared}");
}

/// The numkeys errors we reply with are the ones the commands themselves give.
#[test]
fn numkeys_errors_match_redis() {
    let server = RedisServer::start(&[]);
    let mut client = server.connect();
    let lib = "#!lua name=lib\nredis.register_function('f', function(keys, args) return #keys end)\n\
               redis.register_function{function_name='g', callback=function(keys, args) return #keys end, flags={'no-writes'}}";
    let loaded = client.call(&["FUNCTION", "LOAD", lib]);
    assert_eq!(text(&loaded), "lib");
    let sha = text(&client.call(&["SCRIPT", "LOAD", "return 1"]));
    let templates: &[&str] = &[
        "EVAL return@1 N a b",
        "EVAL_RO return@1 N a b",
        "EVALSHA SHA N a b",
        "EVALSHA_RO SHA N a b",
        "FCALL f N a b",
        "FCALL_RO g N a b",
        "ZUNIONSTORE d N a b",
        "ZINTERSTORE d N a b",
        "ZDIFFSTORE d N a b",
        "ZUNION N a b",
        "ZINTER N a b",
        "ZDIFF N a b",
        "ZINTERCARD N a b",
        "SINTERCARD N a b",
        "LMPOP N a b LEFT",
        "BLMPOP 0.01 N a b LEFT",
        "ZMPOP N a b MIN",
        "BZMPOP 0.01 N a b MIN",
    ];
    for template in templates {
        for n in [
            "x",
            "",
            "-1",
            "-3000000000",
            "0",
            "01",
            "+1",
            "5",
            "3000000000",
            "99999999999999999999",
        ] {
            let args: Vec<Vec<u8>> = template
                .split(' ')
                .map(|a| match a {
                    "N" => n.to_string(),
                    "SHA" => sha.clone(),
                    a => a.replace('@', " "),
                })
                .map(String::into_bytes)
                .collect();
            let ours = our_keys(&args);
            let reply = client.call(&args);
            match (&ours, &reply) {
                (Err(ours), Frame::Error(theirs)) => {
                    assert_eq!(
                        *ours,
                        String::from_utf8_lossy(theirs),
                        "{template} with numkeys {n:?}"
                    )
                }
                (Err(ours), theirs) => {
                    panic!("{template} with numkeys {n:?}: we say {ours}, Redis replies {theirs:?}")
                }
                (Ok(_), Frame::Error(theirs)) => {
                    // Valid numkeys; the command failed for another reason (wrong arity, or the
                    // value after the keys is not LEFT/MIN), which is the server's to report.
                    let theirs = String::from_utf8_lossy(theirs);
                    assert!(
                        theirs.starts_with("ERR syntax error") || theirs.starts_with("ERR wrong number"),
                        "{template} with numkeys {n:?}: we found keys {ours:?}, Redis replies {theirs}"
                    );
                }
                (Ok(_), _) => {}
            }
        }
    }
}

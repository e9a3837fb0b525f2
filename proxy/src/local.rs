//! Commands the proxy answers itself, as a single Redis node would: PING, ECHO, HELLO, AUTH,
//! SELECT, CLIENT ..., INFO, TIME, QUIT, RESET, READONLY/READWRITE.
//!
//! Each handler gets the client's [`ClientState`] and returns the reply [`Frame`] and whether the
//! connection should close after it.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::{Frame, Request, Version};

use crate::error::ProxyError;
use crate::listener::ClientAddr;
use crate::reply::Control;
use crate::server::{ClientInfo, ClientState, Shared};

/// The Redis version the proxy reports when it has not learned the cluster's.
pub const DEFAULT_REDIS_VERSION: &str = "7.0.15";

/// What happens after a local reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep serving.
    Continue,
    /// Write the reply, then close (QUIT).
    Close,
}

/// True if `name` (a command table name such as `client|setname`) is answered here.
pub fn is_local(name: &str) -> bool {
    matches!(
        name,
        "ping"
            | "echo"
            | "quit"
            | "reset"
            | "hello"
            | "auth"
            | "select"
            | "time"
            | "role"
            | "readonly"
            | "readwrite"
            | "client"
            | "client|setname"
            | "client|getname"
            | "client|id"
            | "client|info"
            | "client|list"
            | "client|setinfo"
            | "client|no-evict"
            | "client|no-touch"
            | "client|help"
            | "client|kill"
            | "client|unblock"
            | "slowlog|get"
            | "slowlog|len"
            | "slowlog|reset"
            | "slowlog|help"
    )
}

/// Commands that may run before AUTH when a password is set (as in Redis).
pub fn allowed_before_auth(name: &str) -> bool {
    matches!(name, "auth" | "hello" | "quit" | "reset")
}

/// Answers a local command. `name` is the command table name.
pub fn answer(
    name: &str,
    req: &Request,
    client: &mut ClientState,
    shared: &Shared,
) -> Result<(Frame, After), ProxyError> {
    let ok = || Ok((simple("OK"), After::Continue));
    match name {
        "ping" => match req.len() {
            1 => Ok((simple("PONG"), After::Continue)),
            2 => Ok((bulk_arg(req, 1), After::Continue)),
            _ => Err(ProxyError::WrongArity("ping")),
        },
        "echo" => Ok((bulk_arg(req, 1), After::Continue)),
        "quit" => Ok((simple("OK"), After::Close)),
        "reset" => {
            client.reset();
            Ok((simple("RESET"), After::Continue))
        }
        "readonly" | "readwrite" => ok(),
        // The proxy is the clients' one master; its replicas are the cluster's business.
        "role" => Ok((
            Frame::Array(vec![
                bulk("master"),
                Frame::Integer(0),
                Frame::Array(vec![]),
            ]),
            After::Continue,
        )),
        "time" => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Ok((
                Frame::Array(vec![
                    bulk(now.as_secs().to_string()),
                    bulk(now.subsec_micros().to_string()),
                ]),
                After::Continue,
            ))
        }
        "auth" => {
            let (user, pass) = match req.len() {
                2 => (None, req.arg(1).unwrap_or_default()),
                3 => (req.arg(1), req.arg(2).unwrap_or_default()),
                _ => return Err(ProxyError::Syntax),
            };
            authenticate(client, shared, user, pass)?;
            ok()
        }
        "hello" => hello(req, client, shared),
        "select" => {
            let db = req.arg(1).unwrap_or_default();
            let namespaced = shared.config.databases == crate::config::Databases::Namespaced;
            match std::str::from_utf8(db)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(0) => {
                    client.db = 0;
                    client.publish();
                    ok()
                }
                Some(n) if namespaced && n > 0 && n < i64::from(shared.config.max_databases) => {
                    client.db = n as u32;
                    client.publish();
                    ok()
                }
                Some(_) if namespaced => Err(ProxyError::Other(
                    "ERR DB index is out of range".to_string(),
                )),
                Some(_) => Err(ProxyError::DbOutOfRange),
                None => Err(ProxyError::NotAnInteger),
            }
        }
        "client" | "client|help" => Ok((
            Frame::Array(
                [
                    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
                    "ID",
                    "    Return the ID of the current connection.",
                    "INFO",
                    "    Return information about the current client connection.",
                    "LIST",
                    "    Return information about client connections.",
                    "GETNAME",
                    "    Return the name of the current connection.",
                    "SETNAME <name>",
                    "    Assign the name <name> to the current connection.",
                    "SETINFO <option> <value>",
                    "    Set client meta attr. Options are: LIB-NAME, LIB-VER.",
                ]
                .iter()
                .map(|s| simple(s))
                .collect(),
            ),
            After::Continue,
        )),
        "client|id" => Ok((Frame::Integer(client.id as i64), After::Continue)),
        "client|getname" => Ok((
            client.name().map_or(Frame::Null, Frame::Bulk),
            After::Continue,
        )),
        "client|setname" => {
            let name = req.arg_bytes(2).unwrap_or_default();
            set_name(client, name)?;
            ok()
        }
        "client|setinfo" => {
            let attr = req.arg(2).unwrap_or_default();
            let value = req.arg_bytes(3).unwrap_or_default();
            if value.iter().any(|&b| b <= b' ' || b > b'~') {
                return Err(ProxyError::Other(format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(attr).to_ascii_uppercase()
                )));
            }
            if attr.eq_ignore_ascii_case(b"lib-name") {
                client.set_name(1, Some(value));
            } else if attr.eq_ignore_ascii_case(b"lib-ver") {
                client.set_name(2, Some(value));
            } else {
                return Err(ProxyError::Other(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(attr)
                )));
            }
            ok()
        }
        "client|no-evict" | "client|no-touch" => {
            let v = req.arg(2).unwrap_or_default();
            if v.eq_ignore_ascii_case(b"on") || v.eq_ignore_ascii_case(b"off") {
                ok()
            } else {
                Err(ProxyError::Syntax)
            }
        }
        "client|kill" => client_kill(req, client, shared),
        "client|unblock" => client_unblock(req, shared),
        "client|info" => Ok((
            Frame::Verbatim {
                format: *b"txt",
                text: Bytes::from(
                    client_line(
                        &client.info(),
                        shared,
                        Some(("client|info", req.raw().len())),
                    ) + "\n",
                ),
            },
            After::Continue,
        )),
        "client|list" => {
            let mut text = String::new();
            for c in shared.clients.snapshot() {
                text.push_str(&client_line(
                    &c,
                    shared,
                    (c.id == client.id).then_some(("client|list", req.raw().len())),
                ));
                text.push('\n');
            }
            if text.is_empty() {
                text = client_line(
                    &client.info(),
                    shared,
                    Some(("client|list", req.raw().len())),
                ) + "\n";
            }
            Ok((
                Frame::Verbatim {
                    format: *b"txt",
                    text: Bytes::from(text),
                },
                After::Continue,
            ))
        }
        "slowlog|get" | "slowlog|len" | "slowlog|reset" | "slowlog|help" => {
            Ok((shared.slowlog.answer(name, req)?, After::Continue))
        }
        _ => Err(ProxyError::Other(format!(
            "ERR unknown command '{name}' in the proxy's local handler"
        ))),
    }
}

fn authenticate(
    client: &mut ClientState,
    shared: &Shared,
    user: Option<&[u8]>,
    pass: &[u8],
) -> Result<(), ProxyError> {
    let Some(expected) = shared.config.password.as_deref() else {
        return Err(ProxyError::Other(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?"
                .to_string(),
        ));
    };
    let user_ok = user.is_none_or(|u| u == b"default");
    if user_ok && pass == expected.as_bytes() {
        client.authenticated = true;
        Ok(())
    } else {
        Err(ProxyError::WrongPass)
    }
}

fn set_name(client: &mut ClientState, name: Bytes) -> Result<(), ProxyError> {
    if name.iter().any(|&b| b <= b' ' || b > b'~') {
        return Err(ProxyError::Other(
            "ERR Client names cannot contain spaces, newlines or special characters.".to_string(),
        ));
    }
    client.set_name(0, (!name.is_empty()).then_some(name));
    client.publish();
    Ok(())
}

/// `HELLO [protover [AUTH username password] [SETNAME clientname]]`.
fn hello(
    req: &Request,
    client: &mut ClientState,
    shared: &Shared,
) -> Result<(Frame, After), ProxyError> {
    let mut version = client.version;
    let mut i = 1;
    if let Some(v) = req.arg(1) {
        version = match v {
            b"2" => Version::Resp2,
            b"3" => Version::Resp3,
            _ if std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .is_none() =>
            {
                return Err(ProxyError::Other(
                    "ERR Protocol version is not an integer or out of range".to_string(),
                ))
            }
            _ => {
                return Err(ProxyError::Other(
                    "NOPROTO unsupported protocol version".to_string(),
                ))
            }
        };
        i = 2;
    }
    let mut name = None;
    while let Some(opt) = req.arg(i) {
        if opt.eq_ignore_ascii_case(b"auth") && req.len() > i + 2 {
            let user = req.arg(i + 1).unwrap_or_default();
            let pass = req.arg(i + 2).unwrap_or_default();
            authenticate(client, shared, Some(user), pass)?;
            i += 3;
        } else if opt.eq_ignore_ascii_case(b"setname") && req.len() > i + 1 {
            name = req.arg_bytes(i + 1);
            i += 2;
        } else {
            return Err(ProxyError::Other(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
    }
    if shared.config.password.is_some() && !client.authenticated {
        return Err(ProxyError::NoAuthHello);
    }
    if let Some(name) = name {
        set_name(client, name)?;
    }
    client.version = version;
    let fields = vec![
        (bulk("server"), bulk("redis")),
        (bulk("version"), bulk(shared.redis_version())),
        (
            bulk("proto"),
            Frame::Integer(if version == Version::Resp3 { 3 } else { 2 }),
        ),
        (bulk("id"), Frame::Integer(client.id as i64)),
        (bulk("mode"), bulk("standalone")),
        (bulk("role"), bulk("master")),
        (bulk("modules"), Frame::Array(Vec::new())),
    ];
    Ok((Frame::Map(fields), After::Continue))
}

/// CLIENT KILL addr (OK, or `No such client`) and CLIENT KILL [ID id] [TYPE type] [USER user]
/// [ADDR addr] [LADDR addr] [SKIPME yes|no] [MAXAGE secs] (how many were killed), over this
/// proxy's clients, with Redis's errors. TYPE pubsub is a client with subscriptions, normal
/// any other; no master or replica connects through a proxy. A killed client's session closes its connection
/// at once; a client that kills itself gets the reply first.
fn client_kill(
    req: &Request,
    client: &ClientState,
    shared: &Shared,
) -> Result<(Frame, After), ProxyError> {
    let text = |i: usize| String::from_utf8_lossy(req.arg(i).unwrap_or_default()).into_owned();
    let (mut id, mut addr, mut laddr, mut max_age) = (None, None, None, None);
    let mut nobody = false;
    // TYPE normal (Some(false)) or pubsub (Some(true)).
    let mut subscriber = None;
    let mut skip_me = true;
    if req.len() == 3 {
        addr = Some(text(2));
        skip_me = false; // the old form may kill its own connection
    } else {
        let mut i = 2;
        while i < req.len() {
            let (opt, value) = (req.arg(i).unwrap_or_default(), i + 1);
            if value >= req.len() {
                return Err(ProxyError::Syntax);
            }
            let is = |name: &[u8]| opt.eq_ignore_ascii_case(name);
            if is(b"id") {
                match text(value).parse::<i64>() {
                    Ok(n) if n >= 1 => id = Some(n as u64),
                    _ => {
                        return Err(ProxyError::Other(
                            "ERR client-id should be greater than 0".to_string(),
                        ))
                    }
                }
            } else if is(b"type") {
                let kind = text(value).to_ascii_lowercase();
                match kind.as_str() {
                    // No replication link ever comes through a proxy.
                    "master" | "replica" | "slave" => nobody = true,
                    "normal" => subscriber = Some(false),
                    "pubsub" => subscriber = Some(true),
                    _ => {
                        return Err(ProxyError::Other(format!(
                            "ERR Unknown client type '{}'",
                            text(value)
                        )))
                    }
                }
            } else if is(b"user") {
                if text(value) != "default" {
                    return Err(ProxyError::Other(format!(
                        "ERR No such user '{}'",
                        text(value)
                    )));
                }
            } else if is(b"addr") {
                addr = Some(text(value));
            } else if is(b"laddr") {
                laddr = Some(text(value));
            } else if is(b"skipme") {
                let v = req.arg(value).unwrap_or_default();
                if v.eq_ignore_ascii_case(b"yes") {
                    skip_me = true;
                } else if v.eq_ignore_ascii_case(b"no") {
                    skip_me = false;
                } else {
                    return Err(ProxyError::Syntax);
                }
            } else if is(b"maxage") {
                max_age = Some(
                    text(value)
                        .parse::<i64>()
                        .map_err(|_| ProxyError::NotAnInteger)?,
                );
            } else {
                return Err(ProxyError::Syntax);
            }
            i += 2;
        }
    }
    let mut killed = 0;
    let mut me = false;
    for c in shared.clients.snapshot() {
        let matches = !nobody
            && id.is_none_or(|id| c.id == id)
            && addr.as_ref().is_none_or(|a| c.peer.to_string() == *a)
            && laddr.as_ref().is_none_or(|a| c.local.to_string() == *a)
            && max_age.is_none_or(|age| c.connected.elapsed().as_secs() as i64 >= age)
            && subscriber.is_none_or(|s| c.remote.status.subscriber.load(Ordering::Relaxed) == s)
            && !(skip_me && c.id == client.id);
        if !matches {
            continue;
        }
        killed += 1;
        if c.id == client.id {
            me = true;
        } else {
            c.remote.inbox.control(Control::Kill);
        }
    }
    let after = if me { After::Close } else { After::Continue };
    if req.len() == 3 {
        return match killed {
            0 => Err(ProxyError::Other("ERR No such client".to_string())),
            _ => Ok((simple("OK"), after)),
        };
    }
    Ok((Frame::Integer(killed), after))
}

/// CLIENT UNBLOCK id [TIMEOUT|ERROR]: 1 if that client was blocked (its blocked commands are
/// then ended on their nodes: a timeout's reply, or `-UNBLOCKED`), else 0.
fn client_unblock(req: &Request, shared: &Shared) -> Result<(Frame, After), ProxyError> {
    let id =
        routing::keys::string2ll(req.arg(2).unwrap_or_default()).ok_or(ProxyError::NotAnInteger)?;
    let control = match req.arg(3) {
        None => Control::UnblockTimeout,
        Some(how) if how.eq_ignore_ascii_case(b"timeout") => Control::UnblockTimeout,
        Some(how) if how.eq_ignore_ascii_case(b"error") => Control::UnblockError,
        Some(_) => {
            return Err(ProxyError::Other(
                "ERR CLIENT UNBLOCK reason should be TIMEOUT or ERROR".to_string(),
            ))
        }
    };
    if req.len() > 4 {
        return Err(ProxyError::Syntax);
    }
    let target = u64::try_from(id)
        .ok()
        .and_then(|id| shared.clients.get(id))
        .filter(|c| c.remote.status.blocked.load(Ordering::Relaxed) > 0);
    let Some(target) = target else {
        return Ok((Frame::Integer(0), After::Continue));
    };
    target.remote.inbox.control(control);
    Ok((Frame::Integer(1), After::Continue))
}

/// One `CLIENT LIST` line for a client. `current` is the command being answered and its size
/// when the line is the caller's own (CLIENT LIST / CLIENT INFO: `cmd`, and `qbuf`, which on a
/// node still holds the command being run); other clients show their latest command, and how
/// long ago it came as `idle`.
pub fn client_line(client: &ClientInfo, shared: &Shared, current: Option<(&str, usize)>) -> String {
    let text = |i: usize| {
        client
            .names
            .as_ref()
            .and_then(|n| n[i].as_ref())
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default()
    };
    let (name, lib_name, lib_ver) = (text(0), text(1), text(2));
    let status = &client.remote.status;
    let qbuf = current.map_or(0, |(_, len)| len);
    let cmd = match current {
        Some((cmd, _)) => cmd,
        None => match status.last_command.load(Ordering::Relaxed) {
            0 => "NULL",
            n => shared.metrics.command(n - 1).name(),
        },
    };
    let idle = match current {
        Some(_) => 0,
        None => {
            let now = shared.started.elapsed().as_secs();
            now.saturating_sub(u64::from(status.last_active.load(Ordering::Relaxed)))
        }
    };
    // Redis's flags: O monitor, P subscriber, x in MULTI, b blocked, U Unix socket; N for
    // none of them.
    let multi = i64::from(status.multi.load(Ordering::Relaxed)) - 1;
    let (sub, psub, ssub) = status.subscription_counts();
    let mut flags = String::new();
    if shared.monitors.has(client.id) {
        flags.push('O');
    }
    if status.subscriber.load(Ordering::Relaxed) {
        flags.push('P');
    }
    if multi >= 0 {
        flags.push('x');
    }
    if status.blocked.load(Ordering::Relaxed) > 0 {
        flags.push('b');
    }
    if matches!(client.peer, ClientAddr::Unix(_)) {
        flags.push('U');
    }
    if flags.is_empty() {
        flags.push('N');
    }
    format!(
        "id={} addr={} laddr={} fd=0 name={} age={} idle={} flags={} db={} sub={} psub={} ssub={} multi={} qbuf={} qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}",
        client.id,
        client.peer,
        client.local,
        name,
        client.connected.elapsed().as_secs(),
        idle,
        flags,
        client.db,
        sub,
        psub,
        ssub,
        multi,
        qbuf,
        cmd,
        if client.version == Version::Resp3 { 3 } else { 2 },
        lib_name,
        lib_ver,
    )
}

/// The INFO reply: Redis's sections, shaped like a standalone node's, plus `# Proxy`.
/// `keyspace` holds the masters' `INFO keyspace` texts, summed here into one `# Keyspace`.
pub fn info(req: &Request, client: &ClientState, shared: &Shared, keyspace: &[Frame]) -> Frame {
    Frame::Verbatim {
        format: *b"txt",
        text: Bytes::from(info_text(req, client, shared, keyspace)),
    }
}

fn info_text(req: &Request, client: &ClientState, shared: &Shared, keyspace: &[Frame]) -> String {
    let wanted: Vec<String> = req
        .args()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = wanted.is_empty()
        || wanted
            .iter()
            .any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    // INFO all and INFO everything add commandstats (and latencystats) to the default ones.
    let all_sections = wanted.iter().any(|w| w == "all" || w == "everything");
    let uptime = shared.started.elapsed().as_secs();
    let mut out = String::new();
    let routes = shared.topology.routes();
    if want("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{}\r\nredis_git_sha1:00000000\r\nredis_git_dirty:0\r\nredis_build_id:0\r\nredis_mode:standalone\r\nos:{} {}\r\narch_bits:{}\r\nmonotonic_clock:POSIX clock_gettime\r\nmultiplexing_api:epoll\r\nprocess_id:{}\r\nprocess_supervised:no\r\nrun_id:{}\r\ntcp_port:{}\r\nserver_time_usec:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\nexecutable:{}\r\nconfig_file:\r\nslotway_version:{}\r\n\r\n",
            shared.redis_version(),
            std::env::consts::OS,
            std::env::consts::ARCH,
            usize::BITS,
            std::process::id(),
            shared.run_id,
            shared.config.listen.port(),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros(),
            uptime,
            uptime / 86_400,
            std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_default(),
            env!("CARGO_PKG_VERSION"),
        );
    }
    if want("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\ncluster_connections:0\r\nmaxclients:{}\r\nblocked_clients:{}\r\ntracking_clients:0\r\n\r\n",
            shared.stats.clients_open.load(Ordering::Relaxed),
            shared.config.max_clients,
            shared.stats.blocked.load(Ordering::Relaxed),
        );
    }
    let nodes = crate::info::merge(keyspace);
    let node_section = |out: &mut String, name: &str, title: &str, skip: &[&str]| {
        let _ = write!(out, "# {title}\r\n");
        for (field, value) in nodes.get(name).into_iter().flatten() {
            if !skip.contains(&field.as_str()) {
                let _ = write!(out, "{field}:{value}\r\n");
            }
        }
        out.push_str("\r\n");
    };
    if want("memory") {
        node_section(&mut out, "memory", "Memory", &[]);
    }
    if want("persistence") {
        node_section(&mut out, "persistence", "Persistence", &[]);
    }
    if want("stats") {
        // Connections, commands and bytes are the proxy's; the data counters (hits, misses,
        // expired and evicted keys, ...) the masters'.
        let own = [
            "total_connections_received",
            "total_commands_processed",
            "rejected_connections",
            "total_net_input_bytes",
            "total_net_output_bytes",
        ];
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_net_input_bytes:{}\r\ntotal_net_output_bytes:{}\r\n",
            shared.stats.clients_accepted.load(Ordering::Relaxed),
            shared.metrics.command_totals().0,
            shared.metrics.clients_rejected(),
            shared.metrics.received_bytes(),
            shared.metrics.sent_bytes(),
        );
        let mut rest = String::new();
        node_section(&mut rest, "stats", "", &own);
        out.push_str(rest.trim_start_matches("# \r\n"));
    }
    if want("replication") {
        let _ = write!(
            out,
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_failover_state:no-failover\r\nmaster_replid:{}\r\nmaster_replid2:0000000000000000000000000000000000000000\r\nmaster_repl_offset:0\r\nsecond_repl_offset:-1\r\nrepl_backlog_active:0\r\nrepl_backlog_size:1048576\r\nrepl_backlog_first_byte_offset:0\r\nrepl_backlog_histlen:0\r\n\r\n",
            shared.run_id
        );
    }
    if want("cpu") {
        let (sys, user) = crate::info::own_cpu();
        let _ = write!(
            out,
            "# CPU\r\nused_cpu_sys:{sys:.6}\r\nused_cpu_user:{user:.6}\r\nused_cpu_sys_children:0.000000\r\nused_cpu_user_children:0.000000\r\nused_cpu_sys_main_thread:{sys:.6}\r\nused_cpu_user_main_thread:{user:.6}\r\n\r\n"
        );
    }
    if want("modules") {
        out.push_str("# Modules\r\n\r\n");
    }
    // Not in the default sections, as in Redis: the proxy's own count per command (calls
    // and error replies; the time is the proxy's, request to reply).
    if all_sections || wanted.iter().any(|w| w == "commandstats") {
        out.push_str("# Commandstats\r\n");
        for (name, calls, usec, errors) in shared.metrics.command_stats() {
            let per_call = if calls > 0 {
                usec as f64 / calls as f64
            } else {
                0.0
            };
            let _ = write!(
                out,
                "cmdstat_{name}:calls={calls},usec={usec},usec_per_call={per_call:.2},rejected_calls=0,failed_calls={errors}\r\n"
            );
        }
        out.push_str("\r\n");
    }
    if want("errorstats") {
        node_section(&mut out, "errorstats", "Errorstats", &[]);
    }
    if want("cluster") {
        out.push_str("# Cluster\r\ncluster_enabled:0\r\n\r\n");
    }
    if want("keyspace") {
        node_section(&mut out, "keyspace", "Keyspace", &[]);
    }
    if want("proxy") {
        let map = routes.map();
        let _ = write!(
            out,
            "# Proxy\r\nslotway_version:{}\r\nclient_id:{}\r\ncluster_masters:{}\r\ncluster_replicas:{}\r\nslots_covered:{}\r\nslot_map_age_seconds:{:.1}\r\nslot_map_refreshes:{}\r\nredirects_moved:{}\r\nredirects_ask:{}\r\nbackend_retries:{}\r\n",
            env!("CARGO_PKG_VERSION"),
            client.id,
            map.shards().len(),
            map.shards().iter().map(|s| s.replicas.len()).sum::<usize>(),
            if map.is_complete() { "all" } else { "partial" },
            routes.age().as_secs_f64(),
            shared.topology.refresh_count(),
            shared.metrics.redirects_of(crate::metrics::RedirectKind::Moved),
            shared.metrics.redirects_of(crate::metrics::RedirectKind::Ask),
            shared.stats.retries.load(Ordering::Relaxed),
        );
        crate::metrics::write_info(&mut out, shared);
        for (i, shard) in map.shards().iter().enumerate() {
            let _ = write!(
                out,
                "master{}:addr={},replicas={}\r\n",
                i,
                shard.master,
                shard.replicas.join("|")
            );
        }
        out.push_str("\r\n");
    }
    while out.ends_with("\r\n\r\n") {
        out.truncate(out.len() - 2);
    }
    out
}

fn simple(s: &str) -> Frame {
    Frame::Simple(Bytes::copy_from_slice(s.as_bytes()))
}

fn bulk(s: impl Into<String>) -> Frame {
    Frame::Bulk(Bytes::from(s.into()))
}

fn bulk_arg(req: &Request, i: usize) -> Frame {
    Frame::Bulk(req.arg_bytes(i).unwrap_or_default())
}

//! Configuration: one YAML file, overridden by `SLOTWAY_*` environment variables and then by
//! command-line flags.
//!
//! Every default lives in [`Config::default`]. [`Config::validate`] refuses a bad configuration
//! with a message that names the field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What to do with a command that is not in the command table (a module's command, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownCommands {
    /// Treat the first argument as the key and route by its slot (keyless: any master).
    FirstKey,
    /// Send it to any master.
    AnyMaster,
    /// Refuse it with `ERR unknown command`.
    Refuse,
}

/// What EXEC does when the queued commands' keys span slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CrossSlotTransactions {
    /// One MULTI/EXEC per slot group, in parallel; each group is atomic, the whole is not.
    Split,
    /// Answer EXEC with an error and apply nothing.
    Refuse,
}

/// Built-in sets of co-location rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Celery and kombu key families (chords, bindings, unacked messages).
    Celery,
    /// Dramatiq's broker and rate-limiter keys (`dramatiq*` in one slot).
    Dramatiq,
}

/// How SELECT behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Databases {
    /// Only database 0, as in a cluster: SELECT n > 0 is an error.
    Single,
    /// SELECT n gives an isolated database whose keys are stored under a prefix.
    Namespaced,
}

/// A co-location rule: keys starting with `prefix` are stored with a hash tag so that the
/// family shares a slot. Give `tag` (the same tag for the whole family) or `tag_until` (the
/// tag is the part of the key after the prefix up to this separator).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColocateRule {
    /// The family's key prefix.
    pub prefix: String,
    /// One fixed tag for the family.
    #[serde(default)]
    pub tag: Option<String>,
    /// The tag is what follows the prefix up to this separator.
    #[serde(default)]
    pub tag_until: Option<String>,
    /// Also rename script arguments (EVAL/EVALSHA/FCALL ARGV) that start with `prefix`, for
    /// scripts that build key names from a prefix passed as an argument. Only with `tag`.
    #[serde(default)]
    pub script_args: bool,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to.
    pub listen: SocketAddr,
    /// A Unix socket clients on the same host can connect to as well (none: TCP only). A socket
    /// file left there by an earlier run is replaced; the file is removed at exit.
    pub unix_socket: Option<PathBuf>,
    /// The Unix socket's permissions, written as Redis's `unixsocketperm` (octal digits: 770);
    /// none: what the umask gives.
    pub unix_socket_perm: Option<u32>,
    /// Cluster nodes to learn the topology from (`host:port`); at least one.
    pub seeds: Vec<String>,
    /// Pooled connections per cluster node and protocol version, shared by all clients.
    pub backend_connections: usize,
    /// Timeout for connecting to a cluster node, in milliseconds.
    pub connect_timeout_ms: u64,
    /// A backend connection with requests in flight and no reply for this long is closed and
    /// its requests fail, in milliseconds (0 = never). Blocking commands are exempt.
    pub read_timeout_ms: u64,
    /// How long a request may wait for its slot's owner to come back (failover, CLUSTERDOWN,
    /// TRYAGAIN) before the client gets an error, in milliseconds.
    pub retry_timeout_ms: u64,
    /// Periodic slot map refresh, in milliseconds.
    pub refresh_interval_ms: u64,
    /// Most redirects (MOVED/ASK) followed for one request.
    pub max_redirects: u32,
    /// Runtime worker threads (0 = one per two cores, at least one).
    pub worker_threads: usize,
    /// Most requests one client may have in flight before the proxy stops reading from it.
    pub max_pipeline: usize,
    /// Routing rule for commands the table does not know.
    pub unknown_commands: UnknownCommands,
    /// Password clients must give with AUTH or HELLO (none: no authentication).
    pub password: Option<String>,
    /// Username and password the proxy uses towards the cluster nodes.
    pub backend_username: Option<String>,
    /// Password the proxy uses towards the cluster nodes.
    pub backend_password: Option<String>,
    /// TLS towards the cluster nodes.
    pub backend_tls: BackendTlsConfig,
    /// TLS towards clients: a listener of its own.
    pub tls: ClientTlsConfig,
    /// Built-in co-location rule sets (`celery`, `dramatiq`).
    pub presets: Vec<Preset>,
    /// Co-location rules of your own.
    pub colocate: Vec<ColocateRule>,
    /// How SELECT behaves: `single` (database 0 only) or `namespaced`.
    pub databases: Databases,
    /// Number of databases with `databases: namespaced` (SELECT 0 to this minus one).
    pub max_databases: u32,
    /// What EXEC does when the transaction's keys span slots.
    pub cross_slot_transactions: CrossSlotTransactions,
    /// Commands refused with an error, by command table name (`flushall`, `config|set`).
    pub deny_commands: Vec<String>,
    /// Protocol limits applied to client requests.
    pub limits: LimitsConfig,
    /// Log filter (`info`, `slotway=debug`, ...).
    pub log_level: String,
    /// Log as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// Address of the HTTP endpoint serving `/metrics`, `/healthz`, `/readyz` and `/topology`
    /// (`None`, `null` in YAML: no endpoint).
    pub metrics_listen: Option<SocketAddr>,
    /// Most client connections at once; past it a new client gets
    /// `-ERR max number of clients reached` and is closed (0 = no limit).
    pub max_clients: usize,
    /// A client with nothing in flight that sends nothing for this long is disconnected, in
    /// milliseconds (0 = never).
    pub client_idle_timeout_ms: u64,
    /// A client whose replies waiting to be written exceed this many bytes (it reads too
    /// slowly) is disconnected (0 = no limit).
    pub client_output_buffer_limit: usize,
    /// After SIGTERM or SIGINT, how long in-flight requests get to finish before the remaining
    /// connections are closed, in milliseconds.
    pub drain_timeout_ms: u64,
    /// The slow-request log: SLOWLOG GET / LEN / RESET and warning lines.
    pub slowlog: SlowlogConfig,
}

/// The slow-request log, measured from the moment a request is read until its reply is ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowlogConfig {
    /// Requests slower than this many microseconds are recorded (0: every request; negative:
    /// none). Blocking commands are never recorded.
    pub slower_than_us: i64,
    /// Entries kept for SLOWLOG GET (the oldest are dropped).
    pub max_len: usize,
    /// Also log each slow request at `warn` level (at most 10 lines per second).
    pub log: bool,
}

/// TLS towards the cluster nodes (see `transport`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendTlsConfig {
    /// Connect to the nodes with TLS (the slot map then uses their `tls-port`).
    pub enabled: bool,
    /// PEM file of the certificate authorities to trust (none: the system's).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate (chain) to present, for nodes that ask for one.
    pub cert_file: Option<PathBuf>,
    /// PEM file of that certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name to check every node's certificate against, instead of the node's host.
    pub server_name: Option<String>,
}

/// TLS towards clients (see `listener`): a second listener, for TLS clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// Address TLS clients connect to (none: no TLS listener).
    pub listen: Option<SocketAddr>,
    /// PEM file of the proxy's certificate (chain).
    pub cert_file: Option<PathBuf>,
    /// PEM file of its private key.
    pub key_file: Option<PathBuf>,
    /// PEM file of the CAs that sign client certificates; set, a client must present one.
    pub ca_file: Option<PathBuf>,
}

/// Protocol limits for client requests (see `protocol::Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest bulk string in a request, in bytes.
    pub max_bulk_len: usize,
    /// Most arguments in one request.
    pub max_args: usize,
    /// Longest inline request, in bytes.
    pub max_inline_len: usize,
}

/// Why a configuration was refused. The text names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML for this schema (serde names the field and line).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_yaml::Error,
    },
    /// The TLS settings cannot be used (a file is missing or holds no certificate...).
    #[error("invalid config: {0}")]
    Tls(#[from] crate::tls::TlsSetupError),
    /// A value is out of range.
    #[error("invalid config: {field}: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 6380)),
            unix_socket: None,
            unix_socket_perm: None,
            seeds: Vec::new(),
            backend_connections: 2,
            connect_timeout_ms: 1_000,
            read_timeout_ms: 10_000,
            retry_timeout_ms: 5_000,
            refresh_interval_ms: 10_000,
            max_redirects: 5,
            worker_threads: 0,
            max_pipeline: 4_096,
            unknown_commands: UnknownCommands::FirstKey,
            password: None,
            backend_username: None,
            backend_password: None,
            backend_tls: BackendTlsConfig::default(),
            tls: ClientTlsConfig::default(),
            deny_commands: Vec::new(),
            cross_slot_transactions: CrossSlotTransactions::Split,
            presets: Vec::new(),
            colocate: Vec::new(),
            databases: Databases::Single,
            max_databases: 16,
            limits: LimitsConfig::default(),
            log_level: "info".to_string(),
            log_json: false,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9121))),
            max_clients: 10_000,
            client_idle_timeout_ms: 0,
            client_output_buffer_limit: 64 << 20,
            drain_timeout_ms: 10_000,
            slowlog: SlowlogConfig::default(),
        }
    }
}

impl Default for SlowlogConfig {
    fn default() -> Self {
        SlowlogConfig {
            slower_than_us: 10_000,
            max_len: 128,
            log: true,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let l = protocol::Limits::default();
        LimitsConfig {
            max_bulk_len: l.max_bulk_len,
            max_args: l.max_array_len,
            max_inline_len: l.max_inline_len,
        }
    }
}

impl Config {
    /// Reads a YAML file. Missing fields take their defaults; unknown fields are refused.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// Parses YAML text.
    pub fn from_yaml(text: &str) -> Result<Config, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        serde_yaml::from_str(text)
    }

    /// Checks ranges and required fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, reason: &str| {
            Err(ConfigError::Invalid {
                field,
                reason: reason.to_string(),
            })
        };
        if self.seeds.is_empty() {
            return invalid("seeds", "at least one seed node (host:port) is required");
        }
        for seed in &self.seeds {
            if !is_host_port(seed) {
                return Err(ConfigError::Invalid {
                    field: "seeds",
                    reason: format!("{seed:?} is not host:port"),
                });
            }
        }
        if self.backend_connections == 0 || self.backend_connections > 64 {
            return invalid("backend_connections", "must be between 1 and 64");
        }
        if self.connect_timeout_ms == 0 {
            return invalid("connect_timeout_ms", "must be above 0");
        }
        if self.refresh_interval_ms < 100 {
            return invalid("refresh_interval_ms", "must be at least 100");
        }
        if self.max_pipeline == 0 {
            return invalid("max_pipeline", "must be above 0");
        }
        if self.limits.max_args == 0 {
            return invalid("limits.max_args", "must be above 0");
        }
        if self.limits.max_bulk_len == 0 {
            return invalid("limits.max_bulk_len", "must be above 0");
        }
        if self.limits.max_inline_len < 16 {
            return invalid("limits.max_inline_len", "must be at least 16");
        }
        for rule in &self.colocate {
            if rule.prefix.is_empty() || rule.prefix.contains('{') {
                return invalid("colocate.prefix", "must be non-empty and contain no '{'");
            }
            if rule.tag.is_some() == rule.tag_until.is_some() {
                return invalid(
                    "colocate",
                    "each rule needs exactly one of tag or tag_until",
                );
            }
            if rule
                .tag
                .as_deref()
                .is_some_and(|t| t.is_empty() || t.contains(['{', '}']))
            {
                return invalid("colocate.tag", "must be non-empty and contain no braces");
            }
            if rule.script_args && rule.tag.is_none() {
                return invalid(
                    "colocate.script_args",
                    "needs a fixed tag: with tag_until a prefix has no tag of its own",
                );
            }
        }
        if self.max_databases == 0 || self.max_databases > 1_000_000 {
            return invalid("max_databases", "must be between 1 and 1000000");
        }
        for name in &self.deny_commands {
            let mut parts = name.splitn(2, '|');
            let cmd = parts.next().unwrap_or_default();
            let known = routing::lookup(cmd.as_bytes(), parts.next().map(str::as_bytes))
                .is_some_and(|spec| spec.name == name.as_str());
            if !known {
                return Err(ConfigError::Invalid {
                    field: "deny_commands",
                    reason: format!("{name:?} is not a command (write names in lower case, subcommands as config|set)"),
                });
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            return invalid("log_level", "not a valid log filter");
        }
        if self
            .unix_socket_perm
            .is_some_and(|p| !crate::listener::valid_perm(p))
        {
            return invalid(
                "unix_socket_perm",
                "must be octal digits, at most 777 (like Redis's unixsocketperm 770)",
            );
        }
        if self.unix_socket_perm.is_some() && self.unix_socket.is_none() {
            return invalid("unix_socket_perm", "is set but unix_socket is not");
        }
        if self.metrics_listen == Some(self.listen) {
            return invalid("metrics_listen", "must differ from listen");
        }
        if self.client_output_buffer_limit != 0 && self.client_output_buffer_limit < 1024 {
            return invalid(
                "client_output_buffer_limit",
                "must be 0 (no limit) or at least 1024 bytes",
            );
        }
        if self.slowlog.max_len > 1_000_000 {
            return invalid("slowlog.max_len", "must be at most 1000000");
        }
        Ok(())
    }

    /// `drain_timeout_ms` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }

    /// `client_idle_timeout_ms` as a duration (`None` if 0).
    pub fn client_idle_timeout(&self) -> Option<Duration> {
        (self.client_idle_timeout_ms > 0)
            .then(|| Duration::from_millis(self.client_idle_timeout_ms))
    }

    /// The key naming rules in force: presets first, then the configured rules.
    pub fn key_names(&self) -> routing::names::KeyNames {
        use routing::names::{KeyNames, Rule, Tag};
        let mut rules = Vec::new();
        for preset in &self.presets {
            match preset {
                Preset::Celery => rules.extend(KeyNames::celery_rules()),
                Preset::Dramatiq => rules.extend(KeyNames::dramatiq_rules()),
            }
        }
        for r in &self.colocate {
            let tag = match (&r.tag, &r.tag_until) {
                (Some(t), _) => Tag::Fixed(t.clone()),
                (None, Some(sep)) => Tag::Until(sep.clone()),
                (None, None) => continue,
            };
            rules.push(Rule {
                prefix: r.prefix.clone(),
                tag,
                script_args: r.script_args,
            });
        }
        KeyNames::new(rules)
    }

    /// Worker threads to start: `worker_threads`, or one per two cores (at least one) when it
    /// is 0. Measured on 2 cores next to the cluster's own redis-server processes, one thread
    /// spends 15-25% less CPU per request than two (no cross-thread wake-ups) and serves more.
    /// With one, the runtime is tokio's current-thread scheduler (`main.rs`), which costs less
    /// again than a one-worker multi-thread runtime (no work-stealing machinery).
    pub fn runtime_threads(&self) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / 2).max(1)
    }

    /// The request limits as the codec takes them.
    pub fn protocol_limits(&self) -> protocol::Limits {
        protocol::Limits {
            max_bulk_len: self.limits.max_bulk_len,
            max_array_len: self.limits.max_args,
            max_depth: protocol::Limits::default().max_depth,
            max_inline_len: self.limits.max_inline_len,
        }
    }

    /// `connect_timeout_ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `read_timeout_ms` as a duration (`None` if 0).
    pub fn read_timeout(&self) -> Option<Duration> {
        (self.read_timeout_ms > 0).then(|| Duration::from_millis(self.read_timeout_ms))
    }

    /// `retry_timeout_ms` as a duration.
    pub fn retry_timeout(&self) -> Duration {
        Duration::from_millis(self.retry_timeout_ms)
    }

    /// `refresh_interval_ms` as a duration.
    pub fn refresh_interval(&self) -> Duration {
        Duration::from_millis(self.refresh_interval_ms)
    }
}

fn is_host_port(s: &str) -> bool {
    match s.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
    }

    #[test]
    fn fields_parse_and_unknown_fields_are_refused() {
        let c = Config::from_yaml(
            "listen: 0.0.0.0:7777\nseeds: [\"10.0.0.1:7000\"]\nlimits:\n  max_args: 10\nunknown_commands: any-master\n",
        )
        .unwrap();
        assert_eq!(c.listen.port(), 7777);
        assert_eq!(c.limits.max_args, 10);
        assert_eq!(c.unknown_commands, UnknownCommands::AnyMaster);
        let err = Config::from_yaml("listne: 1").unwrap_err().to_string();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn validate_names_the_field() {
        let mut c = Config::default();
        assert!(c.validate().unwrap_err().to_string().contains("seeds"));
        c.seeds = vec!["localhost".into()];
        assert!(c.validate().unwrap_err().to_string().contains("seeds"));
        c.seeds = vec!["localhost:7000".into()];
        c.validate().unwrap();
        c.backend_connections = 0;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("backend_connections"), "{err}");
    }

    #[test]
    fn script_args_need_a_fixed_tag() {
        let parse = |yaml: &str| Config::from_yaml(yaml).unwrap();
        let base = "seeds: [\"127.0.0.1:7000\"]\ncolocate:\n  - prefix: \"job:\"\n";
        let fixed = parse(&format!("{base}    tag: jobs\n    script_args: true\n"));
        fixed.validate().unwrap();
        let rules = fixed.key_names();
        assert_eq!(
            rules.store_script_arg(0, b"job:"),
            Some(b"{jobs}job:".to_vec())
        );
        let until = parse(&format!(
            "{base}    tag_until: \":\"\n    script_args: true\n"
        ));
        let err = until.validate().unwrap_err().to_string();
        assert!(err.contains("colocate.script_args"), "{err}");
    }
}

//! The command line: flags override `SLOTWAY_*` environment variables, which override the YAML
//! file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{
    Config, ConfigError, CrossSlotTransactions, Databases, Preset, UnknownCommands,
};

/// Slotway: one Redis endpoint in front of a Redis Cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "slotway", version, about)]
pub struct Cli {
    /// YAML configuration file.
    #[arg(long, short = 'c', env = "SLOTWAY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate this configuration file and exit.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
    /// Address clients connect to [default: 127.0.0.1:6380].
    #[arg(long, env = "SLOTWAY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A Unix socket to accept clients on as well (a sidecar's local clients).
    #[arg(long, env = "SLOTWAY_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,
    /// The Unix socket's permissions, octal digits as in Redis's `unixsocketperm` (770).
    #[arg(long, env = "SLOTWAY_UNIX_SOCKET_PERM")]
    pub unix_socket_perm: Option<u32>,
    /// A cluster node to learn the topology from (host:port); repeat for more.
    #[arg(long = "seed", env = "SLOTWAY_SEEDS", value_delimiter = ',')]
    pub seeds: Vec<String>,
    /// Pooled connections per cluster node [default: 2].
    #[arg(long, env = "SLOTWAY_BACKEND_CONNECTIONS")]
    pub backend_connections: Option<usize>,
    /// Connect timeout towards cluster nodes, in ms [default: 1000].
    #[arg(long, env = "SLOTWAY_CONNECT_TIMEOUT_MS")]
    pub connect_timeout_ms: Option<u64>,
    /// Read timeout towards cluster nodes, in ms; 0 = none [default: 10000].
    #[arg(long, env = "SLOTWAY_READ_TIMEOUT_MS")]
    pub read_timeout_ms: Option<u64>,
    /// How long a request may wait for a failover or CLUSTERDOWN to end, in ms [default: 5000].
    #[arg(long, env = "SLOTWAY_RETRY_TIMEOUT_MS")]
    pub retry_timeout_ms: Option<u64>,
    /// Runtime worker threads; 0 = one per two cores, at least one [default: 0].
    #[arg(long, env = "SLOTWAY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Routing of commands the table does not know [default: first-key].
    #[arg(long, env = "SLOTWAY_UNKNOWN_COMMANDS", value_enum)]
    pub unknown_commands: Option<UnknownCommands>,
    /// EXEC over keys of several slots: `split` (one MULTI/EXEC per slot) or `refuse`
    /// [default: split].
    #[arg(long, env = "SLOTWAY_CROSS_SLOT_TRANSACTIONS", value_enum)]
    pub cross_slot_transactions: Option<CrossSlotTransactions>,
    /// A built-in set of co-location rules; repeat for more (`celery`, `dramatiq`).
    #[arg(
        long = "preset",
        env = "SLOTWAY_PRESETS",
        value_delimiter = ',',
        value_enum
    )]
    pub presets: Vec<Preset>,
    /// How SELECT behaves: `single` (database 0 only) or `namespaced` [default: single].
    #[arg(long, env = "SLOTWAY_DATABASES", value_enum)]
    pub databases: Option<Databases>,
    /// Password clients must give with AUTH or HELLO.
    #[arg(long, env = "SLOTWAY_PASSWORD")]
    pub password: Option<String>,
    /// Password towards the cluster nodes.
    #[arg(long, env = "SLOTWAY_BACKEND_PASSWORD")]
    pub backend_password: Option<String>,
    /// Also accept TLS clients on this address.
    #[arg(long, env = "SLOTWAY_TLS_LISTEN")]
    pub tls_listen: Option<SocketAddr>,
    /// PEM file of the certificate TLS clients are shown.
    #[arg(long, env = "SLOTWAY_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM file of its private key.
    #[arg(long, env = "SLOTWAY_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM file of the CAs that sign client certificates; TLS clients must then present one.
    #[arg(long, env = "SLOTWAY_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// Connect to the cluster nodes with TLS.
    #[arg(long, env = "SLOTWAY_BACKEND_TLS")]
    pub backend_tls: bool,
    /// PEM file of the CAs that sign the nodes' certificates [default: the system's].
    #[arg(long, env = "SLOTWAY_BACKEND_TLS_CA_FILE")]
    pub backend_tls_ca_file: Option<PathBuf>,
    /// PEM file of the client certificate to present to the nodes.
    #[arg(long, env = "SLOTWAY_BACKEND_TLS_CERT_FILE")]
    pub backend_tls_cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[arg(long, env = "SLOTWAY_BACKEND_TLS_KEY_FILE")]
    pub backend_tls_key_file: Option<PathBuf>,
    /// Check every node's certificate for this name instead of the node's host.
    #[arg(long, env = "SLOTWAY_BACKEND_TLS_SERVER_NAME")]
    pub backend_tls_server_name: Option<String>,
    /// Log filter, such as `info` or `slotway=debug` [default: info].
    #[arg(long, env = "SLOTWAY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log JSON lines.
    #[arg(long, env = "SLOTWAY_LOG_JSON")]
    pub log_json: bool,
    /// HTTP endpoint for /metrics, /healthz, /readyz and /topology, or `off`
    /// [default: 127.0.0.1:9121].
    #[arg(long, env = "SLOTWAY_METRICS_LISTEN", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<MetricsListen>,
    /// Most client connections at once; 0 = no limit [default: 10000].
    #[arg(long, env = "SLOTWAY_MAX_CLIENTS")]
    pub max_clients: Option<usize>,
    /// Disconnect clients idle for this long, in ms; 0 = never [default: 0].
    #[arg(long, env = "SLOTWAY_CLIENT_IDLE_TIMEOUT_MS")]
    pub client_idle_timeout_ms: Option<u64>,
    /// Disconnect a client whose unwritten replies exceed this many bytes; 0 = no limit
    /// [default: 67108864].
    #[arg(long, env = "SLOTWAY_CLIENT_OUTPUT_BUFFER_LIMIT")]
    pub client_output_buffer_limit: Option<usize>,
    /// After SIGTERM/SIGINT, how long in-flight requests get to finish, in ms [default: 10000].
    #[arg(long, env = "SLOTWAY_DRAIN_TIMEOUT_MS")]
    pub drain_timeout_ms: Option<u64>,
    /// Record requests slower than this in SLOWLOG, in µs; 0 = all, negative = none
    /// [default: 10000].
    #[arg(
        long,
        env = "SLOTWAY_SLOWLOG_SLOWER_THAN_US",
        allow_negative_numbers = true
    )]
    pub slowlog_slower_than_us: Option<i64>,
    /// Periodic slot map refresh, in ms [default: 10000].
    #[arg(long, env = "SLOTWAY_REFRESH_INTERVAL_MS")]
    pub refresh_interval_ms: Option<u64>,
    /// Requests one client may have in flight before the proxy stops reading from it
    /// [default: 4096].
    #[arg(long, env = "SLOTWAY_MAX_PIPELINE")]
    pub max_pipeline: Option<usize>,
}

/// `--metrics-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

fn parse_metrics_listen(s: &str) -> Result<MetricsListen, String> {
    match s {
        "off" | "none" | "" => Ok(MetricsListen(None)),
        _ => s
            .parse()
            .map(|a| MetricsListen(Some(a)))
            .map_err(|e| format!("{e} (expected host:port or `off`)")),
    }
}

impl Cli {
    /// The configuration: file (if any), then environment and flags on top; validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let file = self.check_config.as_ref().or(self.config.as_ref());
        let mut c = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = &self.unix_socket {
            c.unix_socket = Some(v.clone());
        }
        if let Some(v) = self.unix_socket_perm {
            c.unix_socket_perm = Some(v);
        }
        if !self.seeds.is_empty() {
            c.seeds = self.seeds.clone();
        }
        if let Some(v) = self.backend_connections {
            c.backend_connections = v;
        }
        if let Some(v) = self.connect_timeout_ms {
            c.connect_timeout_ms = v;
        }
        if let Some(v) = self.read_timeout_ms {
            c.read_timeout_ms = v;
        }
        if let Some(v) = self.retry_timeout_ms {
            c.retry_timeout_ms = v;
        }
        if let Some(v) = self.worker_threads {
            c.worker_threads = v;
        }
        if let Some(v) = self.unknown_commands {
            c.unknown_commands = v;
        }
        if !self.presets.is_empty() {
            c.presets = self.presets.clone();
        }
        if let Some(v) = self.databases {
            c.databases = v;
        }
        if let Some(v) = self.cross_slot_transactions {
            c.cross_slot_transactions = v;
        }
        if let Some(v) = &self.password {
            c.password = Some(v.clone());
        }
        if let Some(v) = &self.backend_password {
            c.backend_password = Some(v.clone());
        }
        if let Some(v) = self.tls_listen {
            c.tls.listen = Some(v);
        }
        if let Some(v) = &self.tls_cert_file {
            c.tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_key_file {
            c.tls.key_file = Some(v.clone());
        }
        if let Some(v) = &self.tls_ca_file {
            c.tls.ca_file = Some(v.clone());
        }
        if self.backend_tls {
            c.backend_tls.enabled = true;
        }
        if let Some(v) = &self.backend_tls_ca_file {
            c.backend_tls.ca_file = Some(v.clone());
        }
        if let Some(v) = &self.backend_tls_cert_file {
            c.backend_tls.cert_file = Some(v.clone());
        }
        if let Some(v) = &self.backend_tls_key_file {
            c.backend_tls.key_file = Some(v.clone());
        }
        if let Some(v) = &self.backend_tls_server_name {
            c.backend_tls.server_name = Some(v.clone());
        }
        if let Some(v) = &self.log_level {
            c.log_level = v.clone();
        }
        if self.log_json {
            c.log_json = true;
        }
        if let Some(MetricsListen(v)) = self.metrics_listen {
            c.metrics_listen = v;
        }
        if let Some(v) = self.max_clients {
            c.max_clients = v;
        }
        if let Some(v) = self.client_idle_timeout_ms {
            c.client_idle_timeout_ms = v;
        }
        if let Some(v) = self.client_output_buffer_limit {
            c.client_output_buffer_limit = v;
        }
        if let Some(v) = self.drain_timeout_ms {
            c.drain_timeout_ms = v;
        }
        if let Some(v) = self.slowlog_slower_than_us {
            c.slowlog.slower_than_us = v;
        }
        if let Some(v) = self.refresh_interval_ms {
            c.refresh_interval_ms = v;
        }
        if let Some(v) = self.max_pipeline {
            c.max_pipeline = v;
        }
        c.validate()?;
        // The certificate files are read now, so that a bad one stops the start, fails
        // --check-config and is refused by a reload, naming the field.
        crate::transport::Connector::from_config(&c.backend_tls)?;
        if c.tls.listen.is_some() {
            crate::tls::server_config(&c.tls)?;
        }
        Ok(c)
    }
}

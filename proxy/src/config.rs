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

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address clients connect to.
    pub listen: SocketAddr,
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
    /// Runtime worker threads (0 = one per core).
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
            deny_commands: Vec::new(),
            cross_slot_transactions: CrossSlotTransactions::Split,
            limits: LimitsConfig::default(),
            log_level: "info".to_string(),
            log_json: false,
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
        Ok(())
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
}

//! The command line: flags override `SLOTWAY_*` environment variables, which override the YAML
//! file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError, CrossSlotTransactions, UnknownCommands};

/// Slotway: one Redis endpoint in front of a Redis Cluster.
#[derive(Debug, Parser)]
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
    /// Runtime worker threads; 0 = one per core [default: 0].
    #[arg(long, env = "SLOTWAY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Routing of commands the table does not know [default: first-key].
    #[arg(long, env = "SLOTWAY_UNKNOWN_COMMANDS", value_enum)]
    pub unknown_commands: Option<UnknownCommands>,
    /// EXEC over keys of several slots: `split` (one MULTI/EXEC per slot) or `refuse`
    /// [default: split].
    #[arg(long, env = "SLOTWAY_CROSS_SLOT_TRANSACTIONS", value_enum)]
    pub cross_slot_transactions: Option<CrossSlotTransactions>,
    /// Password clients must give with AUTH or HELLO.
    #[arg(long, env = "SLOTWAY_PASSWORD")]
    pub password: Option<String>,
    /// Password towards the cluster nodes.
    #[arg(long, env = "SLOTWAY_BACKEND_PASSWORD")]
    pub backend_password: Option<String>,
    /// Log filter, such as `info` or `slotway=debug` [default: info].
    #[arg(long, env = "SLOTWAY_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log JSON lines.
    #[arg(long, env = "SLOTWAY_LOG_JSON")]
    pub log_json: bool,
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
        if let Some(v) = self.cross_slot_transactions {
            c.cross_slot_transactions = v;
        }
        if let Some(v) = &self.password {
            c.password = Some(v.clone());
        }
        if let Some(v) = &self.backend_password {
            c.backend_password = Some(v.clone());
        }
        if let Some(v) = &self.log_level {
            c.log_level = v.clone();
        }
        if self.log_json {
            c.log_json = true;
        }
        c.validate()?;
        Ok(c)
    }
}

//! The configuration in force ([`LiveConfig`]) and its reload on SIGHUP.
//!
//! On SIGHUP the configuration is loaded again the way it was at start (file, then `SLOTWAY_*`
//! environment, then flags) and validated. An invalid one is refused and the current one kept.
//! Otherwise every setting that can change without dropping a client is applied, and the log
//! says what changed and what needs a restart:
//!
//! | applied at once | to client connections opened after the reload | needs a restart |
//! |---|---|---|
//! | log level, timeouts, passwords, the TLS listener's certificate files (read again on every reload; clients already connected keep their session), `max_clients`, `deny_commands`, slow log, seeds, backend settings and `backend_tls` (pools are replaced; requests in flight finish on the old connections; the TLS files are read again on every reload, so rotated certificates replace the pools too) | `limits`, `max_pipeline`, a lower `client_output_buffer_limit`, a `client_idle_timeout_ms` set from 0 | `listen`, `unix_socket`, `unix_socket_perm`, `metrics_listen`, `worker_threads`, `log_json`, `tls.listen`, and key naming: `presets`, `colocate`, `databases`, `max_databases` |
//!
//! Clients already authenticated stay so when `password` changes, as with Redis. A reload whose
//! TLS files cannot be read or used is refused as a whole.

use std::ops::Deref;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::server::Shared;

/// Settings only a restart can change: the reload keeps their current values.
const RESTART_ONLY: &[&str] = &[
    "listen",
    "unix_socket",
    "unix_socket_perm",
    "metrics_listen",
    "worker_threads",
    "log_json",
    // Key naming: where keys are stored; computed once at start.
    "presets",
    "colocate",
    "databases",
    "max_databases",
];
/// Settings whose values are never logged.
const SECRET: &[&str] = &["password", "backend_password"];

/// Where a reload gets the new configuration from (the same sources as at start).
pub type Source = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// The configuration in force, replaced as a whole by a reload.
///
/// It dereferences to `&Config`, so readers write `shared.config.max_clients` and pay one
/// lock-free load. To hand out plain references without a guard, each configuration is leaked
/// when it is installed: reloads are rare operator actions and a `Config` is a few hundred
/// bytes, so this bounded leak is accepted.
#[derive(Debug)]
pub struct LiveConfig {
    current: ArcSwap<&'static Config>,
}

/// What a reload changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// `field: old → new` of the settings applied.
    pub applied: Vec<String>,
    /// `field: old → new` of the settings that need a restart (not applied).
    pub need_restart: Vec<String>,
}

// === impl LiveConfig ===

impl LiveConfig {
    /// Installs the first configuration.
    pub fn new(config: Config) -> LiveConfig {
        LiveConfig {
            current: ArcSwap::from_pointee(Box::leak(Box::new(config))),
        }
    }

    /// The configuration in force now.
    pub fn get(&self) -> &'static Config {
        **self.current.load()
    }

    fn store(&self, config: Config) {
        self.current.store(Arc::new(Box::leak(Box::new(config))));
    }
}

impl Deref for LiveConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        self.get()
    }
}

/// Reloads on every SIGHUP until the process ends. Must be called inside the runtime.
pub fn watch(shared: Arc<Shared>, source: Source) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler: configuration reload disabled");
        return;
    };
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            match source() {
                Ok(config) => {
                    if let Err(e) = apply(&shared, config) {
                        shared.metrics.reloaded(false);
                        tracing::error!(error = %e, "configuration reload failed; keeping the current configuration");
                    }
                }
                Err(e) => {
                    shared.metrics.reloaded(false);
                    tracing::error!(error = %e, "configuration reload failed; keeping the current configuration");
                }
            }
        }
    });
}

/// Installs `new` (already validated): applies what can change now, keeps the current values
/// of what needs a restart, logs both, and returns them.
///
/// # Errors
/// The TLS files cannot be read (again) or used: nothing is applied.
pub fn apply(shared: &Shared, mut new: Config) -> Result<Report, String> {
    // Read first, so that nothing is applied if they are unusable. The files are read again
    // even if the settings are the same: rotated certificates replace the pools.
    let connector =
        crate::transport::Connector::from_config(&new.backend_tls).map_err(|e| e.to_string())?;
    let old = shared.config.get();
    let mut report = Report {
        need_restart: restart_needed(old, &new),
        ..Report::default()
    };
    // The TLS listener stays where it is; its certificate files are read again.
    if new.tls.listen != old.tls.listen {
        report.need_restart.push(describe(
            "tls.listen",
            &format!("{:?}", old.tls.listen),
            &format!("{:?}", new.tls.listen),
        ));
        new.tls.listen = old.tls.listen;
    }
    let server_tls = match (&shared.client_tls, new.tls.listen) {
        (Some(_), Some(_)) => Some(crate::tls::server_config(&new.tls).map_err(|e| e.to_string())?),
        _ => None,
    };
    new.listen = old.listen;
    new.unix_socket.clone_from(&old.unix_socket);
    new.unix_socket_perm = old.unix_socket_perm;
    new.metrics_listen = old.metrics_listen;
    new.worker_threads = old.worker_threads;
    new.log_json = old.log_json;
    new.presets.clone_from(&old.presets);
    new.colocate.clone_from(&old.colocate);
    new.databases = old.databases;
    new.max_databases = old.max_databases;
    let old_fields = fields(old);
    let new_fields = fields(&new);
    for (name, value) in &new_fields {
        let before = old_fields
            .iter()
            .find(|(n, _)| n == name)
            .map_or("", |(_, v)| v.as_str());
        if before != value {
            report.applied.push(describe(name, before, value));
        }
    }
    if new.log_level != old.log_level {
        if let Err(e) = crate::logging::set_filter(&new.log_level) {
            tracing::warn!(error = %e, "log level not changed");
        }
    }
    shared.slowlog.configure(&new.slowlog);
    if let (Some(acceptor), Some(server)) = (&shared.client_tls, server_tls) {
        acceptor.replace(server);
    }
    let pools_replaced = shared.topology.reconfigure(&new, connector);
    if pools_replaced && report.applied.is_empty() {
        // Same settings, new contents: rotated certificates.
        report
            .applied
            .push("backend_tls: certificate files changed".to_string());
    }
    shared.config.store(new);
    shared.metrics.reloaded(true);
    if report.applied.is_empty() {
        tracing::info!("configuration reloaded: nothing changed");
    } else {
        tracing::info!(
            changed = %report.applied.join("; "),
            backend_pools_replaced = pools_replaced,
            "configuration reloaded"
        );
    }
    if !report.need_restart.is_empty() {
        tracing::warn!(
            settings = %report.need_restart.join("; "),
            "configuration changes that need a restart to take effect (not applied)"
        );
    }
    Ok(report)
}

/// Compares the restart-only settings of `running` and `file`; returns `field: old → new` for
/// each that differs.
pub fn restart_needed(running: &Config, file: &Config) -> Vec<String> {
    let a = fields(running);
    let b = fields(file);
    RESTART_ONLY
        .iter()
        .filter_map(|name| {
            let old = a.iter().find(|(n, _)| n == name).map(|(_, v)| v)?;
            let new = b.iter().find(|(n, _)| n == name).map(|(_, v)| v)?;
            (old != new).then(|| describe(name, old, new))
        })
        .collect()
}

fn describe(name: &str, old: &str, new: &str) -> String {
    if SECRET.contains(&name) {
        format!("{name} (changed)")
    } else {
        format!("{name}: {old} → {new}")
    }
}

/// The top-level fields of `c` with their values, from its `Debug` form, so that every field,
/// including ones added later, is compared without a list to keep up to date.
fn fields(c: &Config) -> Vec<(String, String)> {
    let text = format!("{c:#?}");
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines().skip(1) {
        let Some(rest) = line.strip_prefix("    ") else {
            continue;
        };
        let starts_field = rest.starts_with(|ch: char| ch.is_ascii_lowercase());
        if starts_field {
            if let Some((name, value)) = rest.split_once(": ") {
                out.push((name.to_string(), value.trim_end_matches(',').to_string()));
                continue;
            }
        }
        if let Some((_, value)) = out.last_mut() {
            let part = line.trim().trim_end_matches(',');
            if !value.ends_with(['[', '{', '(']) {
                value.push(' ');
            }
            value.push_str(part);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_cover_every_top_level_setting() {
        let c = Config::default();
        let f = fields(&c);
        let names: Vec<&str> = f.iter().map(|(n, _)| n.as_str()).collect();
        for name in [
            "listen",
            "seeds",
            "limits",
            "log_level",
            "slowlog",
            "max_clients",
        ] {
            assert!(names.contains(&name), "{name} missing from {names:?}");
        }
        let limits = &f.iter().find(|(n, _)| n == "limits").unwrap().1;
        assert!(limits.contains("max_args"), "{limits}");
    }

    #[test]
    fn restart_only_settings_are_reported_and_secrets_hidden() {
        let a = Config::default();
        let mut b = a.clone();
        b.listen = "127.0.0.1:7777".parse().unwrap();
        b.password = Some("hunter2".into());
        let changes = restart_needed(&a, &b);
        assert_eq!(changes, vec!["listen: 127.0.0.1:6380 → 127.0.0.1:7777"]);
        assert_eq!(
            describe("password", "None", "Some(\"hunter2\")"),
            "password (changed)"
        );
    }

    /// `deploy/slotway.yaml` is the reference: it must name every option (including ones added
    /// later) and give each its default value.
    #[test]
    fn reference_config_documents_every_option_at_its_default() {
        let text = include_str!("../../deploy/slotway.yaml");
        let parsed = Config::from_yaml(text).expect("deploy/slotway.yaml parses");
        parsed.validate().expect("deploy/slotway.yaml is valid");
        let expected = Config {
            seeds: parsed.seeds.clone(),
            ..Config::default()
        };
        assert_eq!(
            parsed, expected,
            "deploy/slotway.yaml must show the defaults"
        );
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, _)| k))
            .filter(|k| !k.starts_with('#'))
            .map(str::trim)
            .collect();
        for (name, value) in fields(&Config::default()) {
            assert!(
                keys.contains(&name.as_str()),
                "deploy/slotway.yaml lacks {name}"
            );
            // Nested options: each of their fields too.
            if let Some(inner) = value.split_once('{').map(|(_, rest)| rest) {
                for field in inner.split_whitespace().filter_map(|t| t.strip_suffix(':')) {
                    assert!(
                        keys.contains(&field),
                        "deploy/slotway.yaml lacks {name}.{field}"
                    );
                }
            }
        }
    }

    #[test]
    fn live_config_derefs_to_the_latest() {
        let live = LiveConfig::new(Config::default());
        let before = live.get();
        live.store(Config {
            max_clients: 5,
            ..Config::default()
        });
        assert_eq!(live.max_clients, 5);
        assert_eq!(before.max_clients, 10_000);
    }
}

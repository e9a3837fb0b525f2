//! Log output with `tracing`: human-readable by default, JSON lines with `log_json`, on stderr.
//! The filter can be replaced while running ([`set_filter`], used by the SIGHUP reload).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

type SetFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// Replaces the filter of the subscriber installed by [`init`].
static RELOAD: OnceLock<SetFilter> = OnceLock::new();

/// Installs the global subscriber. `filter` was checked by `Config::validate`.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    if json {
        let builder = builder
            .json()
            .with_env_filter(filter)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = RELOAD.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.init();
    } else {
        let builder = builder.with_env_filter(filter).with_filter_reloading();
        let handle = builder.reload_handle();
        let _ = RELOAD.set(Box::new(move |f| {
            handle.reload(f).map_err(|e| e.to_string())
        }));
        builder.init();
    }
}

/// Replaces the log filter (`info`, `slotway=debug`, ...).
///
/// # Errors
/// If `filter` is not a valid filter, or [`init`] was not called (a library user installed
/// their own subscriber).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
    let reload = RELOAD
        .get()
        .ok_or("the log subscriber was not installed by slotway")?;
    reload(filter)
}

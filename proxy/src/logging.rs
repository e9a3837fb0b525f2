//! Log output with `tracing`: human-readable by default, JSON lines with `log_json`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `filter` was checked by `Config::validate`.
pub fn init(filter: &str, json: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

//! Observability: the invocation [`Report`], the JSON log set-up, and CloudWatch EMF metrics.
//!
//! Logs are JSON lines through `tracing`, one line per decision (`task`, `cluster`, `service`,
//! `cloudmap_service`, `instance`, `old_state`, `new_state`, `version`, `stop_code` when the
//! event carries one, `action`, `wrote`), one line per rejected payload or handled error, one
//! line per invocation. Metrics are EMF lines on stdout (see [`emf`]).

pub mod emf;
mod report;

pub use report::{DecisionRecord, InvocationKind, OmittedAttribute, Report};

use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber on stdout with `filter` (e.g. `info`, or
/// `cloudmap_sync=debug,info`). An unusable filter falls back to `info`, and says so.
pub fn init_json_logs(filter: &str) {
    let (filter, bad) = match EnvFilter::try_new(filter) {
        Ok(filter) => (filter, None),
        Err(error) => (EnvFilter::new("info"), Some(error.to_string())),
    };
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
    if let Some(error) = bad {
        tracing::warn!(error, "unusable log filter; logging at info");
    }
}

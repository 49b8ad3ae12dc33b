//! The conditions of the machine a run was made on, for the report.

use std::collections::HashMap;

use serde::Serialize;

/// Conditions of the machine, for the report.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) load_average_before: String,
    pub(crate) load_average_after: String,
    pub(crate) client_cpu: Option<usize>,
    pub(crate) other_cpus: Option<String>,
    pub(crate) build: &'static str,
}

/// The first three fields of `/proc/loadavg`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The CPU model from `/proc/cpuinfo`.
pub(crate) fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let by_key: HashMap<&str, &str> = info
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    by_key
        .get("model name")
        .copied()
        .unwrap_or("unknown")
        .to_owned()
}

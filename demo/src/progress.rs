//! Progress lines on standard error, so standard output stays for the report (or its JSON).

use std::io::Write;
use std::time::Instant;

/// Prints `[ 12.3s] message` lines.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    started: Instant,
}

impl Progress {
    /// Starts the clock.
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    /// Prints one line: the seconds since [`Progress::new`] and `message`.
    pub fn step(&self, message: impl std::fmt::Display) {
        let seconds = self.started.elapsed().as_secs_f64();
        // Progress is best effort: a closed stderr must not stop the run.
        let _ = writeln!(std::io::stderr(), "[{seconds:5.1}s] {message}");
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

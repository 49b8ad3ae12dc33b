//! The one error type of the demo library.

use std::time::Duration;

/// What can go wrong setting up or driving the demo fleet.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The local AWS stack failed.
    #[error(transparent)]
    Stack(#[from] local_stack::Error),
    /// A program could not be started or ended badly.
    #[error("{what}: {detail}")]
    Process {
        /// What was being done.
        what: String,
        /// What went wrong.
        detail: String,
    },
    /// Something took longer than it may.
    #[error("{what} did not happen within {waited:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },
    /// Reading or writing a file or a pipe failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A closure for `map_err` that wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    pub(crate) fn process(what: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::Process {
            what: what.into(),
            detail: detail.to_string(),
        }
    }
}

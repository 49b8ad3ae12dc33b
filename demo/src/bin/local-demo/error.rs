use std::time::Duration;

/// Why the local run could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The local AWS stack failed.
    #[error(transparent)]
    Stack(#[from] local_stack::Error),
    /// An AWS call against the local stack failed.
    #[error("{operation} failed")]
    Aws {
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A program could not be started or ended badly.
    #[error("{what}: {detail}")]
    Process { what: String, detail: String },
    /// Something took longer than it may.
    #[error("{what} did not happen within {waited:?}")]
    Timeout { what: String, waited: Duration },
    /// The Lambda answered an invocation with an error.
    #[error("the sync Lambda failed the {event} event: {detail}")]
    Lambda { event: String, detail: String },
    /// The balancer could not be built.
    #[error("building the balancer failed")]
    Balancer(#[from] cloudmap_balancer::Error),
    /// Writing an event file or reading a program's output failed.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl DemoError {
    pub(crate) fn aws<E>(operation: &'static str) -> impl FnOnce(E) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |source| Self::Aws {
            operation,
            source: Box::new(source),
        }
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

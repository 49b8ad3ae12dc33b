/// Why the local run could not go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The local AWS stack failed.
    #[error(transparent)]
    Stack(#[from] local_stack::Error),
    /// The demo fleet (its stack or a task's process) failed.
    #[error(transparent)]
    Fleet(#[from] demo::Error),
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
    /// The Lambda answered an invocation with an error.
    #[error("the sync Lambda failed the {event} event: {detail}")]
    Lambda { event: String, detail: String },
    /// The balancer could not be built.
    #[error("building the balancer failed")]
    Balancer(#[from] cloudmap_balancer::Error),
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
}

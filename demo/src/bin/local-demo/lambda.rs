//! The real sync Lambda under cargo-lambda's emulator ([`local_stack::lambda`]): `cargo lambda
//! watch` runs the function binary behind a local Lambda runtime API, `cargo lambda invoke
//! --data-file` sends it events.

use std::path::Path;

use local_stack::lambda::{self, Function};
use serde_json::Value;

use crate::error::DemoError;

/// The function's binary name (the sync-lambda package's binary).
const FUNCTION: &str = "cloudmap-sync";

/// The sync Lambda, run by `cargo lambda watch`.
#[derive(Debug)]
pub(crate) struct Emulator(lambda::Emulator);

impl Emulator {
    /// Starts the emulator for the sync Lambda with `env` as the function's environment, and
    /// waits until it accepts invocations. `release` builds and runs the release binary.
    pub(crate) async fn start(
        env: &[(&str, String)],
        release: bool,
        work_dir: &Path,
    ) -> Result<Self, DemoError> {
        let package_dir = local_stack::workspace_root().join("sync-lambda");
        let function = Function::Package {
            package_dir: &package_dir,
            release,
            env,
        };
        Ok(Self(lambda::Emulator::start(function, work_dir).await?))
    }

    /// Sends `event` and returns the function's answer. A function error (the Lambda asking to
    /// be retried) is an error here.
    pub(crate) async fn invoke(&mut self, label: &str, event: &Value) -> Result<Value, DemoError> {
        let invoked = self.0.invoke(FUNCTION, event).await?;
        if !invoked.ok {
            return Err(DemoError::Lambda {
                event: label.to_owned(),
                detail: format!("{}{}", invoked.stderr.trim(), invoked.stdout),
            });
        }
        Ok(invoked.answer().unwrap_or(Value::Null))
    }

    /// Stops the emulator and the function process.
    pub(crate) async fn stop(self) {
        self.0.stop().await;
    }
}

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_types::SdkConfig;

use crate::{Error, Subnet, http};

/// The region every local-stack client uses. Its zones are `eu-central-1a`, `-1b` and `-1c`.
pub const REGION: &str = "eu-central-1";

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// moto's server, running as a child process on a free loopback port.
#[derive(Debug)]
pub struct MotoServer {
    port: u16,
    endpoint: String,
    child: Mutex<Option<(Child, ChildStdin)>>,
}

impl MotoServer {
    /// Starts a server of its own (installing moto first if needed) and waits until it answers.
    pub fn start() -> Result<Self, Error> {
        let python = crate::python()?;
        let launcher = crate::workspace_root().join("local-stack/moto_launcher.py");
        let start_error = |detail: String| Error::Start { detail };
        let mut child = Command::new(&python)
            .arg(&launcher)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                start_error(format!("{} {}: {e}", python.display(), launcher.display()))
            })?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| start_error("no stdin pipe".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| start_error("no stdout pipe".into()))?;

        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| start_error(format!("reading the launcher's port: {e}")))?;
        let port = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| {
                let _ = child.kill();
                start_error(format!("the launcher printed {line:?} instead of its port"))
            })?;

        let server = Self {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            child: Mutex::new(Some((child, stdin))),
        };
        server.wait_until_ready(READY_TIMEOUT)?;
        Ok(server)
    }

    /// One server for the whole process (a test binary), started on first use.
    ///
    /// # Panics
    ///
    /// When the server cannot be started: tests cannot run without it, and the message says why.
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<MotoServer> = OnceLock::new();
        SHARED.get_or_init(|| match Self::start() {
            Ok(server) => server,
            Err(error) => panic!("the local AWS stack is needed here: {error}"),
        })
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn wait_until_ready(&self, timeout: Duration) -> Result<(), Error> {
        let started = Instant::now();
        loop {
            match http::exchange(self.port, "GET", "/moto-api/data.json", &[], "") {
                Ok((200, _)) => return Ok(()),
                _ if started.elapsed() > timeout => {
                    return Err(Error::NotReady {
                        endpoint: self.endpoint.clone(),
                        waited: timeout,
                    });
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Clears every resource (`POST /moto-api/reset`). Only for a server of one's own: never
    /// reset [`MotoServer::shared`], other tests are using it.
    pub fn reset(&self) -> Result<(), Error> {
        match http::exchange(self.port, "POST", "/moto-api/reset", &[], "")? {
            (200, _) => Ok(()),
            (status, body) => Err(Error::Unexpected {
                what: "POST /moto-api/reset".into(),
                detail: format!("status {status}: {body}"),
            }),
        }
    }

    /// The default VPC's subnets, one per zone of [`REGION`], sorted by zone.
    pub fn default_subnets(&self) -> Result<Vec<Subnet>, Error> {
        crate::ec2::default_subnets(self.port)
    }

    /// The default VPC's default security group.
    pub fn default_security_group(&self) -> Result<String, Error> {
        crate::ec2::default_security_group(self.port)
    }

    /// An SDK configuration pointed at this server: see [`sdk_config_for`].
    pub fn sdk_config(&self) -> SdkConfig {
        sdk_config_for(&self.endpoint)
    }

    /// A Cloud Map client for this server, built with the host-prefix fix that real users get.
    pub fn servicediscovery(&self) -> aws_sdk_servicediscovery::Client {
        cloudmap_balancer::aws::servicediscovery_client(&self.sdk_config())
    }

    /// An ECS client for this server.
    pub fn ecs(&self) -> aws_sdk_ecs::Client {
        aws_sdk_ecs::Client::new(&self.sdk_config())
    }

    /// A CloudWatch client for this server.
    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk_config())
    }

    /// Stops the server and waits for it to exit.
    pub fn stop(&self) {
        let taken = self
            .child
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((mut child, stdin)) = taken {
            drop(stdin);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An SDK configuration pointed at a local stack's `endpoint` (say one another process
/// started): region [`REGION`], dummy static credentials, the endpoint URL overridden, a short
/// retry budget.
pub fn sdk_config_for(endpoint: &str) -> SdkConfig {
    let credentials = aws_sdk_ecs::config::Credentials::new(
        "local-stack",
        "local-stack",
        None,
        None,
        "local-stack",
    );
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            credentials,
        ))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
        .build()
}

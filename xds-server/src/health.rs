//! The server's own health watch (gRFC A17's `grpc.health.v1.Health/Watch`) on every endpoint it
//! serves: once per replica, not once per client. A task that starts draining answers
//! `NOT_SERVING` at once (the demo server does on SIGTERM); the server then serves it as
//! `DRAINING` to every client within a push, without waiting for Cloud Map.
//!
//! - `SERVING`: nothing against it. `NOT_SERVING`, `SERVICE_UNKNOWN` or `UNKNOWN`: not serving
//!   until it says `SERVING` again.
//! - `UNIMPLEMENTED`: the task has no health service; it is served on Cloud Map's word alone,
//!   and not watched again.
//! - The stream fails or ends: the last status stands (a task that said `NOT_SERVING` and then
//!   exited stays out until Cloud Map removes it), and the watch re-opens after 1 s, doubling up
//!   to 30 s.
//! - An endpoint that leaves the snapshot stops being watched.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// Endpoints' health as their watches last reported it.
#[derive(Debug, Default)]
pub struct HealthWatches {
    not_serving: Mutex<HashSet<SocketAddr>>,
    tasks: Mutex<HashMap<SocketAddr, tokio::task::JoinHandle<()>>>,
}

impl Drop for HealthWatches {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            task.abort();
        }
    }
}

impl HealthWatches {
    /// Whether `addr` last said it is not serving.
    pub fn not_serving(&self, addr: SocketAddr) -> bool {
        self.not_serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&addr)
    }

    /// Watches exactly `addrs`: starts a watch for each new one, stops those no longer listed.
    /// `changed` runs whenever an endpoint's verdict changes.
    pub fn reconcile(
        self: &Arc<Self>,
        addrs: &HashSet<SocketAddr>,
        service: &str,
        changed: &Arc<dyn Fn() + Send + Sync>,
    ) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.retain(|addr, task| {
            let keep = addrs.contains(addr);
            if !keep {
                task.abort();
            }
            keep
        });
        let removed = {
            let mut not_serving = self
                .not_serving
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let before = not_serving.len();
            not_serving.retain(|addr| addrs.contains(addr));
            before != not_serving.len()
        };
        for &addr in addrs {
            if tasks.contains_key(&addr) {
                continue;
            }
            let watches = Arc::downgrade(self);
            let changed = Arc::clone(changed);
            let service = service.to_owned();
            tasks.insert(
                addr,
                tokio::spawn(async move {
                    watch(addr, &service, |not_serving| {
                        let Some(watches) = watches.upgrade() else { return };
                        let mut set = watches.not_serving.lock().unwrap_or_else(PoisonError::into_inner);
                        let flipped = if not_serving { set.insert(addr) } else { set.remove(&addr) };
                        drop(set);
                        if flipped {
                            tracing::info!(%addr, not_serving, "health watch: the task's own verdict changed");
                            changed();
                        }
                    })
                    .await;
                }),
            );
        }
        if removed {
            changed();
        }
    }
}

/// Watches one endpoint until aborted (or it has no health service).
async fn watch(addr: SocketAddr, service: &str, set: impl Fn(bool)) {
    let Ok(endpoint) = Endpoint::from_shared(format!("http://{addr}")) else {
        return;
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    let mut delay = Duration::from_secs(1);
    loop {
        let request = HealthCheckRequest {
            service: service.to_owned(),
        };
        match client.watch(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                while let Ok(Some(message)) = stream.message().await {
                    set(message.status != ServingStatus::Serving as i32);
                    delay = Duration::from_secs(1);
                }
            }
            Err(status) if status.code() == tonic::Code::Unimplemented => {
                set(false);
                return;
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

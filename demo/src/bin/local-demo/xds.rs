//! The same fleet through the xDS control plane, for a client in another language: the real
//! `cloudmap-xds serve` on the demo's moto, a bootstrap per zone from `cloudmap-xds bootstrap`,
//! and gRPC's Python client (grpcio) in the Rust client's zone ([`demo::xds`]).
//!
//! The server spreads a zone's calls by Envoy's zone-aware formula over the callers connected to
//! it, per zone. A lone client in the client's zone would be all of the demand there, and its
//! zone (45 % of the capacity) would spill. A fleet has callers in every zone: one idle grpcio
//! caller in each other zone stands for them, so the demand is a third per zone, the client's
//! zone covers its callers, and every call stays there, as for the Rust client.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use demo::fleet::{CLIENT_ZONE, LAYOUT};
use demo::progress::Progress;
use demo::xds::{GrpcioClient, GrpcioRun, GrpcioSummary, XdsServer};

use crate::error::DemoError;

/// The demo's Cloud Map polls, for the Rust client and the xDS server alike.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The xDS server and the callers connected to it.
#[derive(Debug)]
pub(crate) struct XdsSide {
    pub(crate) server: XdsServer,
    /// The bootstrap of a client in [`CLIENT_ZONE`] (its zone ID).
    pub(crate) bootstrap: PathBuf,
    /// The zones (IDs) with an idle caller.
    pub(crate) caller_zones: Vec<String>,
    callers: Vec<GrpcioClient>,
    work_dir: PathBuf,
}

impl XdsSide {
    /// Starts the server and an idle caller in every zone of the fleet but the client's, each
    /// with a bootstrap naming its zone by ID. `zone_id` maps a zone name to its ID.
    pub(crate) async fn start(
        binary: &Path,
        aws_endpoint: &str,
        zone_id: impl Fn(&str) -> Option<String>,
        work_dir: &Path,
        progress: &Progress,
    ) -> Result<Self, DemoError> {
        let server = XdsServer::start(binary, aws_endpoint, POLL_INTERVAL, work_dir).await?;
        let mut zones: Vec<&str> = LAYOUT.iter().map(|(zone, _, _)| *zone).collect();
        zones.dedup();
        let mut bootstraps = BTreeMap::new();
        for zone in zones {
            let id = zone_id(zone).ok_or_else(|| DemoError::Process {
                what: "the xDS bootstraps".into(),
                detail: format!("no zone ID for {zone}"),
            })?;
            let path = work_dir.join(format!("bootstrap-{zone}.json"));
            demo::xds::bootstrap(binary, server.addr, &format!("grpcio-{zone}"), &id, &path)
                .await?;
            bootstraps.insert(zone, (id, path));
        }
        let mut callers = Vec::new();
        let mut caller_zones = Vec::new();
        for (zone, (id, path)) in &bootstraps {
            if *zone == CLIENT_ZONE {
                continue;
            }
            callers.push(GrpcioClient::start(&GrpcioRun {
                bootstrap: path,
                target: &demo::xds::target(),
                calls: None,
                concurrency: 1,
                pause: Duration::ZERO,
                warmup: Duration::ZERO,
                cpu: None,
                idle: true,
                metadata: &[],
                lb_policy: None,
                authority: None,
                name: &format!("caller-{zone}"),
                work_dir,
            })?);
            caller_zones.push(id.clone());
        }
        let bootstrap = bootstraps
            .remove(CLIENT_ZONE)
            .map(|(_, path)| path)
            .ok_or_else(|| DemoError::Process {
                what: "the xDS bootstraps".into(),
                detail: format!("no task in {CLIENT_ZONE}"),
            })?;
        progress.step(format!(
            "  cloudmap-xds serving ADS on {} (Cloud Map polled every {} s; log: {}); idle grpcio callers connecting in {}",
            server.addr,
            POLL_INTERVAL.as_secs(),
            server.log.display(),
            caller_zones.join(", ")
        ));
        Ok(Self {
            server,
            bootstrap,
            caller_zones,
            callers,
            work_dir: work_dir.to_owned(),
        })
    }

    /// Waits until every idle caller is connected (so the server counts it).
    pub(crate) async fn callers_ready(&mut self) -> Result<(), DemoError> {
        for caller in &mut self.callers {
            caller.ready().await?;
        }
        Ok(())
    }

    /// A grpcio client in [`CLIENT_ZONE`] making `calls` calls (`None`: until finished),
    /// `concurrency` at a time, each worker pausing `pause` between calls.
    pub(crate) fn client(
        &self,
        name: &str,
        calls: Option<u64>,
        concurrency: u64,
        pause: Duration,
    ) -> Result<GrpcioClient, DemoError> {
        Ok(GrpcioClient::start(&GrpcioRun {
            bootstrap: &self.bootstrap,
            target: &demo::xds::target(),
            calls,
            concurrency,
            pause,
            warmup: Duration::ZERO,
            cpu: None,
            idle: false,
            metadata: &[],
            lb_policy: None,
            authority: None,
            name,
            work_dir: &self.work_dir,
        })?)
    }

    /// Stops the callers, then the server; returns the server's summary (streams, ACKs, NACKs).
    pub(crate) async fn stop(self) -> Result<serde_json::Value, DemoError> {
        for caller in self.callers {
            let _: GrpcioSummary = caller.finish().await?;
        }
        Ok(self.server.stop().await?)
    }
}

//! How close the emulated round trips come to what they should be: unary calls to a real server
//! on loopback with the AWS round trips emulated, interleaved per round, against the same
//! server called without the zone header (the loopback baseline). Also tokio's own sleep for the
//! same 335 µs, the reason the emulation has a timer of its own.
//!
//! `cargo bench -p demo-server --bench network_emulation` (prints a table on stdout).

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::time::{Duration, Instant};

use demo_server::pb::demo_client::DemoClient;
use demo_server::{
    CLIENT_ZONE_HEADER, DemoServer, Identity, NetworkEmulation, PROXY_HOPS_HEADER, ServeOptions, pb,
};

const ROUNDS: usize = 10;
const CALLS_PER_ROUND: usize = 300;

/// Name, caller zone, proxy hops, the emulated round trip expected on top of loopback.
const CASES: [(&str, Option<&str>, Option<&str>, u64); 4] = [
    ("no header (loopback)", None, None, 0),
    ("in zone", Some("eu-central-1a"), None, 335),
    ("across zones", Some("eu-central-1b"), None, 1035),
    (
        "in zone, one proxy hop",
        Some("eu-central-1a"),
        Some("1"),
        670,
    ),
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank; the product is a small non-negative index.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // The server on a runtime of its own, as in its own process.
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let identity = Identity {
                zone: "eu-central-1a".into(),
                ..Identity::default()
            };
            let options = ServeOptions {
                network: Some(NetworkEmulation::AWS),
                ..ServeOptions::default()
            };
            let server = DemoServer::bind("127.0.0.1:0".parse().unwrap(), identity, options)
                .await
                .unwrap();
            addr_tx.send(server.local_addr()).unwrap();
            server.wait().await.unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); CASES.len()];
    let mut tokio_sleeps = Vec::new();
    runtime.block_on(async {
        let mut client = DemoClient::connect(format!("http://{addr}")).await.unwrap();
        for _ in 0..ROUNDS {
            for (case, (_, zone, hops, _)) in CASES.iter().enumerate() {
                for _ in 0..CALLS_PER_ROUND {
                    let mut request = tonic::Request::new(pb::DescribeRequest {});
                    if let Some(zone) = zone {
                        request
                            .metadata_mut()
                            .insert(CLIENT_ZONE_HEADER, zone.parse().unwrap());
                    }
                    if let Some(hops) = hops {
                        request
                            .metadata_mut()
                            .insert(PROXY_HOPS_HEADER, hops.parse().unwrap());
                    }
                    let start = Instant::now();
                    client.describe(request).await.unwrap();
                    samples[case].push(start.elapsed());
                }
            }
            for _ in 0..CALLS_PER_ROUND / 10 {
                let start = Instant::now();
                tokio::time::sleep(Duration::from_micros(335)).await;
                tokio_sleeps.push(start.elapsed());
            }
        }
    });

    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{ROUNDS} rounds × {CALLS_PER_ROUND} sequential unary calls per case, interleaved\n"
    );
    let _ = writeln!(
        out,
        "| case | expected on top of loopback | p50 | p90 | p99 | p50 − loopback p50 |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let baseline = {
        let mut sorted = samples[0].clone();
        sorted.sort();
        percentile(&sorted, 0.5)
    };
    for ((name, _, _, expected), mut sorted) in CASES.iter().zip(samples) {
        sorted.sort();
        let p50 = percentile(&sorted, 0.5);
        let _ = writeln!(
            out,
            "| {name} | {expected} µs | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            micros(p50),
            micros(percentile(&sorted, 0.9)),
            micros(percentile(&sorted, 0.99)),
            micros(p50) - micros(baseline),
        );
    }
    tokio_sleeps.sort();
    let _ = writeln!(
        out,
        "\ntokio::time::sleep(335 µs): p50 {:.0} µs, p90 {:.0} µs, p99 {:.0} µs",
        micros(percentile(&tokio_sleeps, 0.5)),
        micros(percentile(&tokio_sleeps, 0.9)),
        micros(percentile(&tokio_sleeps, 0.99)),
    );
}

//! `Builder::tls` against real TLS-only tonic servers on 127.0.0.1:0: calls succeed and are
//! spread over the servers when the client trusts the servers' CA and names the certificate's
//! host; they fail `UNAVAILABLE`, without reaching any server, when it trusts another CA or no
//! CA, or names another host; and they fail, without reaching any server, when it speaks
//! plaintext.
//!
//! The certificates are made at test time: a self-signed CA, and a server certificate for
//! `localhost` that it signs (the instances are addressed by IP, as Cloud Map lists them, so the
//! name to check comes from `ClientTlsConfig::domain_name`).

#![allow(clippy::unwrap_used)]

mod support;

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};

use cloudmap_balancer::discovery::StaticSource;
use cloudmap_balancer::zone::OwnZone;
use cloudmap_balancer::{Balancer, Instance};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use support::call;
use tonic::Code;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic_health::pb::health_client::HealthClient;

/// The name on the servers' certificate.
const HOST: &str = "localhost";

/// Makes *ring* the process's rustls provider, for the servers. tonic's client picks *ring*
/// by itself (feature `tls-ring`), but its server takes the process default, and rustls has no
/// default when both *ring* and aws-lc-rs are enabled, as they are here: the AWS SDK's HTTPS
/// client (a dev-dependency) enables aws-lc-rs. Without this, `Server::tls_config` panics.
/// rustls's `ring` feature comes with this test's required feature `tls` (tonic's `tls-ring`).
fn install_ring_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        rustls::crypto::ring::default_provider()
            .install_default()
            .unwrap();
    });
}

/// A certificate authority made for this test run.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    /// The CA certificate, for a client to trust.
    fn certificate(&self) -> Certificate {
        Certificate::from_pem(self.issuer.pem())
    }

    /// A server certificate for `host`, signed by this CA, with its key.
    fn server_identity(&self, host: &str) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Identity::from_pem(certificate.pem(), key.serialize_pem())
    }
}

/// A tonic server that speaks only TLS, serving the standard health service and counting the
/// calls that reached it.
struct TlsServer {
    addr: SocketAddr,
    served: Arc<AtomicU64>,
}

impl TlsServer {
    async fn start(identity: Identity) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&served);
        // The overall service ("") starts SERVING.
        let (reporter, health) = tonic_health::server::health_reporter();
        let server = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .unwrap()
            .layer(tower::util::MapRequestLayer::new(
                move |request: http::Request<tonic::body::Body>| {
                    // The balancer's own health watch is not a call of the test's.
                    if request.uri().path() != "/grpc.health.v1.Health/Watch" {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    request
                },
            ));
        tokio::spawn(async move {
            // Keep the reporter alive for as long as the server runs.
            let _reporter = reporter;
            server
                .serve_with_incoming(health, TcpIncoming::from(listener))
                .await
        });
        Self { addr, served }
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

async fn start_servers(ca: &Ca, count: usize) -> Vec<TlsServer> {
    install_ring_provider();
    let mut servers = Vec::with_capacity(count);
    for _ in 0..count {
        servers.push(TlsServer::start(ca.server_identity(HOST)).await);
    }
    servers
}

/// A balancer over `servers` (listed by IP and port, as Cloud Map lists tasks), over TLS when
/// `tls` is given.
fn balancer(servers: &[TlsServer], tls: Option<ClientTlsConfig>) -> Balancer {
    let source = StaticSource::new(
        servers
            .iter()
            .enumerate()
            .map(|(n, server)| Instance::new(format!("task-{n}"), server.addr))
            .collect(),
    );
    let mut builder = Balancer::builder_with_source(source, "test", "health")
        .zone(OwnZone::Unknown)
        .rng_seed(7);
    if let Some(tls) = tls {
        builder = builder.tls(tls);
    }
    builder.build().unwrap()
}

/// Makes `calls` health checks one after another; returns the failures.
async fn failures(balancer: &Balancer, calls: usize) -> Vec<tonic::Status> {
    let mut client = HealthClient::new(balancer.channel());
    let mut failures = Vec::new();
    for _ in 0..calls {
        if let Err(status) = call(&mut client).await {
            failures.push(status);
        }
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_tls_succeed_and_spread_over_the_servers() {
    let ca = Ca::new("cloudmap-balancer test CA");
    let servers = start_servers(&ca, 3).await;
    let balancer = balancer(
        &servers,
        Some(
            ClientTlsConfig::new()
                .ca_certificate(ca.certificate())
                .domain_name(HOST),
        ),
    );
    balancer.ready().await.unwrap();

    // Four concurrent clients on the one balancer, 150 calls each.
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let balancer = balancer.clone();
            tokio::spawn(async move { failures(&balancer, 150).await })
        })
        .collect();
    for task in tasks {
        let failed = task.await.unwrap();
        assert!(failed.is_empty(), "{failed:?}");
    }

    let served: Vec<u64> = servers.iter().map(TlsServer::served).collect();
    assert_eq!(served.iter().sum::<u64>(), 600, "{served:?}");
    // Equal weights: about 200 each; below 100 is over eight standard deviations off.
    assert!(served.iter().all(|&n| n >= 100), "{served:?}");

    let stats = balancer.stats();
    assert_eq!(stats.calls.failed, 0);
    assert_eq!(stats.calls.connect_failures, 0);
    for (instance, server) in stats.instances.iter().zip(&servers) {
        assert!(instance.connected, "{}", instance.task_id());
        assert_eq!(instance.picks, server.served(), "{}", instance.task_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cannot_verify_the_servers_fails_unavailable() {
    let ca = Ca::new("cloudmap-balancer test CA");
    let other = Ca::new("some other CA");
    let servers = start_servers(&ca, 3).await;
    let cases = [
        (
            "trusts another CA",
            ClientTlsConfig::new()
                .ca_certificate(other.certificate())
                .domain_name(HOST),
            "UnknownIssuer",
        ),
        (
            "trusts no CA",
            ClientTlsConfig::new().domain_name(HOST),
            "UnknownIssuer",
        ),
        (
            "expects another name",
            ClientTlsConfig::new()
                .ca_certificate(ca.certificate())
                .domain_name("echo.internal"),
            "not valid for name",
        ),
    ];
    for (case, tls, why) in cases {
        let balancer = balancer(&servers, Some(tls));
        balancer.ready().await.unwrap();
        let failed = failures(&balancer, 12).await;
        assert_eq!(failed.len(), 12, "{case}: every call fails");
        for status in &failed {
            assert_eq!(status.code(), Code::Unavailable, "{case}: {status:?}");
            assert!(status.message().contains(why), "{case}: {status:?}");
        }
        assert!(balancer.stats().calls.connect_failures > 0, "{case}");
    }
    let served: Vec<u64> = servers.iter().map(TlsServer::served).collect();
    assert_eq!(served, vec![0; 3], "no call reached a server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_fails_against_tls_servers() {
    let ca = Ca::new("cloudmap-balancer test CA");
    let servers = start_servers(&ca, 3).await;
    let balancer = balancer(&servers, None);
    balancer.ready().await.unwrap();
    let failed = failures(&balancer, 12).await;
    assert_eq!(failed.len(), 12, "every call fails");
    for status in &failed {
        // The client's HTTP/2 handshake does not wait for the server, so the connection "opens"
        // and breaks under the call: the server's TLS alert read as an HTTP/2 frame, a broken
        // pipe or the connection gone. The balancer reports each as a transport failure naming
        // the instance: UNAVAILABLE, or what gRPC maps a reset stream's reason to.
        assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Internal | Code::Cancelled
            ),
            "{status:?}"
        );
        assert!(status.message().contains("127.0.0.1"), "{status:?}");
        let transport = std::iter::successors(
            status
                .source()
                .map(|s| s as &(dyn std::error::Error + 'static)),
            |&e| e.source(),
        )
        .any(|e| e.is::<tonic::transport::Error>());
        assert!(
            transport,
            "a transport failure, not a status from a server: {status:?}"
        );
    }
    let served: Vec<u64> = servers.iter().map(TlsServer::served).collect();
    assert_eq!(served, vec![0; 3], "no call reached a server");
}

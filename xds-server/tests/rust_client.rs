//! The Rust client through the xDS server, end to end with real parts: moto as Cloud Map, real
//! tonic backends on 127.0.0.1:0, the real `cloudmap-xds` binary, and the crate's `Balancer`
//! with its xDS source next to one polling Cloud Map directly (and, for the answers a client
//! must reject, a server of the test's own replaying a real answer). Every case runs in this
//! one test, so the set-up is paid once.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloudmap_balancer::discovery::SourceKind;
use cloudmap_balancer::discovery::xds::XdsOptions;
use cloudmap_balancer::{Balancer, Options};
use cloudmap_xds::server::ENDPOINTS;
use local_stack::fault::{Fault, FaultProxy};
use support::fleet::{Backend, XdsProcess};
use support::replay::{GARBAGE_VERSION, Replay};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// Waits (a hang guard of 30 s, not a timing check) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(30), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what}"));
}

/// Calls through `balancer` until `stop` is set; counts failures.
fn caller(balancer: &Balancer, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    let mut client = HealthClient::new(balancer.channel());
    tokio::spawn(async move {
        let (mut calls, mut failed) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            calls += 1;
            if client.check(HealthCheckRequest::default()).await.is_err() {
                failed += 1;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (calls, failed)
    })
}

fn source(balancer: &Balancer) -> SourceKind {
    balancer.stats().discovery.source
}

/// The source of a balancer served by the xDS server at `uri`.
fn xds_at(uri: String) -> SourceKind {
    SourceKind::Xds { server: uri }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_takes_the_servers_push_and_falls_back_to_cloud_map() {
    let moto = local_stack::MotoServer::shared();
    let cloudmap = moto.servicediscovery();
    let namespace =
        local_stack::cloudmap::create_http_namespace(&cloudmap, &local_stack::unique_name("rx"))
            .await
            .unwrap();
    let service = local_stack::cloudmap::create_service(&cloudmap, &namespace, "echo", false)
        .await
        .unwrap();
    let backends = vec![
        Backend::start("t1", "eu-central-1a", 100).await,
        Backend::start("t2", "eu-central-1a", 200).await,
        Backend::start("t3", "eu-central-1b", 300).await,
        // Not yet callable: must reach the client as it is, not be left out.
        Backend::start("t4", "eu-central-1b", 100).await,
    ];
    let register = |b: &Backend, state: &str| {
        let attributes = HashMap::from([
            ("AWS_INSTANCE_IPV4".to_owned(), b.addr.ip().to_string()),
            ("AWS_INSTANCE_PORT".to_owned(), b.addr.port().to_string()),
            ("AVAILABILITY_ZONE".to_owned(), b.zone.to_owned()),
            ("LB_STATE".to_owned(), state.to_owned()),
            ("LB_WEIGHT".to_owned(), b.weight.to_string()),
            (
                "LB_UPDATED_AT".to_owned(),
                "2026-12-05T01:02:03.456789Z".to_owned(),
            ),
        ]);
        cloudmap
            .register_instance()
            .service_id(&service.id)
            .instance_id(b.id)
            .set_attributes(Some(attributes))
            .send()
    };
    for b in &backends {
        let state = if b.id == "t4" { "STARTING" } else { "RUNNING" };
        register(b, state).await.unwrap();
    }

    // Server A runs; B's port is reserved for a replica that starts later.
    let a = XdsProcess::start(moto.endpoint());
    let b_addr = format!("127.0.0.1:{}", local_stack::free_port().unwrap());
    let mut xds = XdsOptions::new([a.addr.to_string(), b_addr.clone()]);
    xds.lost_timeout = Duration::from_secs(1);
    xds.backoff_base = Duration::from_millis(50);
    xds.backoff_max = Duration::from_millis(200);
    let build = |xds: Option<XdsOptions>| {
        Balancer::builder(&moto.sdk_config(), &namespace.name, "echo")
            .local_zone("eu-central-1a")
            .options(Options::default())
            .xds(xds)
            .build()
            .unwrap()
    };
    let direct = build(None);
    let pushed = build(Some(xds));
    direct.ready().await.unwrap();
    pushed.ready().await.unwrap();

    // The same instances through both sources, STARTING one and sub-millisecond times too.
    let as_direct =
        |b: &Balancer| b.snapshot().unwrap().instances() == direct.snapshot().unwrap().instances();
    let same = || as_direct(&pushed);
    assert!(
        same(),
        "{:?}\nvs\n{:?}",
        direct.snapshot(),
        pushed.snapshot()
    );
    assert_eq!(pushed.snapshot().unwrap().instances().len(), 4);
    assert_eq!(source(&pushed), xds_at(format!("http://{}", a.addr)));
    assert_eq!(source(&direct), SourceKind::CloudMap);

    // A Cloud Map write reaches the client by push (the server polls every second; the client's
    // own poll interval is 25 s).
    register(&backends[1], "DRAINING").await.unwrap();
    until("the push of t2's DRAINING", || {
        pushed.snapshot().unwrap().instances()[1].state
            == Some(cloudmap_balancer::contract::LbState::Draining)
    })
    .await;
    direct.refresh().await.unwrap();
    assert!(same(), "the same after the change");

    // Server A killed mid-run: the last snapshot stays, no call fails, and after the lost
    // timeout (1 s here) Cloud Map is polled directly.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = caller(&pushed, Arc::clone(&stop));
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.kill();
    until("the fallback to Cloud Map", || {
        source(&pushed) == SourceKind::CloudMapFallback
    })
    .await;
    let status = pushed.stats().discovery;
    assert_eq!(status.source_switches, 1, "{status:?}");
    assert!(same(), "Cloud Map's listing is the one xDS served");

    // A replica comes up: the client returns to xDS at once.
    let b = XdsProcess::start_on(moto.endpoint(), &b_addr);
    until("the return to xDS", || {
        source(&pushed) == xds_at(format!("http://{b_addr}"))
    })
    .await;
    assert_eq!(pushed.stats().discovery.source_switches, 2);
    stop.store(true, Ordering::Relaxed);
    let (made, failed) = calls.await.unwrap();
    assert!(made > 10, "{made} calls");
    assert_eq!(
        failed, 0,
        "no call failed through the server's death and the fallback"
    );
    assert!(same());

    // A server that answers garbage: the answer is NACKed with the reason and the last accepted
    // version (A27), counted, and the last accepted answer stays in service.
    let resource = format!("instances/echo.{}", namespace.name);
    let mut capture = support::Client::connect(b.addr, "capture", "eu-central-1a").await;
    let captured = capture.get(ENDPOINTS, &[&resource]).await;
    drop(capture);
    let replay = Replay::start(captured.clone()).await;
    let broken = build(Some(XdsOptions::new([replay.addr.to_string()])));
    broken.ready().await.unwrap();
    let replayed = xds_at(format!("http://{}", replay.addr));
    assert_eq!(source(&broken), replayed);
    assert!(as_direct(&broken));
    assert_eq!(broken.stats().discovery.rejected_answers, 0);
    replay.send_garbage();
    until("the NACK counted", || {
        broken.stats().discovery.rejected_answers == 1
    })
    .await;
    let requests = replay.requests();
    let nack = requests
        .iter()
        .find(|r| r.error_detail.is_some())
        .unwrap_or_else(|| panic!("no NACK in {requests:?}"));
    assert_eq!(nack.response_nonce, "2");
    assert_ne!(nack.version_info, GARBAGE_VERSION);
    assert_eq!(
        nack.version_info, captured.version_info,
        "a NACK names the last accepted version"
    );
    let reason = &nack.error_detail.as_ref().unwrap().message;
    assert!(reason.contains("does not decode"), "{reason}");
    assert_eq!(source(&broken), replayed, "no fallback: the stream is up");
    assert!(as_direct(&broken));
    let mut client = HealthClient::new(broken.channel());
    client.check(HealthCheckRequest::default()).await.unwrap();
    drop(replay);

    // Cloud Map down while a server runs: a client that connects meanwhile gets the server's
    // last-known-good answer through xDS (not its own fallback to Cloud Map, which is up for
    // it).
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let c = XdsProcess::start(&proxy.endpoint());
    let first = build(Some(XdsOptions::new([c.addr.to_string()])));
    first.ready().await.unwrap();
    // Its last subscriber gone, the service lingers on the server, still polled.
    drop(first);
    proxy.fail("DiscoverInstancesRevision", Fault::ServerError);
    proxy.fail("DiscoverInstances", Fault::ServerError);
    until("the server's poll failing", || {
        proxy.faults_served().values().sum::<u64>() >= 2
    })
    .await;
    let newcomer = build(Some(XdsOptions::new([c.addr.to_string()])));
    newcomer.ready().await.unwrap();
    assert_eq!(source(&newcomer), xds_at(format!("http://{}", c.addr)));
    assert!(as_direct(&newcomer));
    let mut client = HealthClient::new(newcomer.channel());
    client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(c.stop()["nacks"], 0);

    // No server reachable at start: after the start timeout (2 s, under the 5 s first-snapshot
    // timeout), Cloud Map; calls made meanwhile wait for it and succeed.
    let nowhere = format!("127.0.0.1:{}", local_stack::free_port().unwrap());
    let stranded = build(Some(XdsOptions::new([nowhere])));
    let mut client = HealthClient::new(stranded.channel());
    client.check(HealthCheckRequest::default()).await.unwrap();
    assert_eq!(source(&stranded), SourceKind::CloudMapFallback);
    assert!(as_direct(&stranded));

    // Over TLS: the server with a certificate from a CA made for this run; the client trusts
    // that CA (what a gRPC bootstrap's `tls` channel credentials with `ca_certificate_file`
    // give it).
    let dir = std::env::temp_dir().join(local_stack::unique_name("xds-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca_pem, cert_pem, key_pem) = certificates("xds.test.internal");
    std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), key_pem).unwrap();
    let secure = XdsProcess::start_with(
        moto.endpoint(),
        "127.0.0.1:0",
        &[
            (
                "CLOUDMAP_XDS_TLS_CERT",
                dir.join("cert.pem").display().to_string(),
            ),
            (
                "CLOUDMAP_XDS_TLS_KEY",
                dir.join("key.pem").display().to_string(),
            ),
        ],
    );
    let mut xds = XdsOptions::new([format!("https://{}", secure.addr)]);
    xds.tls_ca_pem = Some(ca_pem.into_bytes());
    xds.tls_domain = Some("xds.test.internal".to_owned());
    let over_tls = build(Some(xds));
    over_tls.ready().await.unwrap();
    assert_eq!(
        source(&over_tls),
        xds_at(format!("https://{}", secure.addr))
    );
    assert!(as_direct(&over_tls));
    // A client that does not trust that CA is refused and falls back to Cloud Map.
    let mut xds = XdsOptions::new([format!("https://{}", secure.addr)]);
    xds.tls_ca_pem = Some(certificates("other").0.into_bytes());
    xds.tls_domain = Some("xds.test.internal".to_owned());
    let untrusting = build(Some(xds));
    untrusting.ready().await.unwrap();
    assert_eq!(source(&untrusting), SourceKind::CloudMapFallback);
    assert_eq!(secure.stop()["nacks"], 0);

    let summary = b.stop();
    assert_eq!(
        summary["nacks"], 0,
        "the server's answers were accepted: {summary}"
    );
    let served: u64 = backends.iter().map(Backend::calls).sum();
    assert!(served >= made, "{served} calls served, {made} made");
}

/// A CA made for this run and a server certificate for `host` it signed: (CA PEM, certificate
/// PEM, key PEM).
fn certificates(host: &str) -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, host);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let certificate = params.signed_by(&key, &issuer).unwrap();
    (issuer.pem(), certificate.pem(), key.serialize_pem())
}

//! Discovery against Cloud Map (moto's server, through the real AWS SDK): revision changes,
//! attributes, and static stability through an outage, with calls to real tonic servers.

#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_servicediscovery::Client;
use cloudmap_balancer::contract::keys;
use cloudmap_balancer::picker::Exclusion;
use cloudmap_balancer::{Balancer, Options};
use local_stack::{MotoServer, cloudmap, unique_name};
use support::{TestServer, call};
use tonic_health::pb::health_client::HealthClient;

async fn register(
    client: &Client,
    service_id: &str,
    id: &str,
    server: &TestServer,
    extra: &[(&str, &str)],
) {
    let mut attributes: HashMap<String, String> = [
        (keys::AWS_INSTANCE_IPV4, "127.0.0.1".to_owned()),
        (keys::AWS_INSTANCE_PORT, server.addr.port().to_string()),
        (keys::AVAILABILITY_ZONE, server.zone.clone()),
        (keys::LB_STATE, "RUNNING".to_owned()),
        (keys::LB_WEIGHT, "100".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (k, v) in extra {
        attributes.insert((*k).to_owned(), (*v).to_owned());
    }
    client
        .register_instance()
        .service_id(service_id)
        .instance_id(id)
        .set_attributes(Some(attributes))
        .send()
        .await
        .unwrap();
}

fn fast_polling() -> Options {
    let mut options = Options::default();
    options.discovery.poll_interval = Duration::from_secs(1);
    options.discovery.backoff_base = Duration::from_secs(1);
    options.discovery.backoff_max = Duration::from_secs(2);
    options
}

/// Waits (up to 10 s) until the balancer's snapshot satisfies `done`.
async fn wait_for(balancer: &Balancer, done: impl Fn(&cloudmap_balancer::Stats) -> bool) {
    for _ in 0..200 {
        if done(&balancer.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {:#?}", balancer.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_change_is_picked_up_within_one_poll() {
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let service = cloudmap::create_service(&client, &namespace, "echo", false)
        .await
        .unwrap();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1b"),
    ];
    register(&client, &service.id, "task-a", &servers[0], &[]).await;

    let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    let stats = balancer.stats();
    assert_eq!(stats.instances.len(), 1);
    assert_eq!(
        stats.instances[0].instance.zone.as_deref(),
        Some("eu-central-1a")
    );
    let polls_before = stats.discovery.revision_polls;
    let lists_before = stats.discovery.lists;

    register(
        &client,
        &service.id,
        "task-b",
        &servers[1],
        &[(keys::LB_STATE, "DRAINING")],
    )
    .await;
    wait_for(&balancer, |s| s.instances.len() == 2).await;
    let stats = balancer.stats();
    // One revision check at most may have started before the registration; the next one sees
    // it and lists.
    assert!(
        stats.discovery.revision_polls - polls_before <= 2,
        "{} polls",
        stats.discovery.revision_polls - polls_before
    );
    assert_eq!(stats.discovery.lists - lists_before, 1);
    // The attributes arrived decoded: the new task is draining, so calls stay on task-a.
    let b = stats
        .instances
        .iter()
        .find(|i| i.instance.id == "task-b")
        .unwrap();
    assert_eq!(b.exclusion, Some(Exclusion::Draining));
    let mut health = HealthClient::new(balancer.channel());
    for _ in 0..50 {
        call(&mut health).await.unwrap();
    }
    assert_eq!(servers[0].served(), 50);
    assert_eq!(servers[1].served(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_the_last_snapshot_and_calls_keep_succeeding() {
    let moto = MotoServer::start().unwrap();
    let client = moto.servicediscovery();
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let service = cloudmap::create_service(&client, &namespace, "echo", true)
        .await
        .unwrap();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1b"),
    ];
    register(&client, &service.id, "task-a", &servers[0], &[]).await;
    register(&client, &service.id, "task-b", &servers[1], &[]).await;

    let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.stats().instances.len(), 2);
    let mut health = HealthClient::new(balancer.channel());
    for _ in 0..20 {
        call(&mut health).await.unwrap();
    }

    moto.stop();
    // Keep calling through several failed polls.
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(4) {
        call(&mut health).await.unwrap();
        calls += 1;
    }
    assert!(calls > 100);
    let stats = balancer.stats();
    assert!(stats.discovery.errors >= 2, "{:?}", stats.discovery);
    assert!(stats.discovery.consecutive_errors >= 2);
    let last_error = stats.discovery.last_error.as_ref().unwrap().to_string();
    assert!(last_error.contains(&service.name), "{last_error}");
    assert_eq!(
        stats.instances.len(),
        2,
        "the last snapshot stays in service"
    );
    assert_eq!(stats.calls.failed, 0);
    let refresh = balancer.refresh().await;
    assert!(
        refresh.is_err(),
        "a refresh during the outage reports the error"
    );
    // As discovery reported it, not wrapped again.
    let message = refresh.unwrap_err().to_string();
    assert!(message.starts_with("Cloud Map "), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_any_snapshot_calls_fail_unavailable_naming_the_service() {
    // Nothing listens on this endpoint: discovery never succeeds.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let config = aws_types::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("eu-central-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::for_tests(),
        ))
        // Without the SDK's own retries (seconds of backoff), the first failure is on record
        // before the call gives up.
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .build();
    let mut options = Options::default();
    options.first_snapshot_timeout = Duration::from_millis(1500);
    let balancer = Balancer::builder(&config, "prod.internal", "payments")
        .local_zone("eu-central-1a")
        .options(options)
        .build()
        .unwrap();
    let mut health = HealthClient::new(balancer.channel());
    let status = call(&mut health).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let message = status.message();
    assert!(message.contains("`payments`"), "{message}");
    assert!(message.contains("`prod.internal`"), "{message}");
    assert!(
        message.contains("DiscoverInstances"),
        "the cause is named: {message}"
    );
    assert!(balancer.ready().await.is_err());
}

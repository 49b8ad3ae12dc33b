//! Discovery against Cloud Map (moto's server, through the real AWS SDK, with the fault proxy
//! where a test needs errors or call counts): revision changes in both directions, attributes
//! and what cannot be used of them, static stability through an outage and a
//! `RequestLimitExceeded` storm, configuration errors that fail fast, one poller per service per
//! process, and a private DNS namespace, with calls to real tonic servers; IPv6-only and
//! dual-stack instances on `[::1]`; the owner account of a shared namespace (AWS RAM), as sent.

#![cfg(feature = "tonic")]
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use aws_sdk_servicediscovery::Client;
use aws_sdk_servicediscovery::types::{
    DnsConfig, DnsRecord, HealthCheckCustomConfig, OperationStatus, OperationTargetType, RecordType,
};
use cloudmap_balancer::contract::{LbState, keys};
use cloudmap_balancer::discovery::NamespaceOwner;
use cloudmap_balancer::picker::Exclusion;
use cloudmap_balancer::{Balancer, CloudMapErrorKind, Error, IpFamily, Options, Unroutable};
use local_stack::fault::{Fault, FaultProxy};
use local_stack::{MotoServer, cloudmap, unique_name};
use support::{Listen, TestServer, call};
use tonic_health::pb::health_client::HealthClient;

async fn register(
    client: &Client,
    service_id: &str,
    id: &str,
    server: &TestServer,
    extra: &[(&str, &str)],
) {
    register_without(client, service_id, id, server, extra, &[]).await;
}

/// [`register`], leaving out the attributes named in `without`.
async fn register_without(
    client: &Client,
    service_id: &str,
    id: &str,
    server: &TestServer,
    extra: &[(&str, &str)],
    without: &[&str],
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
    for k in without {
        attributes.remove(*k);
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
    options.discovery.throttle_backoff_max = Duration::from_secs(2);
    options
}

/// moto's SDK configuration pointed at `proxy` instead.
fn through(proxy: &FaultProxy, moto: &MotoServer) -> aws_types::SdkConfig {
    moto.sdk_config()
        .into_builder()
        .endpoint_url(proxy.endpoint())
        .build()
}

/// A namespace and service with the given instances registered, each one of `servers`.
async fn service_with(
    client: &Client,
    servers: &[&TestServer],
) -> (cloudmap::Namespace, cloudmap::Service) {
    let namespace = cloudmap::create_http_namespace(client, &unique_name("ns"))
        .await
        .unwrap();
    let service = cloudmap::create_service(client, &namespace, "echo", false)
        .await
        .unwrap();
    for (i, server) in servers.iter().enumerate() {
        register(client, &service.id, &format!("task-{i}"), server, &[]).await;
    }
    (namespace, service)
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
    assert_eq!(message.matches("`payments`").count(), 1, "once: {message}");
    assert!(
        message.starts_with("nothing discovered within 1.5s: "),
        "{message}"
    );
    assert!(balancer.ready().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_that_goes_down_is_a_change_too() {
    // moto's revision is a sum over the instances listed, so a deregistration lowers it;
    // Cloud Map compares revisions with `!=`, and so does the client.
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
    ];
    let (namespace, service) = service_with(&client, &[&servers[0], &servers[1]]).await;
    let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    let before = balancer.snapshot().unwrap();
    assert_eq!(before.instances().len(), 2);
    let lists_before = balancer.stats().discovery.lists;

    client
        .deregister_instance()
        .service_id(&service.id)
        .instance_id("task-1")
        .send()
        .await
        .unwrap();
    wait_for(&balancer, |s| s.instances.len() == 1).await;
    let after = balancer.snapshot().unwrap();
    assert!(after.revision() < before.revision(), "{after:?}");
    // Seen by the revision check, long before the 60 s full refresh.
    assert_eq!(balancer.stats().discovery.lists - lists_before, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_that_cannot_be_used_as_written_are_listed_in_stats() {
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
    ];
    let (namespace, service) = service_with(&client, &[&servers[0]]).await;
    register(
        &client,
        &service.id,
        "bad-port",
        &servers[1],
        &[(keys::AWS_INSTANCE_PORT, "abc")],
    )
    .await;
    register(
        &client,
        &service.id,
        "typo",
        &servers[2],
        &[(keys::LB_STATE, "DRAINNG"), (keys::LB_SCHEMA, "1")],
    )
    .await;
    let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();

    let stats = balancer.stats();
    let snapshot = stats.snapshot.as_ref().unwrap();
    let [unroutable] = snapshot.unroutable() else {
        panic!("{:?}", snapshot.unroutable())
    };
    assert_eq!(unroutable.id, "bad-port");
    assert_eq!(unroutable.reason, Unroutable::NoPort);
    assert_eq!(unroutable.problems[0].value, "abc");
    let [odd] = snapshot.attribute_problems() else {
        panic!("{:?}", snapshot.attribute_problems())
    };
    assert_eq!(odd.id, "typo");
    assert!(odd.taken_as_draining);
    let typo = stats
        .instances
        .iter()
        .find(|i| i.instance.id == "typo")
        .unwrap();
    assert_eq!(typo.instance.state, Some(LbState::Draining));
    assert_eq!(typo.exclusion, Some(Exclusion::Draining));

    let mut health = HealthClient::new(balancer.channel());
    for _ in 0..30 {
        call(&mut health).await.unwrap();
    }
    assert_eq!(
        servers[0].served(),
        30,
        "only the instance written as meant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_limit_exceeded_storm_keeps_the_snapshot_and_no_call_fails() {
    let moto = MotoServer::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let client = moto.servicediscovery();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1b"),
        TestServer::start("eu-central-1a"),
    ];
    let (namespace, service) = service_with(&client, &[&servers[0], &servers[1]]).await;
    let balancer = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    let mut health = HealthClient::new(balancer.channel());

    let throttled = Fault::Status {
        status: 400,
        code: "RequestLimitExceeded".into(),
    };
    proxy.fail("DiscoverInstancesRevision", throttled.clone());
    proxy.fail("DiscoverInstances", throttled);
    // A change Cloud Map will not tell about while it throttles.
    register(&client, &service.id, "task-new", &servers[2], &[]).await;
    let started = tokio::time::Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_secs(5) || balancer.stats().discovery.throttled < 3 {
        call(&mut health).await.unwrap();
        calls += 1;
    }
    let stats = balancer.stats();
    assert_eq!(stats.calls.failed, 0, "{calls} calls");
    assert_eq!(
        stats.instances.len(),
        2,
        "the last snapshot stays in service"
    );
    assert_eq!(stats.discovery.errors, stats.discovery.throttled);
    let error = stats.discovery.last_error.clone().unwrap();
    assert_eq!(error.cloud_map_kind(), Some(CloudMapErrorKind::Throttled));
    // One request per attempt, no SDK retries on top (an attempt may be in flight between the
    // two reads); how long throttled attempts wait is the schedule's unit tests' business.
    let requests = proxy.faults_served().values().sum::<u64>();
    assert!(
        requests.abs_diff(balancer.stats().discovery.throttled) <= 1,
        "{requests} requests, {:?}",
        balancer.stats().discovery
    );

    proxy.clear();
    wait_for(&balancer, |s| s.instances.len() == 3).await;
    assert_eq!(balancer.stats().discovery.consecutive_errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancers_naming_one_service_share_one_poller() {
    let moto = MotoServer::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let client = moto.servicediscovery();
    let server = TestServer::start("eu-central-1a");
    let (namespace, service) = service_with(&client, &[&server]).await;
    let callers = cloudmap::create_service(&client, &namespace, "frontend", false)
        .await
        .unwrap();
    register(&client, &callers.id, "caller-0", &server, &[]).await;
    let config = through(&proxy, moto);
    let build = |config: &aws_types::SdkConfig, service: &str| {
        Balancer::builder(config, &namespace.name, service)
            .local_zone("eu-central-1a")
            .options(fast_polling())
    };
    // Two balancers of the service, both naming the callers' fleet, and one balancer of the
    // callers' service itself: two pollers between them.
    let a = build(&config, &service.name)
        .caller_service(&namespace.name, &callers.name)
        .build()
        .unwrap();
    let b = build(&config, &service.name)
        .caller_service(&namespace.name, &callers.name)
        .build()
        .unwrap();
    let c = build(&config, &callers.name).build().unwrap();
    for balancer in [&a, &b, &c] {
        balancer.ready().await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (echo, frontend) = (a.stats().discovery, c.stats().discovery);
    assert_eq!(b.stats().discovery.revision_polls, echo.revision_polls);
    // Read at the proxy: exactly the calls of one poller per service (a poll may be in flight
    // between the two reads, hence the tolerance of one).
    let revisions = proxy.count("DiscoverInstancesRevision");
    let lists = proxy.count("DiscoverInstances");
    let expected = (
        echo.revision_polls + frontend.revision_polls,
        echo.lists + frontend.lists,
    );
    assert!(
        revisions.abs_diff(expected.0) <= 1 && lists.abs_diff(expected.1) <= 1,
        "proxy {revisions}/{lists}, pollers {expected:?}"
    );
    assert!(echo.revision_polls >= 2 && lists == 2, "{echo:?} {lists}");

    // Other credentials are another identity: that balancer polls on its own.
    let other = config
        .to_builder()
        .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
            aws_credential_types::Credentials::for_tests(),
        ))
        .build();
    let d = build(&other, &service.name).build().unwrap();
    d.ready().await.unwrap();
    assert_eq!(proxy.count("DiscoverInstances"), 3);
    assert_eq!(d.stats().discovery.lists, 1);
    drop((a, b, c, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_service_fails_ready_and_calls_at_once_and_is_picked_up_once_created() {
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let mut options = fast_polling();
    // Far longer than the test waits: failing fast must not wait for it.
    options.first_snapshot_timeout = Duration::from_secs(120);
    let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, "not-yet")
        .local_zone("eu-central-1a")
        .options(options.clone())
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), balancer.ready())
        .await
        .expect("ready() ends at once")
        .unwrap_err();
    assert_eq!(
        error.cloud_map_kind(),
        Some(CloudMapErrorKind::ServiceNotFound)
    );
    let message = cloudmap_balancer_chain(&error);
    assert_eq!(message.matches("ServiceNotFound").count(), 1, "{message}");
    assert!(message.starts_with("Cloud Map DiscoverInstances for service `not-yet`"));

    let mut health = HealthClient::new(balancer.channel());
    let status = tokio::time::timeout(Duration::from_secs(20), call(&mut health))
        .await
        .expect("the call fails at once")
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status.message().matches("ServiceNotFound").count(), 1);

    // Created after the client started: the next poll finds it, no restart.
    let server = TestServer::start("eu-central-1a");
    let service = cloudmap::create_service(&client, &namespace, "not-yet", false)
        .await
        .unwrap();
    register(&client, &service.id, "task-0", &server, &[]).await;
    wait_for(&balancer, |s| s.instances.len() == 1).await;
    call(&mut health).await.unwrap();
    assert_eq!(server.served(), 1);

    // A namespace that does not exist fails the same way, with its own kind.
    let lost = Balancer::builder(&moto.sdk_config(), unique_name("no-ns"), "echo")
        .local_zone("eu-central-1a")
        .options(options)
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), lost.ready())
        .await
        .expect("ready() ends at once")
        .unwrap_err();
    assert_eq!(
        error.cloud_map_kind(),
        Some(CloudMapErrorKind::NamespaceNotFound)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_fails_ready_at_once() {
    let moto = MotoServer::shared();
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let client = moto.servicediscovery();
    let server = TestServer::start("eu-central-1a");
    let (namespace, service) = service_with(&client, &[&server]).await;
    proxy.fail(
        "DiscoverInstances",
        Fault::Status {
            status: 400,
            code: "AccessDeniedException".into(),
        },
    );
    let mut options = fast_polling();
    options.first_snapshot_timeout = Duration::from_secs(120);
    let balancer = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(options)
        .build()
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(20), balancer.ready())
        .await
        .expect("ready() ends at once")
        .unwrap_err();
    assert_eq!(
        error.cloud_map_kind(),
        Some(CloudMapErrorKind::AccessDenied)
    );
    assert_eq!(proxy.count("DiscoverInstances"), 1, "no SDK retries on top");
    // Granted (the policy fixed): the next poll lists, and ready() is fine from then on.
    proxy.clear();
    wait_for(&balancer, |s| s.instances.len() == 1).await;
    balancer.ready().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_in_a_private_dns_namespace_is_discovered_and_balanced() {
    // What ECS service discovery creates: a private DNS namespace in the VPC, a service with A
    // records. DiscoverInstances answers by name for every namespace type.
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let vpc = create_vpc(moto);
    let name = format!("{}.internal", unique_name("dns"));
    let operation = client
        .create_private_dns_namespace()
        .name(&name)
        .vpc(&vpc)
        .send()
        .await
        .unwrap()
        .operation_id
        .unwrap();
    let namespace_id = namespace_of(&client, &operation).await;
    let service = client
        .create_service()
        .name("echo")
        .namespace_id(&namespace_id)
        .dns_config(
            DnsConfig::builder()
                .dns_records(
                    DnsRecord::builder()
                        .r#type(RecordType::A)
                        .ttl(10)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .health_check_custom_config(HealthCheckCustomConfig::builder().build())
        .send()
        .await
        .unwrap()
        .service
        .unwrap();
    let service_id = service.id.unwrap();
    let servers = [
        TestServer::start("eu-central-1a"),
        TestServer::start("eu-central-1a"),
    ];
    register(&client, &service_id, "task-a", &servers[0], &[]).await;
    register(&client, &service_id, "task-b", &servers[1], &[]).await;

    let balancer = Balancer::builder(&moto.sdk_config(), &name, "echo")
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    assert_eq!(balancer.stats().instances.len(), 2);
    let mut health = HealthClient::new(balancer.channel());
    for _ in 0..40 {
        call(&mut health).await.unwrap();
    }
    assert!(
        servers.iter().all(|s| s.served() > 0),
        "both instances serve"
    );
    assert_eq!(servers[0].served() + servers[1].served(), 40);
}

/// The whole error chain, `a: b: c`.
fn cloudmap_balancer_chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Waits for a Cloud Map operation and returns the namespace it created.
async fn namespace_of(client: &Client, operation_id: &str) -> String {
    for _ in 0..100 {
        let operation = client
            .get_operation()
            .operation_id(operation_id)
            .send()
            .await
            .unwrap()
            .operation
            .unwrap();
        if operation.status == Some(OperationStatus::Success) {
            return operation.targets.unwrap()[&OperationTargetType::Namespace].clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("namespace creation did not finish");
}

/// A new VPC in moto (one private DNS namespace per VPC there), through EC2's query API: a
/// helper of this test rather than of `local_stack`, the one place that needs it.
fn create_vpc(moto: &MotoServer) -> String {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!("Action=CreateVpc&CidrBlock=10.{n}.0.0%2F16&Version=2016-11-15");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", moto.port())).unwrap();
    // moto reads the region from the credential scope and does not check the signature.
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
         Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=local/20260101/{region}/ec2/aws4_request, \
         SignedHeaders=host, Signature=0\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n{body}",
        port = moto.port(),
        region = local_stack::REGION,
        length = body.len(),
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let start = response.find("<vpcId>").expect(&response) + "<vpcId>".len();
    let end = response[start..].find("</vpcId>").unwrap() + start;
    response[start..end].to_owned()
}

/// Runs `calls` health checks one after another; panics on a failure.
async fn calls_in_turn(balancer: &Balancer, calls: usize) {
    let mut health = HealthClient::new(balancer.channel());
    for n in 0..calls {
        if let Err(status) = call(&mut health).await {
            panic!("call {n} failed: {status:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_only_service_takes_calls_with_the_same_shares_as_its_ipv4_twin() {
    if let Err(why) = support::ipv6_loopback() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let weights = ["100", "300"];
    let mut fleets = Vec::new();
    for (family, listen) in [("v4", Listen::V4), ("v6", Listen::V6)] {
        let service =
            cloudmap::create_service(&client, &namespace, &format!("echo-{family}"), false)
                .await
                .unwrap();
        let servers: Vec<TestServer> = weights
            .iter()
            .map(|_| TestServer::start_on("eu-central-1a", listen))
            .collect();
        for (n, (server, weight)) in servers.iter().zip(weights).enumerate() {
            let id = format!("task-{n}");
            if listen == Listen::V6 {
                // What ECS writes for an awsvpc task in an IPv6-only subnet: no IPv4 address.
                let extra = [(keys::AWS_INSTANCE_IPV6, "::1"), (keys::LB_WEIGHT, weight)];
                let without = [keys::AWS_INSTANCE_IPV4];
                register_without(&client, &service.id, &id, server, &extra, &without).await;
            } else {
                register(
                    &client,
                    &service.id,
                    &id,
                    server,
                    &[(keys::LB_WEIGHT, weight)],
                )
                .await;
            }
        }
        fleets.push((service, servers));
    }
    let mut options = fast_polling();
    // In-flight counts alone, so that the shares follow the weights and the seeded draws, not
    // this machine's scheduling.
    options.latency_aware = None;
    let mut shares = Vec::new();
    for (service, servers) in &fleets {
        let balancer = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
            .local_zone("eu-central-1a")
            .options(options.clone())
            .rng_seed(7)
            .build()
            .unwrap();
        balancer.ready().await.unwrap();
        let stats = balancer.stats();
        assert!(stats.snapshot.as_ref().unwrap().unroutable().is_empty());
        assert_eq!(stats.instances.len(), 2);
        for (instance, server) in stats.instances.iter().zip(servers) {
            assert_eq!(instance.instance.addr, server.addr, "{}", service.name);
        }
        calls_in_turn(&balancer, 800).await;
        let served: Vec<u64> = servers.iter().map(TestServer::served).collect();
        assert_eq!(served.iter().sum::<u64>(), 800);
        for (instance, server) in balancer.stats().instances.iter().zip(servers) {
            assert_eq!(instance.connected_addr, Some(server.addr));
        }
        shares.push(served.iter().map(|&n| n as f64 / 800.0).collect::<Vec<_>>());
    }
    let (v4, v6) = (&shares[0], &shares[1]);
    for n in 0..2 {
        assert!(
            (v4[n] - v6[n]).abs() < 0.06,
            "IPv4 shares {v4:?}, IPv6-only shares {v6:?}"
        );
    }
    assert!(v6[1] > 0.6, "the weights hold over IPv6: {v6:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_fleet_dials_the_chosen_family_and_falls_back_per_connection() {
    if let Err(why) = support::ipv6_loopback() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    // Two dual-stack tasks, and one whose IPv6 listener is down (its IPv6 address refuses).
    let servers = [
        TestServer::start_on("eu-central-1a", Listen::Dual),
        TestServer::start_on("eu-central-1a", Listen::Dual),
        TestServer::start_on("eu-central-1a", Listen::V4),
    ];
    let down = &servers[2];
    // Its IPv6 address is held by a socket that is bound and never listens, so it refuses for
    // the whole test (no other test's server can take that port meanwhile).
    let held = tokio::net::TcpSocket::new_v6().unwrap();
    held.bind((std::net::Ipv6Addr::LOCALHOST, down.addr.port()).into())
        .expect("[::1] at the IPv4 server's port is free");
    assert!(
        std::net::TcpStream::connect((std::net::Ipv6Addr::LOCALHOST, down.addr.port())).is_err(),
        "[::1]:{} refuses",
        down.addr.port()
    );
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let service = cloudmap::create_service(&client, &namespace, "echo", false)
        .await
        .unwrap();
    for (n, server) in servers.iter().enumerate() {
        let extra = [(keys::AWS_INSTANCE_IPV6, "::1")];
        register(&client, &service.id, &format!("task-{n}"), server, &extra).await;
    }

    // Connections accepted per server and family while `family` runs 60 calls; and its stats.
    let run = |family: IpFamily| {
        let config = moto.sdk_config();
        let (namespace, service, servers) = (&namespace.name, &service.name, &servers);
        async move {
            let before: Vec<(usize, usize)> = servers.iter().map(TestServer::accepted).collect();
            let served: Vec<u64> = servers.iter().map(TestServer::served).collect();
            let mut options = fast_polling();
            options.ip_family = family;
            let balancer = Balancer::builder(&config, namespace, service)
                .local_zone("eu-central-1a")
                .options(options)
                .rng_seed(3)
                .build()
                .unwrap();
            balancer.ready().await.unwrap();
            calls_in_turn(&balancer, 60).await;
            let stats = balancer.stats();
            let accepted: Vec<(usize, usize)> = servers
                .iter()
                .zip(before)
                .map(|(s, (v4, v6))| (s.accepted().0 - v4, s.accepted().1 - v6))
                .collect();
            let served: Vec<u64> = servers
                .iter()
                .zip(served)
                .map(|(s, n)| s.served() - n)
                .collect();
            (stats, accepted, served)
        }
    };
    let v6 = |n: usize| {
        servers[n].addr_v6.unwrap_or_else(|| {
            std::net::SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), servers[n].addr.port())
        })
    };

    // IPv4 first (the default): IPv4 everywhere, IPv6 never tried.
    let (stats, accepted, served) = run(IpFamily::Ipv4First).await;
    assert!(
        accepted.iter().all(|&(v4, v6)| v4 >= 1 && v6 == 0),
        "{accepted:?}"
    );
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    for (n, (instance, server)) in stats.instances.iter().zip(&servers).enumerate() {
        assert_eq!(instance.connected_addr, Some(server.addr));
        assert_eq!(instance.instance.ipv6_addr, Some(v6(n)));
    }

    // IPv6 first: the dual-stack tasks over IPv6; the task whose IPv6 listener is down over
    // IPv4, by the per-connection fallback, without a failed call or a connect failure counted.
    let (stats, accepted, served) = run(IpFamily::Ipv6First).await;
    assert_eq!(&accepted[..2], &[(0, 1), (0, 1)], "{accepted:?}");
    assert_eq!(accepted[2], (1, 0), "{accepted:?}");
    assert!(served.iter().all(|&n| n > 0), "{served:?}");
    let reached: Vec<_> = stats.instances.iter().map(|i| i.connected_addr).collect();
    assert_eq!(reached, [Some(v6(0)), Some(v6(1)), Some(down.addr)]);
    assert!(stats.instances.iter().all(|i| i.connect_failures == 0));

    // IPv6 only: no fallback, so the task without an IPv6 listener cannot be reached; its
    // connection attempts fail (and eject it), and its calls go to the others, transparently.
    let (stats, accepted, served) = run(IpFamily::Ipv6).await;
    assert!(
        accepted[..2].iter().all(|&(v4, v6)| v4 == 0 && v6 >= 1),
        "{accepted:?}"
    );
    assert_eq!(accepted[2], (0, 0));
    assert_eq!(served[2], 0);
    assert_eq!(served[0] + served[1], 60);
    assert!(
        stats.instances[2].connect_failures >= 1,
        "{:?}",
        stats.instances[2]
    );
    assert_eq!(stats.instances[2].connected_addr, None);
    drop(held);
}

/// The named parameter of each recorded request body, as text (`None` where it is absent).
fn parameter(bodies: &[String], name: &str) -> Vec<Option<String>> {
    bodies
        .iter()
        .map(|body| {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            json.get(name).and_then(|v| v.as_str()).map(str::to_owned)
        })
        .collect()
}

/// Waits (up to 20 s) until the proxy has seen `n` revision polls.
async fn revision_polls(proxy: &FaultProxy, n: u64) {
    for _ in 0..400 {
        if proxy.count("DiscoverInstancesRevision") >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} revision polls: {:?}", proxy.counts());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_discovery_call_carries_the_owner_account_when_one_is_set() {
    // moto cannot share a namespace across accounts (no AWS RAM) and ignores OwnerAccount: this
    // proves what the crate sends, read at the proxy, not that Cloud Map honours it.
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let server = TestServer::start("eu-central-1a");
    let (namespace, service) = service_with(&client, &[&server]).await;
    let callers = cloudmap::create_service(&client, &namespace, "callers", false)
        .await
        .unwrap();
    register(&client, &callers.id, "caller-0", &server, &[]).await;
    let owner = "111122223333";

    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let balancer = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .caller_service(&namespace.name, "callers")
        .namespace_owner(NamespaceOwner::account(owner).unwrap())
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    call(&mut HealthClient::new(balancer.channel()))
        .await
        .unwrap();
    revision_polls(&proxy, 4).await;
    for operation in ["DiscoverInstances", "DiscoverInstancesRevision"] {
        let bodies = proxy.bodies(operation);
        assert!(!bodies.is_empty(), "{operation}");
        assert!(
            parameter(&bodies, "OwnerAccount")
                .iter()
                .all(|o| o.as_deref() == Some(owner)),
            "{operation}: {bodies:?}"
        );
        // The caller fleet, in the same namespace, is read from the owner's namespace too.
        let services = parameter(&bodies, "ServiceName");
        assert!(services.contains(&Some("callers".into())), "{services:?}");
        assert!(
            services.contains(&Some(service.name.clone())),
            "{services:?}"
        );
    }
    assert_eq!(
        proxy.count("ListNamespaces"),
        0,
        "an account given is not looked up"
    );

    // Without an owner (the default) nothing is sent: the caller's own namespace.
    let plain = FaultProxy::start(moto.endpoint()).unwrap();
    let own = Balancer::builder(&through(&plain, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .options(fast_polling())
        .build()
        .unwrap();
    own.ready().await.unwrap();
    revision_polls(&plain, 1).await;
    for operation in ["DiscoverInstances", "DiscoverInstancesRevision"] {
        let bodies = plain.bodies(operation);
        assert!(!bodies.is_empty());
        assert!(
            parameter(&bodies, "OwnerAccount")
                .iter()
                .all(Option::is_none),
            "{bodies:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detected_owner_is_read_once_from_list_namespaces_and_sent() {
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let server = TestServer::start("eu-central-1a");
    let (namespace, service) = service_with(&client, &[&server]).await;
    // moto leaves `ResourceOwner` out of ListNamespaces; the crate then reads the owner from
    // the namespace's ARN, which moto does give.
    let arn = client
        .get_namespace()
        .id(&namespace.id)
        .send()
        .await
        .unwrap()
        .namespace
        .unwrap()
        .arn
        .unwrap();
    let owner = arn.split(':').nth(4).unwrap().to_owned();

    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let balancer = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .namespace_owner(NamespaceOwner::Detect)
        .options(fast_polling())
        .build()
        .unwrap();
    balancer.ready().await.unwrap();
    revision_polls(&proxy, 2).await;
    assert_eq!(
        proxy.count("ListNamespaces"),
        1,
        "looked up once: {:?}",
        proxy.counts()
    );
    let list: serde_json::Value = serde_json::from_str(&proxy.bodies("ListNamespaces")[0]).unwrap();
    assert_eq!(
        list["Filters"],
        serde_json::json!([{ "Name": "NAME", "Values": [namespace.name], "Condition": "EQ" }])
    );
    for operation in ["DiscoverInstances", "DiscoverInstancesRevision"] {
        let bodies = proxy.bodies(operation);
        assert!(
            parameter(&bodies, "OwnerAccount")
                .iter()
                .all(|o| o.as_deref() == Some(owner.as_str())),
            "{operation}: {bodies:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_not_shared_fails_ready_and_calls_at_once_with_a_configuration_error() {
    let moto = MotoServer::shared();
    let mut options = fast_polling();
    // Far longer than the test waits: failing fast must not wait for it.
    options.first_snapshot_timeout = Duration::from_secs(120);
    let owner = NamespaceOwner::account("111122223333").unwrap();
    let denied = Fault::Status {
        status: 400,
        code: "AccessDeniedException".into(),
    };
    let ready_error = |balancer: Balancer| async move {
        let error = tokio::time::timeout(Duration::from_secs(20), balancer.ready())
            .await
            .expect("ready() ends at once")
            .unwrap_err();
        let status = tokio::time::timeout(
            Duration::from_secs(20),
            call(&mut HealthClient::new(balancer.channel())),
        )
        .await
        .expect("the call fails at once")
        .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        (error.cloud_map_kind(), cloudmap_balancer_chain(&error))
    };

    // The owner never shared this namespace (Cloud Map looks for it in the owner's account and
    // answers as for any namespace it cannot show the caller).
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let unshared = Balancer::builder(&through(&proxy, moto), unique_name("not-shared"), "echo")
        .local_zone("eu-central-1a")
        .namespace_owner(owner.clone())
        .options(options.clone())
        .build()
        .unwrap();
    let (kind, message) = ready_error(unshared).await;
    assert_eq!(kind, Some(CloudMapErrorKind::NamespaceNotFound));
    assert!(
        message.contains("OwnerAccount 111122223333") && message.contains("AWS RAM"),
        "{message}"
    );
    assert_eq!(message.matches("NamespaceNotFound").count(), 1, "{message}");

    // Shared, but the role may not read it: the same, as AccessDenied.
    let server = TestServer::start("eu-central-1a");
    let (namespace, service) = service_with(&moto.servicediscovery(), &[&server]).await;
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    proxy.fail("DiscoverInstances", denied.clone());
    proxy.fail("DiscoverInstancesRevision", denied.clone());
    let forbidden = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .namespace_owner(owner)
        .options(options.clone())
        .build()
        .unwrap();
    let (kind, message) = ready_error(forbidden).await;
    assert_eq!(kind, Some(CloudMapErrorKind::AccessDenied));
    assert!(message.contains("OwnerAccount 111122223333"), "{message}");

    // Detected: no namespace of the name visible to the account.
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    let invisible = Balancer::builder(&through(&proxy, moto), unique_name("not-shared"), "echo")
        .local_zone("eu-central-1a")
        .namespace_owner(NamespaceOwner::Detect)
        .options(options.clone())
        .build()
        .unwrap();
    let (kind, message) = ready_error(invisible).await;
    assert_eq!(kind, Some(CloudMapErrorKind::NamespaceNotFound));
    assert!(message.starts_with("Cloud Map ListNamespaces"), "{message}");
    assert!(message.contains("visible"), "{message}");
    assert_eq!(proxy.count("DiscoverInstances"), 0, "{:?}", proxy.counts());

    // Detected, without `servicediscovery:ListNamespaces` in the role.
    let proxy = FaultProxy::start(moto.endpoint()).unwrap();
    proxy.fail("ListNamespaces", denied);
    let no_list = Balancer::builder(&through(&proxy, moto), &namespace.name, &service.name)
        .local_zone("eu-central-1a")
        .namespace_owner(NamespaceOwner::Detect)
        .options(options)
        .build()
        .unwrap();
    let (kind, message) = ready_error(no_list).await;
    assert_eq!(kind, Some(CloudMapErrorKind::AccessDenied));
    assert!(message.starts_with("Cloud Map ListNamespaces"), "{message}");

    // A custom source reads what it reads: an owner for it is refused when building.
    let error = Balancer::builder_with_source(
        cloudmap_balancer::discovery::StaticSource::new(Vec::new()),
        "ns",
        "echo",
    )
    .namespace_owner(NamespaceOwner::Detect)
    .build()
    .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidOption {
                name: "namespace_owner",
                ..
            }
        ),
        "{error}"
    );

    // An owner that is not an account ID is refused when building.
    let error = Balancer::builder(&moto.sdk_config(), &namespace.name, &service.name)
        .namespace_owner(NamespaceOwner::Account("12345".into()))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::InvalidOption {
                name: "namespace_owner",
                ..
            }
        ),
        "{error}"
    );
}

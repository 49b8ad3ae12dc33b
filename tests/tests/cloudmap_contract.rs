//! The attribute contract through the real Rust SDK against Cloud Map (moto): what the Lambda
//! writes is what `GetInstance`, `ListInstances`, `DiscoverInstances` and
//! `DiscoverInstancesRevision` give back to operators and clients.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use aws_sdk_servicediscovery::types::HealthStatusFilter;
use cloudmap_balancer::contract::{
    self, InstanceAttributes, LbAttributes, LbHealth, LbState, Load, Weight, keys,
};
use local_stack::{MotoServer, cloudmap, unique_name};

fn ecs_attributes(ip: &str, zone: &str) -> HashMap<String, String> {
    [
        (keys::AWS_INSTANCE_IPV4, ip),
        (keys::AWS_INSTANCE_PORT, "50051"),
        (keys::AVAILABILITY_ZONE, zone),
        (keys::REGION, "eu-central-1"),
        (keys::ECS_CLUSTER_NAME, "prod"),
        (keys::ECS_SERVICE_NAME, "echo"),
        (keys::ECS_TASK_DEFINITION_FAMILY, "echo-task"),
        ("team", "payments"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn lb(state: LbState, version: u64) -> LbAttributes {
    LbAttributes {
        state,
        health: LbHealth::Healthy,
        weight: Weight::saturating(200),
        cpu_units: Some(512),
        memory_mib: Some(1024),
        capacity: Some("FARGATE".to_owned()),
        load: Load::new(42),
        task_arn: "arn:aws:ecs:eu-central-1:123456789012:task/prod/a1b2c3".to_owned(),
        task_version: Some(version),
        updated_at: UNIX_EPOCH + Duration::from_secs(1_795_356_600),
        running_since: None,
        lambda_owned: false,
    }
}

#[tokio::test]
async fn contract_attributes_survive_every_read_path() {
    let moto = MotoServer::shared();
    let client = moto.servicediscovery();
    let namespace = cloudmap::create_http_namespace(&client, &unique_name("ns"))
        .await
        .unwrap();
    let service = cloudmap::create_service(&client, &namespace, "echo", false)
        .await
        .unwrap();

    let written = contract::merge(
        &ecs_attributes("10.0.1.17", "eu-central-1a"),
        &lb(LbState::Running, 3),
        &[],
    )
    .unwrap()
    .attributes;
    client
        .register_instance()
        .service_id(&service.id)
        .instance_id("a1b2c3")
        .set_attributes(Some(written.as_map().clone().into_iter().collect()))
        .send()
        .await
        .unwrap();

    // GetInstance: exactly what was written.
    let got = client
        .get_instance()
        .service_id(&service.id)
        .instance_id("a1b2c3")
        .send()
        .await
        .unwrap();
    let got = got.instance().unwrap().attributes().unwrap().clone();
    assert!(written.same_as(&got, &[]), "GetInstance returned {got:?}");

    // ListInstances: the same.
    let listed = client
        .list_instances()
        .service_id(&service.id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.instances().len(), 1);
    let listed = listed.instances()[0].attributes().unwrap();
    assert!(written.same_as(listed, &[]));

    // DiscoverInstances (through the data- host prefix fix): decodes to what was meant.
    let discovered = client
        .discover_instances()
        .namespace_name(&namespace.name)
        .service_name(&service.name)
        .health_status(HealthStatusFilter::HealthyOrElseAll)
        .send()
        .await
        .unwrap();
    assert_eq!(discovered.instances().len(), 1);
    let seen = InstanceAttributes::decode(discovered.instances()[0].attributes().unwrap());
    assert_eq!(seen.state, Some(LbState::Running));
    assert_eq!(seen.weight, Some(Weight::saturating(200)));
    assert_eq!(seen.load, Load::new(42));
    assert_eq!(seen.zone.as_deref(), Some("eu-central-1a"));
    assert_eq!(seen.ipv4, Some("10.0.1.17".parse().unwrap()));
    assert_eq!(seen.task_version, Some(3));
    let first_revision = discovered.instances_revision().expect("a revision");

    let revision = client
        .discover_instances_revision()
        .namespace_name(&namespace.name)
        .service_name(&service.name)
        .send()
        .await
        .unwrap()
        .instances_revision();
    assert_eq!(revision, Some(first_revision));

    // Re-register with a new state: the revision moves, clients see DRAINING.
    let current: HashMap<String, String> = got;
    let draining = contract::merge(&current, &lb(LbState::Draining, 4), &[])
        .unwrap()
        .attributes;
    client
        .register_instance()
        .service_id(&service.id)
        .instance_id("a1b2c3")
        .set_attributes(Some(draining.as_map().clone().into_iter().collect()))
        .send()
        .await
        .unwrap();
    let revision = client
        .discover_instances_revision()
        .namespace_name(&namespace.name)
        .service_name(&service.name)
        .send()
        .await
        .unwrap()
        .instances_revision()
        .unwrap();
    assert_ne!(revision, first_revision, "a re-register moves the revision");

    let discovered = client
        .discover_instances()
        .namespace_name(&namespace.name)
        .service_name(&service.name)
        .send()
        .await
        .unwrap();
    let attributes = discovered.instances()[0].attributes().unwrap();
    let seen = InstanceAttributes::decode(attributes);
    assert_eq!(seen.state, Some(LbState::Draining));
    assert_eq!(
        attributes["team"], "payments",
        "a user's attribute survived both writes"
    );
}

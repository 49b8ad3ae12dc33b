//! The local stack itself: lifecycle, and the moto behaviours it fixes for everyone.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, LaunchType, NetworkMode};
use local_stack::{MotoServer, unique_name};

#[test]
fn a_server_answers_and_is_gone_after_stop() {
    let server = MotoServer::start().expect("moto starts");
    let port = server.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    server.reset().expect("reset answers");
    server.stop();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "nothing listens on {port} once stopped"
    );
}

#[test]
fn default_network_has_a_subnet_per_zone() {
    let moto = MotoServer::shared();
    let subnets = moto.default_subnets().unwrap();
    let zones: Vec<_> = subnets.iter().map(|s| s.zone.as_str()).collect();
    assert_eq!(zones, ["eu-central-1a", "eu-central-1b", "eu-central-1c"]);
    assert!(subnets.iter().all(|s| s.id.starts_with("subnet-")));
    assert!(moto.default_security_group().unwrap().starts_with("sg-"));
}

/// Runs one Fargate task in `cluster` and returns its ARN.
async fn run_task(moto: &MotoServer, cluster: &str, family: &str) -> String {
    let ecs = moto.ecs();
    ecs.create_cluster()
        .cluster_name(cluster)
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("512")
        .memory("1024")
        .container_definitions(
            ContainerDefinition::builder()
                .name("app")
                .image("demo")
                .cpu(256)
                .memory(512)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let network = local_stack::ecs::awsvpc(moto, None).unwrap();
    let run = ecs
        .run_task()
        .cluster(cluster)
        .task_definition(family)
        .launch_type(LaunchType::Fargate)
        .group("service:echo")
        .network_configuration(network)
        .send()
        .await
        .expect("RunTask parses: container cpu/memory come back as strings");
    run.tasks()[0].task_arn().unwrap().to_owned()
}

#[tokio::test]
async fn describe_tasks_parses_and_tasks_keep_their_state_until_stopped() {
    let moto = MotoServer::shared();
    let cluster = unique_name("cluster");
    let task_arn = run_task(moto, &cluster, &unique_name("family")).await;
    let ecs = moto.ecs();

    // moto by default moves a task a step on each DescribeTasks; the local stack does not.
    for _ in 0..5 {
        let described = ecs
            .describe_tasks()
            .cluster(&cluster)
            .tasks(&task_arn)
            .send()
            .await
            .expect("DescribeTasks parses through the Rust SDK");
        let task = &described.tasks()[0];
        assert_eq!(task.last_status(), Some("RUNNING"));
        assert_eq!(task.group(), Some("service:echo"));
        assert_eq!(task.containers()[0].cpu(), Some("256"));
        assert_eq!(task.containers()[0].memory(), Some("512"));
    }

    ecs.stop_task()
        .cluster(&cluster)
        .task(&task_arn)
        .reason("test")
        .send()
        .await
        .unwrap();
    let described = ecs
        .describe_tasks()
        .cluster(&cluster)
        .tasks(&task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(described.tasks()[0].last_status(), Some("STOPPED"));
}

//! The local stack itself: lifecycle, and the moto behaviours it fixes for everyone.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns may unwrap too

use local_stack::MotoServer;
use local_stack::ecs_service::{EcsService, RunTasks, ServiceSpec};

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
    // Zone IDs are the account's own mapping: distinct, and named for the region.
    let mut ids: Vec<_> = subnets.iter().map(|s| s.zone_id.as_str()).collect();
    assert!(ids.iter().all(|id| id.starts_with("euc1-az")), "{ids:?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(moto.default_security_group().unwrap().starts_with("sg-"));
}

#[tokio::test]
async fn describe_tasks_parses_and_tasks_keep_their_state_until_stopped() {
    let moto = MotoServer::shared();
    let service = EcsService::create(moto, &ServiceSpec::named("states", &[512]))
        .await
        .unwrap();
    let tasks = service
        .run_tasks(moto, RunTasks::default())
        .await
        .expect("RunTask parses: container cpu/memory come back as strings");
    let (cluster, task_arn) = (&service.cluster, &tasks[0].task_arn);
    let ecs = moto.ecs();

    // moto by default moves a task a step on each DescribeTasks; the local stack does not.
    for _ in 0..5 {
        let described = ecs
            .describe_tasks()
            .cluster(cluster)
            .tasks(task_arn)
            .send()
            .await
            .expect("DescribeTasks parses through the Rust SDK");
        let task = &described.tasks()[0];
        assert_eq!(task.last_status(), Some("RUNNING"));
        assert_eq!(
            task.group(),
            Some(format!("service:{}", service.service).as_str())
        );
        assert_eq!(task.containers()[0].cpu(), Some("512"));
        assert_eq!(task.containers()[0].memory(), Some("1024"));
    }

    service.stop_task(moto, task_arn, "test").await.unwrap();
    let described = ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(described.tasks()[0].last_status(), Some("STOPPED"));
}

#[tokio::test]
async fn an_ecs_service_runs_registers_stops_and_deregisters_tasks_as_ecs_does() {
    let moto = MotoServer::shared();
    let service = EcsService::create(moto, &ServiceSpec::named("fleet", &[256, 1024]))
        .await
        .unwrap();
    assert_eq!(service.task_definitions.len(), 2);
    assert_eq!(service.task_definitions[&1024].memory, 2048);
    assert_eq!(
        service.task_definitions[&256].memory, 512,
        "Fargate's smallest memory for 0.25 vCPU"
    );

    // The ECS service points at the Cloud Map service, as ECS service discovery sets it up.
    let described = moto
        .ecs()
        .describe_services()
        .cluster(&service.cluster)
        .services(&service.service)
        .send()
        .await
        .unwrap();
    let registries = described.services()[0].service_registries();
    assert_eq!(
        registries[0].registry_arn(),
        Some(service.cloud_map_service_arn.as_str())
    );

    let tasks = service
        .run_tasks(
            moto,
            RunTasks {
                zone: Some("eu-central-1b"),
                cpu: Some(1024),
                count: 2,
                tags: &[("lb:weight", "7")],
            },
        )
        .await
        .unwrap();
    assert_eq!(tasks.len(), 2);
    let task = &tasks[0];
    assert_eq!(task.zone, "eu-central-1b");
    let definition = &service.task_definitions[&1024];
    assert_eq!(
        (
            &task.task_definition_arn,
            task.revision,
            task.cpu,
            task.memory
        ),
        (&definition.arn, definition.revision, 1024, 2048)
    );
    assert!(task.task_arn.ends_with(&task.task_id) && task.task_arn.contains(&service.cluster));
    assert!(task.subnet_id.starts_with("subnet-"));
    let listed = moto
        .ecs()
        .list_tasks()
        .cluster(&service.cluster)
        .service_name(&service.service)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.task_arns().len(), 2, "both are the service's tasks");

    let written = service
        .register_as_ecs(moto, task, "127.0.0.1", 4242)
        .await
        .unwrap();
    let instances = service.instances(moto).await.unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(
        instances[&task.task_id], written,
        "the task ID is the instance ID"
    );
    assert_eq!(written["AWS_INSTANCE_PORT"], "4242");
    assert_eq!(written["AVAILABILITY_ZONE"], "eu-central-1b");
    assert_eq!(written["ECS_SERVICE_NAME"], service.service);

    service
        .stop_task(moto, &task.task_arn, "test")
        .await
        .unwrap();
    let described = moto
        .ecs()
        .describe_tasks()
        .cluster(&service.cluster)
        .tasks(&task.task_arn)
        .send()
        .await
        .unwrap();
    assert_eq!(described.tasks()[0].last_status(), Some("STOPPED"));
    service.deregister(moto, &task.task_id).await.unwrap();
    assert!(service.instances(moto).await.unwrap().is_empty());

    // Without a size, the family's latest revision in the first zone.
    let default = service.run_tasks(moto, RunTasks::default()).await.unwrap();
    assert_eq!(default[0].zone, "eu-central-1a");
    assert_eq!(default[0].cpu, 1024);
}

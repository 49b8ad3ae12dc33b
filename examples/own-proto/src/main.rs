//! `own-proto-example NAMESPACE SERVICE [NAME]`: says hello through the balancer to the servers
//! Cloud Map lists for NAMESPACE/SERVICE (credentials, region and endpoint from the AWS SDK's
//! environment, `AWS_ENDPOINT_URL` included), and prints who answered.

use own_proto_example::pb::HelloRequest;
use own_proto_example::pb::greeter_client::GreeterClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(namespace), Some(service)) = (args.next(), args.next()) else {
        return Err("usage: own-proto-example NAMESPACE SERVICE [NAME]".into());
    };
    let name = args.next().unwrap_or_else(|| "world".to_owned());
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let balancer = cloudmap_balancer::Balancer::builder(&aws, namespace, service).build()?;
    balancer.ready().await?;
    let mut client = GreeterClient::new(balancer.channel());
    let reply = client.say_hello(HelloRequest { name }).await?.into_inner();
    let stats = balancer.stats();
    // Printing is what this program is for.
    #[allow(clippy::print_stdout)]
    {
        println!("{} (served by {})", reply.message, reply.served_by);
        println!(
            "own zone {:?} ({:?}), {} instances",
            stats.local_zone,
            stats.local_zone_id,
            stats.instances.len()
        );
    }
    Ok(())
}

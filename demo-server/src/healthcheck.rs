//! `demo-server healthcheck`: one `grpc.health.v1.Health/Check` call, for ECS container health
//! checks (distroless images have no shell or curl, so the binary checks itself).

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::Error;

/// Asks the server at `addr` whether `service` (`""`: the whole server) is `SERVING`.
///
/// # Errors
///
/// Any other answer, no connection, a failed call, or no answer within `timeout`.
pub async fn check_health(addr: SocketAddr, service: &str, timeout: Duration) -> Result<(), Error> {
    let call = async {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|source| Error::HealthConnect { addr, source })?
            .connect_timeout(timeout);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| Error::HealthConnect { addr, source })?;
        HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map_err(|source| Error::HealthCall { addr, source })
    };
    let response =
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| Error::HealthTimeout {
                addr,
                after: timeout,
            })??;
    match ServingStatus::try_from(response.into_inner().status) {
        Ok(ServingStatus::Serving) => Ok(()),
        status => Err(Error::NotServing {
            addr,
            service: service.to_owned(),
            status: status.map_or("an unknown status", |status| status.as_str_name()),
        }),
    }
}

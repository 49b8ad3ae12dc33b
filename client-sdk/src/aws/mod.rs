//! Cloud Map through the AWS SDK.
//!
//! [`servicediscovery_client`] builds the Cloud Map client every part of this project uses. Build
//! yours with it too when you point the SDK at a local stand-in (moto, LocalStack) with
//! `AWS_ENDPOINT_URL` or [`aws_types::SdkConfig::endpoint_url`]: it keeps
//! `DiscoverInstances` working there (see below). Against AWS's own endpoints it changes nothing.
//!
//! # The `data-` host prefix
//!
//! Cloud Map's `DiscoverInstances` and `DiscoverInstancesRevision` are served by
//! `data-servicediscovery.<region>.amazonaws.com`; the SDK models this as a host prefix and
//! applies it to an overridden endpoint as well, turning `http://127.0.0.1:5000` into the
//! unresolvable `http://data-127.0.0.1:5000`. The client built here removes the prefix when, and
//! only when, an endpoint URL override is in effect for the request.

mod endpoint;

pub use aws_sdk_servicediscovery as sdk;

/// A Cloud Map client configured from `config`, which keeps an overridden endpoint's host for
/// the discovery operations (see the [module docs](self)).
pub fn servicediscovery_client(config: &aws_types::SdkConfig) -> sdk::Client {
    let config = sdk::config::Builder::from(config)
        .interceptor(endpoint::KeepOverriddenHost)
        .build();
    sdk::Client::from_conf(config)
}

#[cfg(test)]
mod tests {
    use aws_credential_types::Credentials;
    use aws_smithy_http_client::test_util::capture_request;
    use aws_types::region::Region;
    use aws_types::sdk_config::SdkConfig;

    use super::*;

    fn config(endpoint_url: Option<&str>) -> (SdkConfig, impl FnOnce() -> http::Uri) {
        let (http_client, captured) = capture_request(None);
        let mut builder = SdkConfig::builder()
            .behavior_version(sdk::config::BehaviorVersion::latest())
            .region(Region::new("eu-central-1"))
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    Credentials::for_tests(),
                ),
            )
            .http_client(http_client);
        if let Some(url) = endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let uri = move || captured.expect_request().uri().to_string().parse().unwrap();
        (builder.build(), uri)
    }

    async fn discover_host(endpoint_url: Option<&str>) -> String {
        let (config, uri) = config(endpoint_url);
        let client = servicediscovery_client(&config);
        // The captured response is empty; only the request matters here.
        let _ = client
            .discover_instances()
            .namespace_name("ns")
            .service_name("svc")
            .send()
            .await;
        uri().authority().unwrap().to_string()
    }

    async fn revision_host(endpoint_url: Option<&str>) -> String {
        let (config, uri) = config(endpoint_url);
        let client = servicediscovery_client(&config);
        let _ = client
            .discover_instances_revision()
            .namespace_name("ns")
            .service_name("svc")
            .send()
            .await;
        uri().authority().unwrap().to_string()
    }

    async fn list_host(endpoint_url: Option<&str>) -> String {
        let (config, uri) = config(endpoint_url);
        let client = servicediscovery_client(&config);
        let _ = client.list_instances().service_id("srv-1").send().await;
        uri().authority().unwrap().to_string()
    }

    #[tokio::test]
    async fn against_aws_the_data_prefix_is_kept() {
        assert_eq!(
            discover_host(None).await,
            "data-servicediscovery.eu-central-1.amazonaws.com"
        );
        assert_eq!(
            revision_host(None).await,
            "data-servicediscovery.eu-central-1.amazonaws.com"
        );
        assert_eq!(
            list_host(None).await,
            "servicediscovery.eu-central-1.amazonaws.com"
        );
    }

    #[tokio::test]
    async fn with_an_endpoint_override_the_host_is_kept() {
        let local = Some("http://127.0.0.1:4566");
        assert_eq!(discover_host(local).await, "127.0.0.1:4566");
        assert_eq!(revision_host(local).await, "127.0.0.1:4566");
        assert_eq!(list_host(local).await, "127.0.0.1:4566");
    }

    #[tokio::test]
    async fn without_the_interceptor_the_sdk_prefixes_an_override() {
        // Documents the trap this module exists for; if the SDK ever stops doing this, the
        // interceptor can go.
        let (config, uri) = config(Some("http://127.0.0.1:4566"));
        let client = sdk::Client::new(&config);
        let _ = client
            .discover_instances()
            .namespace_name("ns")
            .service_name("svc")
            .send()
            .await;
        assert_eq!(uri().authority().unwrap().as_str(), "data-127.0.0.1:4566");
    }
}

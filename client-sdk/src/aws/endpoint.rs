//! Keeps the configured endpoint's host when the endpoint is overridden.
//!
//! Cloud Map models a host prefix, `data-`, for `DiscoverInstances` and
//! `DiscoverInstancesRevision`: against AWS these go to `data-servicediscovery.<region>...`. The Rust
//! SDK applies the prefix to an overridden endpoint too, so `http://127.0.0.1:4566` (moto,
//! LocalStack) becomes `http://data-127.0.0.1:4566` and fails with a DNS error, and the SDK has no
//! switch to turn this off. An endpoint override names one host that serves every operation, so
//! the prefix has no meaning there: this interceptor removes it, and only then.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::endpoint::EndpointPrefix;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_types::endpoint_config::EndpointUrl;

/// Removes the operation's modelled host prefix when an endpoint URL override is in effect.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KeepOverriddenHost;

impl Intercept for KeepOverriddenHost {
    fn name(&self) -> &'static str {
        "KeepOverriddenHost"
    }

    // Runs after the operation stored its prefix (`read_before_execution`) and before the endpoint
    // is resolved and applied (between attempts' start and transmit).
    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<EndpointUrl>().is_some() && cfg.load::<EndpointPrefix>().is_some() {
            cfg.interceptor_state().unset::<EndpointPrefix>();
        }
        Ok(())
    }
}

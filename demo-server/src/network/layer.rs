//! The emulation as a tower layer around every service of the server: read the headers, let the
//! call run, hold its response for the round trips it would have paid.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::delay::parse_hops;
use super::{CLIENT_ZONE_HEADER, NetworkEmulation, PROXY_HOPS_HEADER, timer};

/// Adds [`NetworkEmulation`]'s round trips to the calls of a server in `own_zone`; passes calls
/// through untouched when there is no emulation.
#[derive(Clone, Debug)]
pub(crate) struct EmulatedNetworkLayer {
    emulation: Option<NetworkEmulation>,
    own_zone: Arc<str>,
}

impl EmulatedNetworkLayer {
    pub(crate) fn new(emulation: Option<NetworkEmulation>, own_zone: &str) -> Self {
        Self {
            emulation,
            own_zone: own_zone.into(),
        }
    }
}

impl<S> Layer<S> for EmulatedNetworkLayer {
    type Service = EmulatedNetwork<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EmulatedNetwork {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`EmulatedNetworkLayer`] makes.
#[derive(Clone, Debug)]
pub(crate) struct EmulatedNetwork<S> {
    inner: S,
    layer: EmulatedNetworkLayer,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<http::Request<B>> for EmulatedNetwork<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let delay = self
            .layer
            .emulation
            .map_or(Default::default(), |emulation| {
                let header = |name| request.headers().get(name).and_then(|v| v.to_str().ok());
                emulation.delay(
                    &self.layer.own_zone,
                    header(CLIENT_ZONE_HEADER),
                    parse_hops(header(PROXY_HOPS_HEADER)),
                )
            });
        let response = self.inner.call(request);
        if delay.is_zero() {
            return Box::pin(response);
        }
        Box::pin(async move {
            let response = response.await;
            timer::sleep(delay).await;
            response
        })
    }
}

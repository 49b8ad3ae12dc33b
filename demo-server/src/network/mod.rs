//! Emulated network round trips between availability zones, so that the cost of crossing zones
//! shows on loopback.
//!
//! On one machine every call takes the same few microseconds, whichever "zone" its server plays.
//! With [`NetworkEmulation`] set, the server adds to each call the round trip it would have had
//! on AWS: the caller names its zone in the [`CLIENT_ZONE_HEADER`] request header, and the
//! server waits [`NetworkEmulation::in_zone`] when that is its own zone and
//! [`NetworkEmulation::cross_zone`] when it is another (a call without the header waits
//! nothing). A load-balancer hop costs the caller one more round trip inside its zone: the proxy
//! adds [`PROXY_HOPS_HEADER`] (`1`), and the server adds one in-zone round trip per hop. The
//! emulation assumes the proxy runs in the caller's zone (a zonal load-balancer node, or a
//! sidecar in the caller's task), so the proxy-to-server leg crosses zones exactly when the
//! caller and the server are in different zones.
//!
//! The wait comes after the call's response is ready and before it is sent, on a timer thread of
//! its own with sub-millisecond resolution ([`timer`]): tokio's timer has 1 ms granularity,
//! which would round every emulated round trip up to 1–2 ms.
//!
//! Measured AWS figures (a public us-east-1 measurement): 0.26–0.41 ms within a zone,
//! 0.94–1.13 ms across zones. [`NetworkEmulation::AWS`] takes the middle of each range.

mod delay;
mod layer;
mod timer;

use std::time::Duration;

pub(crate) use layer::EmulatedNetworkLayer;

/// The request header in which a caller names its availability zone, e.g. `eu-central-1c`.
pub const CLIENT_ZONE_HEADER: &str = "demo-client-zone";
/// The request header a proxy sets to the number of proxy hops between caller and server
/// (`1` for one load balancer).
pub const PROXY_HOPS_HEADER: &str = "demo-proxy-hops";

/// The round trips to emulate (`DEMO_RTT_IN_ZONE_US` and `DEMO_RTT_CROSS_ZONE_US`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetworkEmulation {
    /// A round trip between two hosts in the same zone.
    pub in_zone: Duration,
    /// A round trip between two zones of one region.
    pub cross_zone: Duration,
}

impl NetworkEmulation {
    /// The most either round trip may be: one second.
    pub const MAX_ROUND_TRIP: Duration = Duration::from_secs(1);

    /// The middle of a public us-east-1 measurement: 0.26–0.41 ms within a zone (0.335 ms),
    /// 0.94–1.13 ms across zones (1.035 ms).
    pub const AWS: Self = Self {
        in_zone: Duration::from_micros(335),
        cross_zone: Duration::from_micros(1035),
    };

    /// These round trips; `None` when either is above [`Self::MAX_ROUND_TRIP`].
    pub fn new(in_zone: Duration, cross_zone: Duration) -> Option<Self> {
        (in_zone <= Self::MAX_ROUND_TRIP && cross_zone <= Self::MAX_ROUND_TRIP).then_some(Self {
            in_zone,
            cross_zone,
        })
    }

    /// What a call from `caller_zone` (its [`CLIENT_ZONE_HEADER`]) through `proxy_hops` proxies
    /// ([`PROXY_HOPS_HEADER`]) waits on a server in `own_zone`. See [the module](self).
    pub fn delay(&self, own_zone: &str, caller_zone: Option<&str>, proxy_hops: u32) -> Duration {
        delay::round_trips(self, own_zone, caller_zone, proxy_hops)
    }
}

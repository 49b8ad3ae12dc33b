//! Building a balancer: typed options with documented defaults, validated once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::endpoint::ConnectSettings;
use super::health::HealthCheck;
use super::state::{self, EndpointFactory, Settings, Shared};
use super::{Balancer, Inner};
use crate::aws::sdk;
use crate::discovery::shared::{self, ClientIdentity};
use crate::discovery::{
    AbortOnDrop, CloudMapSource, Discovery, DiscoveryOptions, InstanceSource, NamespaceOwner,
};
use crate::error::Error;
use crate::instance::IpFamily;
use crate::outlier::{Limits, OutlierOptions};
use crate::picker::{AdaptiveOptions, LatencyAware, SlowStart, ZoneMode};
use crate::retry::RetryOptions;
use crate::telemetry::Ident;
use crate::zone::{Detection, OwnZone};

/// The balancer's settings. Every field has a documented default ([`Options::default`]); change
/// what you need:
///
/// ```
/// # use std::time::Duration;
/// use cloudmap_balancer::{Options, ZoneMode};
/// let mut options = Options::default();
/// options.zone_mode = ZoneMode::Fixed { local_percent: 80 };
/// options.discovery.poll_interval = Duration::from_secs(2);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Options {
    /// How calls are kept in the own zone. Default [`ZoneMode::Adaptive`].
    pub zone_mode: ZoneMode,
    /// The adaptive zone controller (used in adaptive mode without a caller fleet).
    pub adaptive: AdaptiveOptions,
    /// Panic mode starts when eligible instances hold less than this share of the weight.
    /// 0 to 1; 0 disables it. Default 0.5.
    pub panic_threshold: f64,
    /// `LB_LOAD` older than this (by `LB_UPDATED_AT`) is ignored. Default 5 minutes.
    pub load_max_age: Duration,
    /// How discovery polls Cloud Map.
    pub discovery: DiscoveryOptions,
    /// How long a call made before the first snapshot waits for it before failing
    /// `UNAVAILABLE`. A configuration error from Cloud Map (no such service or namespace,
    /// access denied) fails such calls at once, `FAILED_PRECONDITION`. Default 5 s.
    pub first_snapshot_timeout: Duration,
    /// Connection timeout per instance (TCP and TLS; the HTTP/2 handshake gets as long again).
    /// Default 1 s: instances are in the same VPC.
    pub connect_timeout: Duration,
    /// Which address of a dual-stack instance (both `AWS_INSTANCE_IPV4` and
    /// `AWS_INSTANCE_IPV6`) a connection dials first, and whether it falls back to the other
    /// (see [`IpFamily`]). Instances with one address are dialled at it. Default
    /// [`IpFamily::Ipv4First`].
    pub ip_family: IpFamily,
    /// First ejection after a connection failure; doubles with each consecutive failure.
    /// Default 1 s.
    pub ejection_base: Duration,
    /// Longest ejection after connection failures. Default 30 s.
    pub ejection_max: Duration,
    /// Ejections of every kind (connection failures, outlier detection) together never leave
    /// more than this percentage of the instances that can be picked ejected. 0 to 100; a
    /// single instance is never ejected. Default 50.
    pub max_ejection_percent: u8,
    /// Client-side health checking (gRFC A17): a gRPC health `Watch` on every connection. On by
    /// default.
    pub health_check: HealthCheck,
    /// Outlier detection (gRFC A50): ejecting instances whose calls fail. On by default.
    pub outlier: OutlierOptions,
    /// Retries (gRFC A6): transparent retries always; policy retries when configured.
    pub retry: RetryOptions,
    /// Slow start (Envoy's): new tasks ramp up over a window after `LB_RUNNING_SINCE`.
    /// Default `None` (off).
    pub slow_start: Option<SlowStart>,
    /// Latency-aware two choices: within a zone, an instance whose recent latency is more than
    /// twice the other candidate's, and higher by more than the noise (2 ms plus four times the
    /// client's own scheduling jitter), is compared by `(in-flight + 1) × latency` per unit of
    /// weight, so one slow instance stops taking calls. The part of a call that a stall of the
    /// client covers is taken off its latency, and slow answers count in full once they have
    /// lasted 10 ms: a
    /// busy or throttled caller does not move calls between instances that are equally fast.
    /// `None` compares in-flight calls alone (tower's and gRPC's P2C). Default on
    /// ([`LatencyAware::default`]).
    pub latency_aware: Option<LatencyAware>,
    /// HTTP/2 keep-alive pings on every connection, idle or not, so a connection to a task that
    /// vanished without closing it is noticed. `None` disables them. Default 30 s.
    pub keep_alive_interval: Option<Duration>,
    /// How long a keep-alive ping may go unanswered. Default 10 s.
    pub keep_alive_timeout: Duration,
    /// Time allowed for reading the own zone from the ECS task metadata endpoint. Default 2 s.
    pub zone_detection_timeout: Duration,
    /// Time allowed for reading the own zone from EC2 instance metadata (IMDSv2), token and
    /// both paths together. Default 1 s.
    pub imds_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            zone_mode: ZoneMode::Adaptive,
            adaptive: AdaptiveOptions::default(),
            panic_threshold: 0.5,
            load_max_age: Duration::from_secs(300),
            discovery: DiscoveryOptions::default(),
            first_snapshot_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            ip_family: IpFamily::Ipv4First,
            ejection_base: Duration::from_secs(1),
            ejection_max: Duration::from_secs(30),
            max_ejection_percent: 50,
            health_check: HealthCheck::default(),
            outlier: OutlierOptions::default(),
            retry: RetryOptions::default(),
            slow_start: None,
            latency_aware: Some(LatencyAware::default()),
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(10),
            zone_detection_timeout: Duration::from_secs(2),
            imds_timeout: Duration::from_secs(1),
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), Error> {
        fn invalid(name: &'static str, reason: &str) -> Result<(), Error> {
            Err(Error::InvalidOption {
                name,
                reason: reason.to_owned(),
            })
        }
        self.discovery.validate()?;
        if !(0.0..=1.0).contains(&self.panic_threshold) {
            return invalid("panic_threshold", "must be between 0 and 1");
        }
        if let ZoneMode::Fixed { local_percent } = self.zone_mode
            && local_percent > 100
        {
            return invalid("zone_mode", "local_percent must be at most 100");
        }
        for (name, value) in [
            ("first_snapshot_timeout", self.first_snapshot_timeout),
            ("connect_timeout", self.connect_timeout),
            ("ejection_base", self.ejection_base),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("zone_detection_timeout", self.zone_detection_timeout),
            ("imds_timeout", self.imds_timeout),
        ] {
            if value.is_zero() {
                return invalid(name, "must be above 0");
            }
        }
        if self.ejection_max < self.ejection_base {
            return invalid("ejection_max", "must be at least ejection_base");
        }
        if self.max_ejection_percent > 100 {
            return invalid("max_ejection_percent", "must be at most 100");
        }
        let h = &self.health_check;
        if h.backoff_base.is_zero() || h.backoff_max < h.backoff_base {
            return invalid("health_check", "needs 0 < backoff_base <= backoff_max");
        }
        self.outlier.validate()?;
        self.retry.validate()?;
        if let Some(slow) = &self.slow_start
            && (slow.window.is_zero()
                || !(slow.aggression > 0.0 && slow.aggression.is_finite())
                || !(1..=100).contains(&slow.min_weight_percent))
        {
            return invalid(
                "slow_start",
                "needs a window above 0, aggression above 0 and min_weight_percent 1 to 100",
            );
        }
        if let Some(l) = &self.latency_aware
            && (!(l.ratio > 1.0
                && l.ratio.is_finite()
                && l.lag_gap_factor >= 0.0
                && l.lag_gap_factor.is_finite())
                || l.decay.is_zero()
                || l.stale_after.is_zero())
        {
            return invalid(
                "latency_aware",
                "needs a ratio above 1, a lag_gap_factor of 0 or more, and decay and stale_after above 0",
            );
        }
        let a = &self.adaptive;
        if a.tick < Duration::from_millis(10) {
            return invalid("adaptive.tick", "must be at least 10 ms");
        }
        if a.latency_window.is_zero() || a.remote_window.is_zero() {
            return invalid("adaptive", "windows must be above 0");
        }
        if !(0.0..=0.5).contains(&a.probe_share) {
            return invalid("adaptive.probe_share", "must be between 0 and 0.5");
        }
        if !(a.lag_gap_factor >= 0.0 && a.lag_gap_factor.is_finite()) {
            return invalid("adaptive.lag_gap_factor", "must be 0 or more");
        }
        if !(a.recover_ratio >= 1.0 && a.slow_ratio > a.recover_ratio) {
            return invalid(
                "adaptive",
                "needs 1 <= recover_ratio < slow_ratio (the hysteresis band)",
            );
        }
        if a.cpu_recover_gap > a.cpu_gap {
            return invalid("adaptive", "cpu_recover_gap must be at most cpu_gap");
        }
        if !(a.step_up > 0.0 && a.step_up <= 1.0 && a.step_down > 0.0 && a.step_down <= 1.0) {
            return invalid("adaptive", "steps must be in (0, 1]");
        }
        Ok(())
    }
}

/// A user's adjustment of each instance's tonic endpoint.
type Configure =
    Arc<dyn Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint + Send + Sync>;

/// Builds a [`Balancer`]; from [`Balancer::builder`] or [`Balancer::builder_with_source`].
#[must_use]
pub struct Builder {
    source: Arc<dyn InstanceSource>,
    ident: Ident,
    /// Cloud Map builders: the client, and who it reads as (the key of shared pollers).
    client: Option<(sdk::Client, ClientIdentity)>,
    caller: Option<(Arc<dyn InstanceSource>, Ident)>,
    caller_service: Option<(String, String)>,
    owner: NamespaceOwner,
    zone: OwnZone,
    zone_id: Option<String>,
    options: Options,
    configure: Option<Configure>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
    seed: Option<u64>,
    /// The xDS source: `None` reads the environment at build.
    #[cfg(feature = "xds")]
    xds: Option<Option<crate::discovery::xds::XdsOptions>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("namespace", &self.ident.namespace)
            .field("service", &self.ident.service)
            .field("zone", &self.zone)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Builder {
    pub(super) fn cloud_map(
        config: &aws_types::SdkConfig,
        namespace: String,
        service: String,
    ) -> Self {
        let client = crate::aws::servicediscovery_client(config);
        let source = CloudMapSource::from_client(client.clone(), &namespace, &service);
        let mut builder = Self::with_source(Arc::new(source), namespace, service);
        builder.client = Some((client, ClientIdentity::of(config)));
        builder
    }

    pub(super) fn with_source(
        source: Arc<dyn InstanceSource>,
        namespace: String,
        service: String,
    ) -> Self {
        Self {
            source,
            ident: Ident { namespace, service },
            client: None,
            caller: None,
            caller_service: None,
            owner: NamespaceOwner::Caller,
            zone: OwnZone::Detect,
            zone_id: None,
            options: Options::default(),
            configure: None,
            #[cfg(feature = "tls")]
            tls: None,
            seed: None,
            #[cfg(feature = "xds")]
            xds: None,
        }
    }

    /// Where the own zone comes from. Default [`OwnZone::Detect`] (the ECS task metadata).
    pub fn zone(mut self, zone: OwnZone) -> Self {
        self.zone = zone;
        self
    }

    /// Shorthand for `.zone(OwnZone::Fixed(zone))`.
    pub fn local_zone(self, zone: impl Into<String>) -> Self {
        self.zone(OwnZone::Fixed(zone.into()))
    }

    /// The own zone's AZ ID, e.g. `euc1-az2` (the same in every account, where zone names are
    /// not): zones are then matched by ID wherever the instances carry `AVAILABILITY_ZONE_ID`.
    /// Wins over a detected ID. Default: the detected one (EC2 instance metadata), if any.
    pub fn local_zone_id(mut self, id: impl Into<String>) -> Self {
        self.zone_id = Some(id.into());
        self
    }

    /// All options at once (see [`Options`] for the defaults).
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// The Cloud Map service the *callers* are registered in (this client's own fleet). With it,
    /// adaptive mode uses Envoy's zone-aware routing from the callers' zone distribution. Only
    /// for builders from [`Balancer::builder`]; others use [`Builder::caller_source`].
    pub fn caller_service(
        mut self,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        self.caller_service = Some((namespace.into(), service.into()));
        self
    }

    /// The account that owns the namespace, when another account shares it with the caller's
    /// through AWS RAM: discovery then sends it as `OwnerAccount` (see [`NamespaceOwner`]).
    /// Default [`NamespaceOwner::Caller`] (the caller's own namespace; nothing sent).
    ///
    /// It applies to the balanced service and to a [`caller_service`](Self::caller_service) in
    /// the same namespace; a caller service in another namespace is read as the caller's own,
    /// except with [`NamespaceOwner::Detect`], which finds each namespace's owner. Only for
    /// builders from [`Balancer::builder`] (a custom source reads what it reads); `build` fails
    /// on an account ID that is not 12 digits.
    ///
    /// [`Balancer::builder`]: crate::Balancer::builder
    pub fn namespace_owner(mut self, owner: NamespaceOwner) -> Self {
        self.owner = owner;
        self
    }

    /// The callers' fleet from any source (see [`Builder::caller_service`]).
    pub fn caller_source(
        mut self,
        source: impl InstanceSource,
        namespace: impl Into<String>,
        service: impl Into<String>,
    ) -> Self {
        let ident = Ident {
            namespace: namespace.into(),
            service: service.into(),
        };
        self.caller = Some((Arc::new(source), ident));
        self
    }

    /// Adjusts every instance's tonic [`Endpoint`](tonic::transport::Endpoint) (timeouts,
    /// window sizes, user agent, ...) after the balancer's own settings.
    ///
    /// TCP-level options set here (`tcp_nodelay`, `tcp_keepalive`, `local_address`, ...) are
    /// not applied: the balancer opens the TCP connections itself, with its own connector (it
    /// always sets `TCP_NODELAY`), and tonic applies those options only to its built-in one.
    /// HTTP/2, TLS and timeout settings apply. A `timeout` set here is a per-attempt timeout:
    /// an attempt it ends fails `DEADLINE_EXCEEDED`, counts nothing against the instance, keeps
    /// the connection, and is retried by a retry policy that retries `DEADLINE_EXCEEDED`, within
    /// the call's own deadline.
    pub fn configure_endpoint(
        mut self,
        configure: impl Fn(tonic::transport::Endpoint) -> tonic::transport::Endpoint
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// Calls the instances over TLS with this configuration. Instances are addressed by IP, so
    /// set [`domain_name`](tonic::transport::ClientTlsConfig::domain_name) to the name their
    /// certificates carry.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Takes the instances from the `cloudmap-xds` server instead of polling Cloud Map, which
    /// stays the fallback (see [`discovery::xds`](crate::discovery::xds)); the caller fleet
    /// ([`caller_service`](Self::caller_service)) too. `None` polls Cloud Map directly whatever
    /// the environment says. Default: from the environment at [`build`](Self::build)
    /// (`CLOUDMAP_XDS_SERVERS`, `GRPC_XDS_BOOTSTRAP_CONFIG`, `GRPC_XDS_BOOTSTRAP`), direct
    /// when it names no server. Only for builders from [`Balancer::builder`]: a custom source
    /// is used as it is. The node's zone defaults to [`local_zone`](Self::local_zone) or
    /// [`local_zone_id`](Self::local_zone_id) when set.
    #[cfg(feature = "xds")]
    pub fn xds(mut self, options: Option<crate::discovery::xds::XdsOptions>) -> Self {
        self.xds = Some(options);
        self
    }

    /// Seeds the random number generators (jitter, picks) for reproducible runs. Default: a
    /// random seed.
    pub fn rng_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts discovery and the balancer's background task on the current Tokio runtime.
    ///
    /// A builder from [`Balancer::builder`] joins the process's poller for its service when
    /// one runs (another balancer, or another balancer's `caller_service`, naming the same
    /// service with the same credentials, region, endpoint and discovery options; see
    /// [`discovery`](crate::discovery)), and so does its caller fleet.
    ///
    /// Fails on invalid options or outside a Tokio runtime; never on Cloud Map errors (those
    /// are retried in the background; [`Balancer::ready`] and calls made before the first
    /// snapshot fail at once with a configuration error, and `UNAVAILABLE` after the
    /// first-snapshot timeout otherwise).
    pub fn build(mut self) -> Result<Balancer, Error> {
        self.options.validate()?;
        self.owner.validate()?;
        // Whose namespace each Cloud Map service is read from.
        let owner_of = |namespace: &str| match &self.owner {
            NamespaceOwner::Account(_) if namespace != self.ident.namespace => {
                NamespaceOwner::Caller
            }
            owner => owner.clone(),
        };
        if self.owner != NamespaceOwner::Caller {
            let Some((client, _)) = &self.client else {
                return Err(Error::InvalidOption {
                    name: "namespace_owner",
                    reason: "needs a Cloud Map builder (Balancer::builder); a custom source \
                             reads what it reads"
                        .to_owned(),
                });
            };
            let source = CloudMapSource::from_client(
                client.clone(),
                &self.ident.namespace,
                &self.ident.service,
            )
            .with_owner(self.owner.clone())?;
            self.source = Arc::new(source);
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let seed = self.seed.unwrap_or_else(|| fastrand::u64(..));
        let options = self.options;
        // The xDS source wraps the Cloud Map sources; such pollers are not shared.
        #[cfg(feature = "xds")]
        let xds = match self.xds {
            _ if self.client.is_none() => None,
            Some(choice) => choice,
            None => crate::discovery::xds::XdsOptions::from_env()?,
        }
        .map(|mut xds| {
            if xds.zone.is_none() {
                xds.zone = self.zone_id.clone().or(match &self.zone {
                    OwnZone::Fixed(name) => Some(name.clone()),
                    _ => None,
                });
            }
            xds
        });
        #[cfg(feature = "xds")]
        let via_xds = |source: Arc<dyn InstanceSource>, ident: &Ident| match &xds {
            Some(xds) => crate::discovery::xds::XdsSource::start(
                xds,
                &ident.namespace,
                &ident.service,
                source,
            )
            .map(|s| Arc::new(s) as Arc<dyn InstanceSource>),
            None => Ok(source),
        };
        #[cfg(not(feature = "xds"))]
        let via_xds = |source: Arc<dyn InstanceSource>, _: &Ident| Ok::<_, Error>(source);
        #[cfg(feature = "xds")]
        let shareable = xds.is_none();
        #[cfg(not(feature = "xds"))]
        let shareable = true;
        let own_source = via_xds(self.source, &self.ident)?;

        let zone = Detection::new(
            self.zone,
            self.zone_id,
            options.zone_detection_timeout,
            options.imds_timeout,
        );

        // The caller fleet, and whose namespace it is read from when it is read from Cloud Map
        // (then it may be shared).
        let caller = match (self.caller, self.caller_service) {
            (Some((source, ident)), _) => Some((source, ident, None)),
            (None, Some((namespace, service))) => {
                let Some((client, _)) = self.client.clone() else {
                    return Err(Error::InvalidOption {
                        name: "caller_service",
                        reason: "needs a Cloud Map builder (Balancer::builder); use caller_source"
                            .to_owned(),
                    });
                };
                let owner = owner_of(&namespace);
                let source = CloudMapSource::from_client(client, &namespace, &service)
                    .with_owner(owner.clone())?;
                let ident = Ident { namespace, service };
                let source = via_xds(Arc::new(source), &ident)?;
                // Shared with other balancers (by its owner too) unless it goes through xDS.
                Some((source, ident, shareable.then_some(owner)))
            }
            (None, None) => None,
        };

        #[cfg(feature = "tls")]
        let plaintext = self.tls.is_none();
        #[cfg(not(feature = "tls"))]
        let plaintext = true;
        let endpoint = endpoint_factory(
            &options,
            self.configure,
            #[cfg(feature = "tls")]
            self.tls,
        )?;
        let limits = Limits {
            connect_base: options.ejection_base,
            connect_max: options.ejection_max,
            outlier_base: options.outlier.base_ejection_time,
            outlier_longest: options.outlier.longest_ejection(),
            cap_percent: options.max_ejection_percent,
            outlier_cap_percent: options.outlier.max_ejection_percent,
        };
        let settings = Settings {
            zone_mode: options.zone_mode,
            panic_threshold: options.panic_threshold,
            load_max_age: options.load_max_age,
            first_snapshot_timeout: options.first_snapshot_timeout,
            endpoint,
            connect: Arc::new(ConnectSettings {
                connect_timeout: options.connect_timeout,
                ip_family: options.ip_family,
                health: Arc::new(options.health_check.clone()),
                plaintext,
            }),
            outlier: options.outlier.clone(),
            retry: options.retry.clone(),
            slow_start: options.slow_start,
            latency_aware: options.latency_aware,
            probe_share: options.adaptive.probe_share,
        };
        let shared = Arc::new(Shared::new(self.ident.clone(), settings, limits, seed));
        // Cloud Map pollers are shared within the process (see `discovery::shared`); custom
        // sources are the caller's own.
        let identity = self
            .client
            .as_ref()
            .filter(|_| shareable)
            .map(|(_, identity)| identity.clone());
        let start =
            |source: Arc<dyn InstanceSource>, ident: Ident, owner: &NamespaceOwner, seed: u64| {
                let spawn = || {
                    Discovery::spawn(
                        source,
                        options.discovery.clone(),
                        ident.clone(),
                        seed,
                        &runtime,
                    )
                };
                match &identity {
                    Some(identity) => shared::discovery(
                        shared::Key::new(&runtime, identity, &ident, owner, &options.discovery),
                        spawn,
                    ),
                    None => spawn(),
                }
            };
        let discovery = start(own_source, self.ident, &self.owner, seed ^ 0x5EED_0001);
        let caller = caller.map(|(source, ident, cloud_map)| {
            if let Some(owner) = cloud_map {
                start(source, ident, &owner, seed ^ 0x5EED_0002)
            } else {
                Discovery::spawn(
                    source,
                    options.discovery.clone(),
                    ident,
                    seed ^ 0x5EED_0002,
                    &runtime,
                )
            }
        });
        let task = runtime.spawn(state::run(
            Arc::clone(&shared),
            discovery.subscribe(),
            caller.as_ref().map(Discovery::subscribe),
            zone,
            options.adaptive.clone(),
        ));
        Ok(Balancer {
            inner: Arc::new(Inner {
                shared,
                discovery,
                caller,
                _task: AbortOnDrop(task),
            }),
        })
    }
}

/// The tonic endpoint for an instance: plain HTTP/2 (or TLS), the balancer's timeouts and
/// keep-alive, then the user's adjustments.
fn endpoint_factory(
    options: &Options,
    configure: Option<Configure>,
    #[cfg(feature = "tls")] tls: Option<tonic::transport::ClientTlsConfig>,
) -> Result<EndpointFactory, Error> {
    #[cfg(feature = "tls")]
    let scheme = if tls.is_some() { "https" } else { "http" };
    #[cfg(not(feature = "tls"))]
    let scheme = "http";
    let connect_timeout = options.connect_timeout;
    let keep_alive = options.keep_alive_interval;
    let keep_alive_timeout = options.keep_alive_timeout;
    let base = move |addr: SocketAddr| -> Result<tonic::transport::Endpoint, Error> {
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(addr.to_string())
            .path_and_query("/")
            .build()
            .map_err(|e| Error::InvalidOption {
                name: "address",
                reason: e.to_string(),
            })?;
        // TCP_NODELAY is set by the balancer's own connector (see `endpoint.rs`).
        let mut endpoint = tonic::transport::Endpoint::from(uri).connect_timeout(connect_timeout);
        if let Some(interval) = keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_timeout(keep_alive_timeout)
                .keep_alive_while_idle(true);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &tls {
            endpoint = endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::InvalidOption {
                    name: "tls",
                    reason: crate::error::Chain(&e).to_string(),
                })?;
        }
        Ok(match &configure {
            Some(configure) => configure(endpoint),
            None => endpoint,
        })
    };
    // Everything that can fail depends on the settings, not the address: check once here.
    base(SocketAddr::from(([127, 0, 0, 1], 1)))?;
    Ok(Arc::new(move |addr| {
        base(addr).unwrap_or_else(|error| {
            // Unreachable: the same settings built an endpoint above, and a socket address is
            // always a valid URI authority. Should it happen, the instance fails to connect and
            // is ejected like any unreachable one.
            tracing::error!(%addr, error = %crate::error::Chain(&error), "no endpoint for instance");
            tonic::transport::Endpoint::from(http::Uri::from_static("http://0.0.0.0:1"))
        })
    }))
}

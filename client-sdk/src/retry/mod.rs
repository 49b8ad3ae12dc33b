//! Retries (gRFC A6): transparent retries of calls that never reached the server's application,
//! and configurable retry policies with A6's token-bucket throttle.
//!
//! Retries happen in the balancer, between the channel and the picker, so every attempt can go to
//! another instance: while an eligible instance this call has not tried exists, the attempt goes
//! to one of those, the local zone's first.
//!
//! # Transparent retries (always on)
//!
//! A call is retried on another instance, without any configuration and without counting towards
//! a policy's attempts or the throttle, when it cannot have reached the server's application:
//! the connection could not be made or was already gone (nothing was sent), the server refused
//! the stream (`REFUSED_STREAM`), or it sent `GOAWAY` (with `NO_ERROR`) before processing the
//! stream. At most [`MAX_TRANSPARENT`] per call, each to an instance not tried yet. A call whose
//! connection breaks *after* its request was sent is not retried transparently (the server may
//! have acted on it): it fails `UNAVAILABLE` naming the instance, which a policy may retry.
//!
//! # Policy retries (opt in)
//!
//! [`RetryOptions::policy`] for every method, or per method or per service through
//! [`RetryOptions::methods`] (keys `/package.Service/Method` or `/package.Service/`, as gRPC's
//! service config names them; a more specific key wins; `None` turns retries off for that key).
//! A failed attempt is retried when its status is in the policy's `retryable_codes`, the call is
//! not committed, attempts are left (`max_attempts`, at most 5), the throttle allows it, and the
//! next attempt can start before the call's deadline. The `n`-th retry waits a random
//! `(1 − jitter … 1] × min(initial_backoff × multiplier^(n−1), max_backoff)` (with `jitter` 1,
//! A6's `random(0, …)`), or what the server asks for in `grpc-retry-pushback-ms` (a negative or
//! unparseable value: no retry). Each retry carries `grpc-previous-rpc-attempts`.
//!
//! **Committed** (A6): once response headers (not a trailers-only error) or a response message
//! arrived, or the request body outgrew [`RetryOptions::buffer_limit`], the call is not retried:
//! the request is buffered for replay only up to that limit. So a streaming call is retried only
//! until it commits.
//!
//! **Deadline**: the call's deadline (its `grpc-timeout`) bounds all attempts together: each
//! attempt is sent with the time that is left, no attempt starts after the deadline, and a call
//! still waiting for its response headers when the deadline passes fails `DEADLINE_EXCEEDED`,
//! whichever timer notices it first: the balancer's own, tonic's enforcement of the
//! `grpc-timeout` the attempt carries (which tonic itself would report as `CANCELLED`), or the
//! server's (a server's `DEADLINE_EXCEEDED` reaches the caller as it is; a `CANCELLED` a server
//! answers once the deadline has passed, as tonic's server does, becomes `DEADLINE_EXCEEDED`).
//! The connection stays, nothing counts against the instance, and the call takes no retry token.
//! After the response headers the deadline is the server's to enforce (as with tonic); a
//! transport failure or a server's `CANCELLED` after it is reported `DEADLINE_EXCEEDED` too.
//! A caller that drops its call (cancellation) counts nothing against the instance either, and
//! the server sees the call cancelled (`RST_STREAM(CANCEL)`), also when the caller drops a
//! streaming call's response while its request stream is still open (tonic's own channel then
//! leaves the call open until the request stream ends, and half-closes it).
//!
//! # Transport failures
//!
//! What a failed attempt's transport error is, by the type of the first error in its source
//! chain that the balancer knows, and what it does. An error it does not know is never taken
//! for a broken connection: a socket that really failed is seen by the connection's own watch,
//! which forgets the connection anyway.
//!
//! | error (first known in the chain) | failure | connection | outlier detection | retries | caller sees |
//! |---|---|---|---|---|---|
//! | the balancer's `ConnectionGone` (tonic tried to reconnect underneath) | not sent | forgotten (already gone) | nothing | transparent | `UNAVAILABLE` |
//! | `tonic::ConnectError` (connecting failed) | not sent | forgotten | a connect failure (ejection backoff) | transparent | `UNAVAILABLE` |
//! | `hyper::Error` canceled or closed (the request never left) | not sent | forgotten | nothing | transparent | `UNAVAILABLE` |
//! | `h2::Error`: `RST_STREAM(REFUSED_STREAM)` from the server | refused | kept | nothing | transparent | `UNAVAILABLE` |
//! | `h2::Error`: `GOAWAY(NO_ERROR)` from the server, stream not processed | going away | forgotten | nothing | transparent | `UNAVAILABLE` |
//! | `tonic::TimeoutExpired` (tonic enforcing the call's `grpc-timeout`) | deadline | kept | nothing | none | `DEADLINE_EXCEEDED` |
//! | `tonic::TimeoutExpired` before the call's deadline (a timeout set on the instances' tonic `Endpoint`: a per-attempt timeout) | deadline | kept | nothing | policy (`DEADLINE_EXCEEDED`), within the call's deadline | `DEADLINE_EXCEEDED` |
//! | `h2::Error`: `RST_STREAM` from the server with another reason, or h2 resetting a stream the server broke the protocol on | reset | kept | the mapped code (`CANCELLED`: nothing) | policy, by the mapped code | gRPC's mapping: `CANCEL` → `CANCELLED`, `ENHANCE_YOUR_CALM` → `RESOURCE_EXHAUSTED`, `INADEQUATE_SECURITY` → `PERMISSION_DENIED`, the rest → `INTERNAL` |
//! | `h2::Error`: a reset this client sent (its request body failed) | local | kept | nothing | none (the body cannot be replayed) | the reason's mapped code |
//! | `h2::Error` I/O or `GOAWAY` with an error, `hyper::Error` keep-alive timeout, `std::io::Error` | broken | forgotten | a failure (`UNAVAILABLE`) | policy (`UNAVAILABLE`) | `UNAVAILABLE` |
//! | anything else | unknown | kept | nothing | policy (`UNKNOWN`) | `UNKNOWN` |
//!
//!
//! Whatever the error, an attempt that fails once the call's deadline has passed ends the call
//! `DEADLINE_EXCEEDED` and counts no call against the instance (a connection that is gone is
//! still forgotten, and one that could not be made still counts as a connect failure). Outlier detection counts a code as its [`failure_codes`] say: A50 leaves
//! which statuses count to the implementation (grpc-go counts every non-`OK` status, the
//! caller's own `DEADLINE_EXCEEDED` and `CANCELLED` included); this balancer never counts those
//! two (see [`crate::outlier`]).
//!
//! [`failure_codes`]: crate::outlier::OutlierOptions::failure_codes
//!
//! **Throttle** (A6's `retryThrottling`, one per balancer): a token count starts at `max_tokens`
//! (10); every attempt that fails with a retryable status (or a pushback that says stop) takes
//! one, every successful call gives `token_ratio` (0.1) back; retries stop while the count is at
//! or below half of `max_tokens`. One deviation: a failure on an instance that outlier detection
//! has ejected (that very failure's run of consecutive failures, or an earlier one) takes no
//! token. It says the instance is bad, not the fleet, and without it one always-failing instance
//! would spend the whole budget in the five calls it takes to eject it. So when every instance
//! fails, a balancer makes at most `max_tokens / 2` retries in all, plus those of failures on
//! ejected instances (calls already on their way to an instance when it is ejected, at most the
//! calls in flight, per ejection, and outlier detection ejects at most 10 % of the fleet), plus
//! one per `1 / token_ratio` successes, however many calls fail. (Chosen over Envoy's and
//! Linkerd's budget of 20 % of active requests: it needs no count of active requests and bounds
//! retries in absolute terms, which is what protects a failing fleet.) Retries it refuses are
//! counted.

mod backoff;
mod deadline;
mod throttle;

use std::collections::BTreeMap;
use std::time::Duration;

use tonic::Code;

use crate::codes::StatusCodes;
use crate::error::Error;

pub(crate) use backoff::{Decision, GiveUp, Pushback, RetryState, after_failure};
pub(crate) use deadline::{format_timeout, parse_timeout};
pub(crate) use throttle::Throttle;

/// Transparent retries per call, at most.
pub const MAX_TRANSPARENT: u32 = 3;

/// The largest `max_attempts` a policy may ask for (A6's client-side limit).
pub const MAX_ATTEMPTS: u32 = 5;

/// A retry policy (A6's `retryPolicy`). The default is A6's example: 4 attempts, backoff from
/// 100 ms to 1 s, doubling, full jitter, retrying `UNAVAILABLE`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 2 to 5 (higher values count as 5). Default 4.
    pub max_attempts: u32,
    /// Backoff before the first retry. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest backoff. Default 1 s.
    pub max_backoff: Duration,
    /// Growth of the backoff per retry (above 0). Default 2.
    pub backoff_multiplier: f64,
    /// Share of the backoff that is random: the wait is uniform in
    /// `((1 − jitter) × backoff, backoff]`. 0 to 1; 1 is A6's `random(0, backoff)`. Default 1.
    pub jitter: f64,
    /// Statuses that are retried. Default `UNAVAILABLE`. Only statuses that say the server did
    /// not process the call are safe for methods that are not idempotent.
    pub retryable_codes: StatusCodes,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            jitter: 1.0,
            retryable_codes: StatusCodes::new([Code::Unavailable]),
        }
    }
}

/// A6's retry throttle (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryThrottling {
    /// Tokens at start and at most (above 0). Default 10.
    pub max_tokens: u32,
    /// Tokens a successful call gives back, up to 3 decimals (above 0). Default 0.1.
    pub token_ratio: f64,
}

impl Default for RetryThrottling {
    fn default() -> Self {
        Self {
            max_tokens: 10,
            token_ratio: 0.1,
        }
    }
}

/// How calls are retried (see the [module docs](self)). Transparent retries need no
/// configuration; policy retries are off unless a policy is set.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RetryOptions {
    /// The policy of every method without an entry in `methods`. Default `None`: no policy
    /// retries.
    pub policy: Option<RetryPolicy>,
    /// Policies per method (`/package.Service/Method`) or per service (`/package.Service/`);
    /// `None` turns retries off for that key. The most specific key wins.
    pub methods: BTreeMap<String, Option<RetryPolicy>>,
    /// The throttle. Default A6's: 10 tokens, 0.1 per success.
    pub throttling: RetryThrottling,
    /// Request bytes buffered per call for replay; a call whose request is larger is not
    /// retried (and not transparently retried once its request was read). Default 1 MiB.
    pub buffer_limit: usize,
}

impl Default for RetryOptions {
    fn default() -> Self {
        Self {
            policy: None,
            methods: BTreeMap::new(),
            throttling: RetryThrottling::default(),
            buffer_limit: 1 << 20,
        }
    }
}

impl RetryOptions {
    /// Sets the policy of a method (`/package.Service/Method`) or a service
    /// (`/package.Service/`); `None` turns retries off for it.
    pub fn set_method(&mut self, name: impl Into<String>, policy: Option<RetryPolicy>) {
        self.methods.insert(name.into(), policy);
    }

    /// Whether any policy is configured.
    pub(crate) fn any(&self) -> bool {
        self.policy.is_some() || self.methods.values().any(Option::is_some)
    }

    /// The policy for a call to `path` (`/package.Service/Method`).
    pub(crate) fn policy_for(&self, path: &str) -> Option<&RetryPolicy> {
        if self.methods.is_empty() {
            return self.policy.as_ref();
        }
        if let Some(policy) = self.methods.get(path) {
            return policy.as_ref();
        }
        // "/package.Service/Method" → "/package.Service/".
        let service = path
            .get(1..)
            .and_then(|rest| rest.find('/'))
            .and_then(|slash| path.get(..slash + 2));
        if let Some(policy) = service.and_then(|s| self.methods.get(s)) {
            return policy.as_ref();
        }
        self.policy.as_ref()
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let invalid =
            |name: &'static str, reason: String| Err(Error::InvalidOption { name, reason });
        let policies = self
            .policy
            .iter()
            .map(|p| ("retry.policy".to_owned(), p))
            .chain(
                self.methods
                    .iter()
                    .filter_map(|(k, p)| p.as_ref().map(|p| (format!("retry.methods[{k}]"), p))),
            );
        for (name, p) in policies {
            if p.max_attempts < 2 {
                return invalid("retry", format!("{name}: max_attempts must be at least 2"));
            }
            if p.initial_backoff.is_zero() || p.max_backoff < p.initial_backoff {
                return invalid(
                    "retry",
                    format!("{name}: needs 0 < initial_backoff <= max_backoff"),
                );
            }
            if !(p.backoff_multiplier > 0.0 && p.backoff_multiplier.is_finite()) {
                return invalid(
                    "retry",
                    format!("{name}: backoff_multiplier must be above 0"),
                );
            }
            if !(0.0..=1.0).contains(&p.jitter) {
                return invalid("retry", format!("{name}: jitter must be between 0 and 1"));
            }
            if p.retryable_codes.is_empty() {
                return invalid(
                    "retry",
                    format!("{name}: retryable_codes must not be empty"),
                );
            }
        }
        for key in self.methods.keys() {
            let parts: Vec<&str> = key.split('/').collect();
            let ok = key.starts_with('/')
                && parts.len() == 3
                && !parts[1].is_empty()
                && !parts[2].contains('/');
            if !ok {
                return invalid(
                    "retry.methods",
                    format!("{key:?} is not /package.Service/Method or /package.Service/"),
                );
            }
        }
        let t = &self.throttling;
        if t.max_tokens == 0 || !(t.token_ratio > 0.0 && t.token_ratio <= f64::from(t.max_tokens)) {
            return invalid(
                "retry.throttling",
                "needs max_tokens > 0 and 0 < token_ratio <= max_tokens".to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_policy_wins() {
        let fast = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let mut options = RetryOptions {
            policy: Some(RetryPolicy::default()),
            ..RetryOptions::default()
        };
        assert_eq!(options.policy_for("/a.B/C"), Some(&RetryPolicy::default()));
        options.set_method("/a.B/", Some(fast.clone()));
        options.set_method("/a.B/Write", None);
        assert_eq!(options.policy_for("/a.B/Read"), Some(&fast));
        assert_eq!(options.policy_for("/a.B/Write"), None);
        assert_eq!(options.policy_for("/x.Y/Z"), Some(&RetryPolicy::default()));
        assert_eq!(options.policy_for("odd"), Some(&RetryPolicy::default()));
        assert!(options.validate().is_ok());
        assert!(!RetryOptions::default().any());
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut options = RetryOptions::default();
        options.set_method("a.B/C", Some(RetryPolicy::default()));
        assert!(options.validate().is_err());
        let one = RetryOptions {
            policy: Some(RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            }),
            ..RetryOptions::default()
        };
        let Err(Error::InvalidOption { reason, .. }) = one.validate() else {
            panic!("accepted one attempt");
        };
        assert!(reason.contains("max_attempts"), "{reason}");
        let codes = RetryOptions {
            policy: Some(RetryPolicy {
                retryable_codes: StatusCodes::EMPTY,
                ..RetryPolicy::default()
            }),
            ..RetryOptions::default()
        };
        assert!(codes.validate().is_err());
    }
}

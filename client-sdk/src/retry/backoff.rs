//! The retry decision after a failed attempt: whether, and after how long. Pure: the caller
//! passes the throttle's verdict, the time left and the random number.

use std::time::Duration;

use tonic::Code;

use super::{MAX_ATTEMPTS, RetryPolicy};

/// What the server said about retrying (`grpc-retry-pushback-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// Nothing.
    None,
    /// Retry after this long.
    After(Duration),
    /// Do not retry (a negative or unparseable value).
    Stop,
}

impl Pushback {
    /// From the header's value, if there is one.
    pub(crate) fn parse(value: Option<&[u8]>) -> Self {
        let Some(value) = value else {
            return Self::None;
        };
        // A6: an ASCII signed 32-bit integer with no unnecessary leading zeros.
        let text = std::str::from_utf8(value).unwrap_or("");
        let canonical = text == "0" || (!text.starts_with('0') && !text.starts_with("-0"));
        match text.parse::<i32>() {
            Ok(ms) if canonical && ms >= 0 => {
                Self::After(Duration::from_millis(ms.unsigned_abs().into()))
            }
            _ => Self::Stop,
        }
    }
}

/// One call's retry state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryState {
    /// Attempts made under the policy, the first included.
    pub(crate) attempts: u32,
    /// Which backoff step the next retry uses (1 for the first retry; back to 1 after a
    /// pushback).
    pub(crate) step: u32,
}

impl Default for RetryState {
    fn default() -> Self {
        Self {
            attempts: 1,
            step: 1,
        }
    }
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Retry after this long.
    Retry(Duration),
    /// Do not retry.
    GiveUp(GiveUp),
}

/// Why a failed attempt is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The status is not retryable.
    NotRetryable,
    /// The server said not to.
    PushbackStop,
    /// The throttle is at or below its threshold.
    Throttled,
    /// No attempts left.
    Exhausted,
    /// The next attempt could not start before the deadline.
    Deadline,
}

/// After an attempt failed with `code`: retry or not (A6's order: pushback, retryable status,
/// throttle, attempts, backoff, deadline). `throttle_failure` is called for failures that count
/// against the throttle and says whether retries are still allowed. `remaining` is the time left
/// before the call's deadline, `random` a uniform number in [0, 1).
///
/// On `Retry`, `state` is advanced to the next attempt.
pub(crate) fn after_failure(
    policy: &RetryPolicy,
    state: &mut RetryState,
    code: Code,
    pushback: Pushback,
    throttle_failure: impl FnOnce() -> bool,
    remaining: Option<Duration>,
    random: f64,
) -> Decision {
    if pushback == Pushback::Stop {
        throttle_failure();
        return Decision::GiveUp(GiveUp::PushbackStop);
    }
    if !policy.retryable_codes.contains(code) {
        return Decision::GiveUp(GiveUp::NotRetryable);
    }
    if !throttle_failure() {
        return Decision::GiveUp(GiveUp::Throttled);
    }
    if state.attempts >= policy.max_attempts.min(MAX_ATTEMPTS) {
        return Decision::GiveUp(GiveUp::Exhausted);
    }
    let (delay, next_step) = match pushback {
        Pushback::After(delay) => (delay, 1),
        _ => {
            let exponent = i32::try_from(state.step.saturating_sub(1)).unwrap_or(i32::MAX);
            let grown =
                policy.initial_backoff.as_secs_f64() * policy.backoff_multiplier.powi(exponent);
            let cap = grown.min(policy.max_backoff.as_secs_f64());
            let jittered = cap * (1.0 - policy.jitter * random.clamp(0.0, 1.0));
            (Duration::from_secs_f64(jittered.max(0.0)), state.step + 1)
        }
    };
    if remaining.is_some_and(|left| delay >= left) {
        return Decision::GiveUp(GiveUp::Deadline);
    }
    state.attempts += 1;
    state.step = next_step;
    Decision::Retry(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            backoff_multiplier: 2.0,
            jitter: 0.0,
            ..RetryPolicy::default()
        }
    }

    fn run(state: &mut RetryState, pushback: Pushback, remaining: Option<Duration>) -> Decision {
        after_failure(
            &policy(),
            state,
            Code::Unavailable,
            pushback,
            || true,
            remaining,
            0.5,
        )
    }

    #[test]
    fn backoff_grows_and_is_capped_until_attempts_run_out() {
        let mut state = RetryState::default();
        let mut delays = Vec::new();
        while let Decision::Retry(delay) = run(&mut state, Pushback::None, None) {
            delays.push(delay.as_millis());
        }
        assert_eq!(delays, vec![100, 200, 300, 300]);
        assert_eq!(state.attempts, 5);
        assert_eq!(
            run(&mut state, Pushback::None, None),
            Decision::GiveUp(GiveUp::Exhausted)
        );
    }

    #[test]
    fn full_jitter_is_uniform_below_the_backoff() {
        let full = RetryPolicy {
            jitter: 1.0,
            ..policy()
        };
        for (random, expected) in [(0.0, 100), (0.25, 75), (0.99, 1)] {
            let decision = after_failure(
                &full,
                &mut RetryState::default(),
                Code::Unavailable,
                Pushback::None,
                || true,
                None,
                random,
            );
            assert_eq!(
                decision,
                Decision::Retry(Duration::from_millis(expected)),
                "{random}"
            );
        }
    }

    #[test]
    fn pushback_sets_the_delay_and_resets_the_backoff() {
        let mut state = RetryState::default();
        assert_eq!(
            run(&mut state, Pushback::None, None),
            Decision::Retry(Duration::from_millis(100))
        );
        assert_eq!(
            run(
                &mut state,
                Pushback::After(Duration::from_millis(750)),
                None
            ),
            Decision::Retry(Duration::from_millis(750))
        );
        assert_eq!(
            run(&mut state, Pushback::None, None),
            Decision::Retry(Duration::from_millis(100)),
            "back to the initial backoff"
        );
        let mut counted = false;
        let stop = after_failure(
            &policy(),
            &mut RetryState::default(),
            Code::Unavailable,
            Pushback::Stop,
            || {
                counted = true;
                true
            },
            None,
            0.0,
        );
        assert_eq!(stop, Decision::GiveUp(GiveUp::PushbackStop));
        assert!(
            counted,
            "a pushback that says stop counts against the throttle"
        );
    }

    #[test]
    fn what_is_not_retried() {
        let mut counted = false;
        let fatal = after_failure(
            &policy(),
            &mut RetryState::default(),
            Code::NotFound,
            Pushback::After(Duration::ZERO),
            || {
                counted = true;
                true
            },
            None,
            0.0,
        );
        assert_eq!(fatal, Decision::GiveUp(GiveUp::NotRetryable));
        assert!(
            !counted,
            "a fatal status does not count against the throttle"
        );
        let throttled = after_failure(
            &policy(),
            &mut RetryState::default(),
            Code::Unavailable,
            Pushback::None,
            || false,
            None,
            0.0,
        );
        assert_eq!(throttled, Decision::GiveUp(GiveUp::Throttled));
        // No attempt starts at or after the deadline.
        let mut state = RetryState::default();
        assert_eq!(
            run(&mut state, Pushback::None, Some(Duration::from_millis(100))),
            Decision::GiveUp(GiveUp::Deadline)
        );
        assert_eq!(state, RetryState::default(), "nothing advanced");
        assert_eq!(
            run(&mut state, Pushback::None, Some(Duration::from_millis(101))),
            Decision::Retry(Duration::from_millis(100))
        );
        // max_attempts above A6's limit counts as 5.
        let greedy = RetryPolicy {
            max_attempts: 9,
            ..policy()
        };
        let mut state = RetryState::default();
        let mut attempts = 1;
        while let Decision::Retry(_) = after_failure(
            &greedy,
            &mut state,
            Code::Unavailable,
            Pushback::None,
            || true,
            None,
            0.0,
        ) {
            attempts += 1;
        }
        assert_eq!(attempts, 5);
    }

    #[test]
    fn pushback_values() {
        assert_eq!(Pushback::parse(None), Pushback::None);
        assert_eq!(
            Pushback::parse(Some(b"250")),
            Pushback::After(Duration::from_millis(250))
        );
        assert_eq!(Pushback::parse(Some(b"0")), Pushback::After(Duration::ZERO));
        for odd in [&b"-1"[..], b"", b"abc", b"007", b"99999999999", b"1.5"] {
            assert_eq!(Pushback::parse(Some(odd)), Pushback::Stop, "{odd:?}");
        }
    }
}

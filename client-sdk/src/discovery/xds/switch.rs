//! When the xDS source serves the server's pushes and when it falls back to polling Cloud Map
//! directly: a pure state machine over the stream's events and the time.
//!
//! - **At start**, until the first answer: nothing is served (the poller's first attempt
//!   waits), and after `start_timeout` without one, Cloud Map is.
//! - **Serving xDS**, the stream lost: the last answer stays in service while the source tries
//!   the next server; after `lost_timeout` without a new answer, Cloud Map is served.
//! - **Serving Cloud Map**, an answer arrives: xDS is served again at once.

use std::time::Duration;

use tokio::time::Instant;

/// What the source serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// Nothing yet: no answer, and `start_timeout` has not passed.
    Undecided,
    /// The xDS server's last answer.
    Xds,
    /// Cloud Map, polled directly.
    CloudMap,
}

#[derive(Debug, Clone)]
/// The state machine.
pub struct Switch {
    start_timeout: Duration,
    lost_timeout: Duration,
    started: Instant,
    serving: Serving,
    /// Since when the stream has been down with no new answer, while serving xDS.
    lost_since: Option<Instant>,
}

impl Switch {
    /// A source started at `now`.
    pub fn new(now: Instant, start_timeout: Duration, lost_timeout: Duration) -> Self {
        Self {
            start_timeout,
            lost_timeout,
            started: now,
            serving: Serving::Undecided,
            lost_since: None,
        }
    }

    /// What is served.
    pub fn serving(&self) -> Serving {
        self.serving
    }

    /// A server answered: xDS is served. Returns the new state when it changed.
    pub fn answered(&mut self) -> Option<Serving> {
        self.lost_since = None;
        self.set(Serving::Xds)
    }

    /// The stream ended or could not be opened at `now`.
    pub fn lost(&mut self, now: Instant) {
        self.lost_since.get_or_insert(now);
    }

    /// Applies the timeouts at `now`. Returns the new state when it changed.
    pub fn tick(&mut self, now: Instant) -> Option<Serving> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.set(Serving::CloudMap),
            _ => None,
        }
    }

    /// When [`tick`](Self::tick) may change the state next, if ever (without a new event).
    pub fn deadline(&self) -> Option<Instant> {
        match self.serving {
            Serving::Undecided => Some(self.started + self.start_timeout),
            Serving::Xds => self.lost_since.map(|since| since + self.lost_timeout),
            Serving::CloudMap => None,
        }
    }

    fn set(&mut self, serving: Serving) -> Option<Serving> {
        (self.serving != serving).then(|| {
            self.serving = serving;
            serving
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_falls_back_after_the_start_timeout() {
        let t0 = Instant::now();
        let mut switch = Switch::new(t0, 2 * S, 15 * S);
        switch.lost(t0);
        assert_eq!(switch.tick(t0 + S), None);
        assert_eq!(switch.serving(), Serving::Undecided);
        assert_eq!(switch.deadline(), Some(t0 + 2 * S));
        assert_eq!(switch.tick(t0 + 2 * S), Some(Serving::CloudMap));
        assert_eq!(switch.deadline(), None);
        // The server comes up: back to xDS at once.
        assert_eq!(switch.answered(), Some(Serving::Xds));
        assert_eq!(switch.answered(), None, "no change: nothing to report");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_server_keeps_the_last_answer_until_the_lost_timeout() {
        let t0 = Instant::now();
        let mut switch = Switch::new(t0, 2 * S, 15 * S);
        assert_eq!(switch.answered(), Some(Serving::Xds));
        assert_eq!(switch.tick(t0 + 100 * S), None, "connected: no deadline");
        switch.lost(t0 + 100 * S);
        // Reconnect attempts fail meanwhile; the loss counts from the first.
        switch.lost(t0 + 105 * S);
        assert_eq!(switch.tick(t0 + 114 * S), None);
        assert_eq!(switch.serving(), Serving::Xds);
        assert_eq!(switch.tick(t0 + 115 * S), Some(Serving::CloudMap));
        // A replica answers: xDS again, and a later loss counts afresh.
        assert_eq!(switch.answered(), Some(Serving::Xds));
        switch.lost(t0 + 200 * S);
        assert_eq!(switch.deadline(), Some(t0 + 215 * S));
        // A second server answered within the timeout: nothing switched.
        assert_eq!(switch.answered(), None);
        assert_eq!(switch.deadline(), None);
    }
}

//! ACK and NACK bookkeeping for one stream and one resource type (state of the world, xDS
//! protocol as gRFC A27 and Envoy's "xDS REST and gRPC protocol" describe it).
//!
//! A request carrying the nonce of the last response sent answers it: with `error_detail` it is
//! a NACK of that response's version, else an ACK. A request with an older nonce answers a
//! response the client has not seen the successor of yet: its subscriptions are applied, and its
//! verdict is ignored (go-control-plane does the same). A request with no nonce is the client's
//! first for the type on this stream (or after it reconnected). After a NACK the server keeps
//! the client on what it last accepted: it does not send the rejected version again, only a
//! different one.

use std::collections::BTreeSet;

/// What a request said about the last response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The client's first request for the type on this stream.
    Initial,
    /// It accepted `version`.
    Ack {
        /// The version accepted.
        version: String,
    },
    /// It rejected `version`, the last one sent, and still runs `accepted`.
    Nack {
        /// The version rejected.
        version: String,
        /// The last version it accepted ("" for none).
        accepted: String,
        /// The client's reason.
        detail: String,
    },
    /// It answers an older response; only its subscriptions count.
    Stale,
}

/// One resource type on one stream.
#[derive(Debug, Clone, Default)]
pub struct TypeState {
    subscribed: BTreeSet<String>,
    /// The last response sent: (version, nonce).
    sent: Option<(String, String)>,
    accepted: Option<String>,
    rejected: Option<String>,
    requested: bool,
}

impl TypeState {
    /// Applies a request: its names become the subscription (state of the world) and its nonce
    /// and error say what it made of the last response. Returns the verdict and whether the
    /// subscription changed.
    pub fn on_request(
        &mut self,
        names: &[String],
        nonce: &str,
        version: &str,
        error: Option<&str>,
    ) -> (Verdict, bool) {
        let names: BTreeSet<String> = names.iter().cloned().collect();
        let changed = names != self.subscribed || !self.requested;
        self.subscribed = names;
        self.requested = true;
        let verdict = match &self.sent {
            _ if nonce.is_empty() => Verdict::Initial,
            Some((sent_version, sent_nonce)) if sent_nonce == nonce => match error {
                Some(detail) => {
                    self.rejected = Some(sent_version.clone());
                    Verdict::Nack {
                        version: sent_version.clone(),
                        accepted: version.to_owned(),
                        detail: detail.to_owned(),
                    }
                }
                None => {
                    self.accepted = Some(sent_version.clone());
                    self.rejected = None;
                    Verdict::Ack {
                        version: sent_version.clone(),
                    }
                }
            },
            _ => Verdict::Stale,
        };
        (verdict, changed)
    }

    /// The names subscribed to.
    pub fn subscribed(&self) -> &BTreeSet<String> {
        &self.subscribed
    }

    /// Whether the client asked for this type at all.
    pub fn requested(&self) -> bool {
        self.requested
    }

    /// Whether a response of `version` should go out now: the client asked, and it is neither
    /// what was sent last (the client has it, or is deciding on it) nor what it rejected.
    /// `force` sends even the same version (a subscription change needs an answer).
    pub fn should_send(&self, version: &str, force: bool) -> bool {
        if !self.requested || self.rejected.as_deref() == Some(version) {
            return false;
        }
        force || self.sent.as_ref().is_none_or(|(sent, _)| sent != version)
    }

    /// Records a response sent.
    pub fn sent(&mut self, version: String, nonce: String) {
        self.sent = Some((version, nonce));
    }

    /// The last version the client accepted.
    pub fn accepted(&self) -> Option<&str> {
        self.accepted.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn ack_and_nack_are_told_apart_by_nonce() {
        let mut state = TypeState::default();
        assert!(!state.should_send("v1", false), "nothing asked yet");
        let (verdict, changed) = state.on_request(&names(&["a"]), "", "", None);
        assert_eq!(verdict, Verdict::Initial);
        assert!(changed);
        assert!(state.should_send("v1", false));
        state.sent("v1".into(), "1".into());
        assert!(!state.should_send("v1", false), "the client has it");

        let (verdict, changed) = state.on_request(&names(&["a"]), "1", "v1", None);
        assert_eq!(
            verdict,
            Verdict::Ack {
                version: "v1".into()
            }
        );
        assert!(!changed);
        assert_eq!(state.accepted(), Some("v1"));

        state.sent("v2".into(), "2".into());
        let (verdict, _) = state.on_request(&names(&["a"]), "2", "v1", Some("weight 0"));
        assert_eq!(
            verdict,
            Verdict::Nack {
                version: "v2".into(),
                accepted: "v1".into(),
                detail: "weight 0".into()
            }
        );
        assert_eq!(state.accepted(), Some("v1"), "still on what it accepted");
        assert!(
            !state.should_send("v2", false),
            "the rejected version is not sent again"
        );
        assert!(
            !state.should_send("v2", true),
            "not even for a subscription change"
        );
        assert!(state.should_send("v3", false), "new content is");
    }

    #[test]
    fn a_stale_nonce_changes_subscriptions_but_says_nothing() {
        let mut state = TypeState::default();
        state.on_request(&names(&["a"]), "", "", None);
        state.sent("v1".into(), "1".into());
        state.sent("v2".into(), "2".into());
        let (verdict, changed) = state.on_request(&names(&["a", "b"]), "1", "", Some("late"));
        assert_eq!(verdict, Verdict::Stale);
        assert!(changed);
        assert_eq!(state.subscribed().len(), 2);
        assert_eq!(state.accepted(), None);
        assert!(
            state.should_send("v2", true),
            "a subscription change is answered"
        );
    }

    #[test]
    fn unsubscribing_from_everything_is_a_change() {
        let mut state = TypeState::default();
        state.on_request(&names(&["a"]), "", "", None);
        state.sent("v1".into(), "1".into());
        let (_, changed) = state.on_request(&[], "1", "v1", None);
        assert!(changed);
        assert!(state.subscribed().is_empty());
    }
}

//! The delay decision: which round trips a call pays. Pure.

use std::time::Duration;

use super::NetworkEmulation;

/// More proxy hops than this count as this many: a garbled header must not stall a call.
pub(super) const MAX_PROXY_HOPS: u32 = 8;

/// The caller's leg (in or across zones, by `caller_zone` against `own_zone`) plus one in-zone
/// round trip per proxy hop. No caller zone (or no own zone) means nothing is emulated: the
/// header is how a caller opts in.
pub(super) fn round_trips(
    emulation: &NetworkEmulation,
    own_zone: &str,
    caller_zone: Option<&str>,
    proxy_hops: u32,
) -> Duration {
    let caller_zone = caller_zone.map(str::trim).unwrap_or_default();
    if caller_zone.is_empty() || own_zone.is_empty() {
        return Duration::ZERO;
    }
    let leg = if caller_zone.eq_ignore_ascii_case(own_zone) {
        emulation.in_zone
    } else {
        emulation.cross_zone
    };
    leg + emulation.in_zone * proxy_hops.min(MAX_PROXY_HOPS)
}

/// The hop count in a [`super::PROXY_HOPS_HEADER`] value: a whole number, anything else 0.
pub(super) fn parse_hops(value: Option<&str>) -> u32 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS: NetworkEmulation = NetworkEmulation::AWS;

    #[test]
    fn a_caller_in_the_servers_zone_pays_one_in_zone_round_trip() {
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1a"), 0),
            Duration::from_micros(335)
        );
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some(" EU-CENTRAL-1A "), 0),
            Duration::from_micros(335),
            "zone names compare trimmed and case-insensitively"
        );
    }

    #[test]
    fn a_caller_in_another_zone_pays_a_cross_zone_round_trip() {
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1c"), 0),
            Duration::from_micros(1035)
        );
    }

    #[test]
    fn each_proxy_hop_adds_an_in_zone_round_trip() {
        // Through a proxy in the caller's zone: caller → proxy in zone, proxy → server as the
        // caller's zone relates to the server's.
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1a"), 1),
            Duration::from_micros(670)
        );
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1b"), 1),
            Duration::from_micros(1370)
        );
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1b"), 2),
            Duration::from_micros(1705)
        );
        assert_eq!(
            round_trips(&AWS, "eu-central-1a", Some("eu-central-1a"), u32::MAX),
            Duration::from_micros(335 * u64::from(MAX_PROXY_HOPS + 1)),
            "hops are capped"
        );
    }

    #[test]
    fn without_a_caller_zone_nothing_is_emulated() {
        for caller in [None, Some(""), Some("  ")] {
            assert_eq!(
                round_trips(&AWS, "eu-central-1a", caller, 1),
                Duration::ZERO
            );
        }
        assert_eq!(
            round_trips(&AWS, "", Some("eu-central-1a"), 0),
            Duration::ZERO,
            "a server that knows no zone of its own cannot tell in from across"
        );
    }

    #[test]
    fn hop_headers_parse_leniently() {
        assert_eq!(parse_hops(Some("1")), 1);
        assert_eq!(parse_hops(Some(" 2 ")), 2);
        assert_eq!(parse_hops(Some("one")), 0);
        assert_eq!(parse_hops(Some("-1")), 0);
        assert_eq!(parse_hops(None), 0);
    }
}

//! The `grpc-timeout` header: a call's deadline as gRPC's HTTP/2 protocol spells it
//! (`TimeoutValue TimeoutUnit`: at most 8 digits, then `H`, `M`, `S`, `m`, `u` or `n`).

use std::time::Duration;

/// Parses a `grpc-timeout` value; `None` when it is not one (the call then has no deadline the
/// balancer knows of, as a server would treat it).
pub(crate) fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Formats `remaining` in the finest unit that fits 8 digits, rounded up (the server should not
/// give up before the client does).
pub(crate) fn format_timeout(remaining: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = remaining.as_nanos().max(1);
    let units: [(u128, char); 6] = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ];
    for (size, unit) in units {
        let value = nanos.div_ceil(size);
        if value <= MAX {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX}H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_refuses_the_rest() {
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout(b"30S"), Some(Duration::from_secs(30)));
        assert_eq!(parse_timeout(b"50m"), Some(Duration::from_millis(50)));
        assert_eq!(parse_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for odd in [
            &b""[..],
            b"m",
            b"123456789m",
            b"12x",
            b"-5m",
            b"1.5S",
            b" 5m",
        ] {
            assert_eq!(parse_timeout(odd), None, "{odd:?}");
        }
    }

    #[test]
    fn formats_in_the_finest_unit_that_fits_and_round_trips() {
        assert_eq!(format_timeout(Duration::from_millis(50)), "50000000n");
        assert_eq!(format_timeout(Duration::from_millis(150)), "150000u");
        assert_eq!(format_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(format_timeout(Duration::ZERO), "1n");
        assert_eq!(format_timeout(Duration::from_secs(1 << 40)), "99999999H");
        for ms in [1, 49, 999, 12_345, 86_400_000] {
            let d = Duration::from_millis(ms);
            let back = parse_timeout(format_timeout(d).as_bytes()).unwrap();
            assert!(back >= d && back - d < Duration::from_millis(1), "{ms}");
        }
    }
}

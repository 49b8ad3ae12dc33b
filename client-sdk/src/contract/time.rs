//! RFC 3339 timestamps for `LB_UPDATED_AT`: written in UTC with millisecond precision, read with
//! any offset and precision.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: i64 = 86_400;

/// Formats `time` as RFC 3339 UTC with milliseconds, e.g. `2026-11-22T14:10:00.123Z`.
///
/// Times before 1970 are written as 1970-01-01T00:00:00.000Z: the contract never needs them.
pub fn format_rfc3339(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX / 2);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let second_of_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_millis()
    )
}

/// Formats `time` as RFC 3339 UTC with as many fractional digits as it needs to be read back
/// exactly: milliseconds, like [`format_rfc3339`], unless it has a finer part, then nanoseconds.
/// For carrying a decoded time elsewhere (the xDS server's endpoint metadata), not for writing
/// the contract.
pub fn format_rfc3339_exact(time: SystemTime) -> String {
    let nanos = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.subsec_nanos());
    let millis = format_rfc3339(time);
    if nanos.is_multiple_of(1_000_000) {
        return millis;
    }
    // "...SS.mmmZ" → "...SS.nnnnnnnnnZ".
    format!("{}{nanos:09}Z", &millis[..millis.len() - 4])
}

/// Parses an RFC 3339 date-time (`2026-11-22T14:10:00Z`, `2026-11-22t14:10:00.5+01:00`, ...).
/// Returns `None` for anything that is not one, or lies before 1970.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let b = text.trim().as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        // 60 is a leap second; count it as the next second's start.
        || second > 60
    {
        return None;
    }

    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if let Some((b'.', fraction)) = rest.split_first() {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for (i, digit) in fraction[..len].iter().take(9).enumerate() {
            nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
        }
        rest = &fraction[len..];
    }
    let offset_seconds: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let magnitude = hours * 3600 + minutes * 60;
            if *sign == b'+' { magnitude } else { -magnitude }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let seconds = days * SECONDS_PER_DAY + hour * 3600 + minute * 60 + second - offset_seconds;
    let seconds = u64::try_from(seconds).ok()?;
    Some(UNIX_EPOCH + Duration::new(seconds, nanos))
}

fn digits(bytes: &[u8]) -> Option<i64> {
    bytes.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's `days_from_civil` / `civil_from_days` (public-domain algorithms): exact for the
// proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(seconds: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1795356600` → Sun Nov 22 14:10:00 UTC 2026
        assert_eq!(
            format_rfc3339(at(1_795_356_600, 123)),
            "2026-11-22T14:10:00.123Z"
        );
        // A leap day.
        assert_eq!(
            format_rfc3339(at(951_782_400, 0)),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_offsets_and_precisions() {
        let expected = at(1_795_356_600, 0);
        for text in [
            "2026-11-22T14:10:00Z",
            "2026-11-22t14:10:00z",
            "2026-11-22 14:10:00Z",
            "2026-11-22T14:10:00.000Z",
            "2026-11-22T15:10:00+01:00",
            "2026-11-22T08:40:00-05:30",
            " 2026-11-22T14:10:00Z\n",
        ] {
            assert_eq!(parse_rfc3339(text), Some(expected), "{text}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-22T14:10:00.123456789Z"),
            Some(expected + Duration::from_nanos(123_456_789))
        );
        // Digits past nanoseconds are ignored, not an error.
        assert_eq!(
            parse_rfc3339("2026-11-22T14:10:00.1234567891Z"),
            Some(expected + Duration::from_nanos(123_456_789))
        );
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        for text in [
            "",
            "yesterday",
            "1795356600",
            "2026-11-22",
            "2026-11-22T14:10:00",
            "2026-11-22T14:10:00+0100",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T14:60:00Z",
            "2026-11-22T14:10:00.Z",
            "2026-11-22T14:10:00ZZ",
            "1969-12-31T23:59:59Z",
            "２026-11-22T14:10:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(millis in 0u64..8_000_000_000_000) {
            let time = UNIX_EPOCH + Duration::from_millis(millis);
            prop_assert_eq!(parse_rfc3339(&format_rfc3339(time)), Some(time));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339(&text);
        }
    }
}

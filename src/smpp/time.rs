//! SMPP 3.4 time strings (§7.1.1): schedule_delivery_time, validity_period, final_date.
//!
//! Absolute form "YYMMDDhhmmsstnnp": local time, tenths, then the local offset from UTC in
//! quarter hours with its sign ('+' ahead of UTC, '-' behind). Relative form
//! "YYMMDDhhmmss000R": a period from now. The empty string means "not given".

#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

use jiff::{Span, Timestamp, tz::TimeZone};

use crate::message::Millis;

/// Why a time string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an SMPP time (YYMMDDhhmmsstnn followed by +, - or R)")]
pub struct BadTime(pub String);

/// The time a field names, as milliseconds since the epoch, relative to `now`; `None` for
/// the empty string.
///
/// # Errors
///
/// [`BadTime`] when the string is neither empty nor one of the two 16-character forms, or
/// names a date that does not exist.
pub fn parse(text: &str, now: Millis) -> Result<Option<Millis>, BadTime> {
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || BadTime(text.to_owned());
    let bytes = text.as_bytes();
    if bytes.len() != 16 || !bytes.iter().take(15).all(u8::is_ascii_digit) {
        return Err(bad());
    }
    // Fifteen ASCII digits: each pair is a number below 100.
    let num = |at: usize| -> i64 {
        let d = |i: usize| i64::from(bytes.get(i).map_or(0, |b| b - b'0'));
        d(at) * 10 + d(at + 1)
    };
    let (yy, mo, dd, hh, mi, ss) = (num(0), num(2), num(4), num(6), num(8), num(10));
    let tenths = i64::from(bytes.get(12).map_or(0, |b| b - b'0'));
    let quarters = num(13);
    match bytes.get(15) {
        Some(b'R') => {
            let span = Span::new()
                .try_years(yy)
                .and_then(|s| s.try_months(mo))
                .and_then(|s| s.try_days(dd))
                .and_then(|s| s.try_hours(hh))
                .and_then(|s| s.try_minutes(mi))
                .and_then(|s| s.try_seconds(ss))
                .map_err(|_| bad())?;
            let start = Timestamp::from_millisecond(now)
                .map_err(|_| bad())?
                .to_zoned(TimeZone::UTC);
            let end = start.checked_add(span).map_err(|_| bad())?;
            Ok(Some(end.timestamp().as_millisecond()))
        }
        Some(sign @ (b'+' | b'-')) => {
            if quarters > 48 {
                return Err(bad());
            }
            let date = jiff::civil::DateTime::new(
                i16::try_from(2000 + yy).map_err(|_| bad())?,
                i8::try_from(mo).map_err(|_| bad())?,
                i8::try_from(dd).map_err(|_| bad())?,
                i8::try_from(hh).map_err(|_| bad())?,
                i8::try_from(mi).map_err(|_| bad())?,
                i8::try_from(ss).map_err(|_| bad())?,
                0,
            )
            .map_err(|_| bad())?;
            let local = date
                .to_zoned(TimeZone::UTC)
                .map_err(|_| bad())?
                .timestamp()
                .as_millisecond();
            let offset = quarters * 15 * 60_000;
            let utc = if *sign == b'+' {
                local - offset
            } else {
                local + offset
            };
            Ok(Some(utc + tenths * 100))
        }
        _ => Err(bad()),
    }
}

/// `at` in the absolute form, in UTC ("YYMMDDhhmmss000+"); "" when it cannot be written
/// (before 2000 or after 2099).
pub fn format(at: Millis) -> String {
    let Ok(ts) = Timestamp::from_millisecond(at) else {
        return String::new();
    };
    let zoned = ts.to_zoned(TimeZone::UTC);
    if !(2000..=2099).contains(&zoned.year()) {
        return String::new();
    }
    let tenths = zoned.millisecond() / 100;
    format!("{}{tenths}00+", zoned.strftime("%y%m%d%H%M%S"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn absolute_times_are_read_with_their_offset() {
        let now = ms("2026-11-22T10:00:00Z");
        assert_eq!(
            parse("261122120000000+", now),
            Ok(Some(ms("2026-11-22T12:00:00Z")))
        );
        // 12:00 local at UTC+1 (4 quarters) is 11:00 UTC; at UTC-5 it is 17:00 UTC.
        assert_eq!(
            parse("261122120000004+", now),
            Ok(Some(ms("2026-11-22T11:00:00Z")))
        );
        assert_eq!(
            parse("261122120000020-", now),
            Ok(Some(ms("2026-11-22T17:00:00Z")))
        );
        assert_eq!(
            parse("261122120000500+", now),
            Ok(Some(ms("2026-11-22T12:00:00.5Z")))
        );
    }

    #[test]
    fn relative_times_count_from_now() {
        let now = ms("2026-01-31T10:00:00Z");
        assert_eq!(
            parse("000001020304000R", now),
            Ok(Some(ms("2026-02-01T12:03:04Z")))
        );
        // Calendar months: a month after 31 January is the last day of February.
        assert_eq!(
            parse("000100000000000R", now),
            Ok(Some(ms("2026-02-28T10:00:00Z")))
        );
    }

    #[test]
    fn empty_is_not_given_and_garbage_is_refused() {
        assert_eq!(parse("", 0), Ok(None));
        for bad in [
            "2611221200000",
            "26112212000000+",
            "261122120000000*",
            "26112212000000a+",
            "261322120000000+",
            "261131120000000+",
            "261122250000000+",
            "261122120000049+",
            "2611221200000000+",
            "９９１１２２１２００００００+",
        ] {
            assert!(parse(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn format_writes_what_parse_reads() {
        let at = ms("2026-11-22T09:08:07.300Z");
        assert_eq!(format(at), "261122090807300+");
        assert_eq!(parse(&format(at), 0), Ok(Some(at)));
        assert_eq!(format(ms("1999-12-31T23:00:00Z")), "");
    }
}

//! Quiet hours: the daily window, in the shop's time zone, when marketing messages are not
//! sent (transactional ones are). Pure: times in, times out.

use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::message::Millis;

/// A daily quiet window `[start, end)` in `tz`; it spans midnight when `end` is before
/// `start` (21:00 to 08:00). `start == end` means no quiet hours.
#[derive(Debug, Clone)]
pub struct QuietHours {
    /// When it starts, each day.
    pub start: Time,
    /// When it ends.
    pub end: Time,
    /// Where the clock is read.
    pub tz: TimeZone,
}

impl QuietHours {
    /// Reads the config form: "HH:MM" times and an IANA time zone name.
    ///
    /// # Errors
    ///
    /// Which value is wrong and why, for the config check.
    pub fn new(start: &str, end: &str, time_zone: &str) -> Result<Self, (&'static str, String)> {
        let time = |key: &'static str, s: &str| {
            s.parse::<Time>()
                .map_err(|e| (key, format!("{s:?} is not a time like \"21:00\": {e}")))
        };
        Ok(QuietHours {
            start: time("start", start)?,
            end: time("end", end)?,
            tz: TimeZone::get(time_zone).map_err(|e| {
                (
                    "time_zone",
                    format!("{time_zone:?} is not a time zone like \"Europe/Rome\": {e}"),
                )
            })?,
        })
    }

    /// Whether `at` falls in the quiet window.
    pub fn is_quiet(&self, at: Millis) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(at) else {
            return false;
        };
        let t = ts.to_zoned(self.tz.clone()).time();
        if self.start < self.end {
            self.start <= t && t < self.end
        } else if self.start > self.end {
            t >= self.start || t < self.end
        } else {
            false
        }
    }

    /// The first time at or after `at` outside the quiet window.
    pub fn next_allowed(&self, at: Millis) -> Millis {
        if !self.is_quiet(at) {
            return at;
        }
        let Ok(ts) = jiff::Timestamp::from_millisecond(at) else {
            return at;
        };
        let now = ts.to_zoned(self.tz.clone());
        // In a window that spans midnight and started today, it ends tomorrow.
        let date = if self.start > self.end && now.time() >= self.start {
            now.date().tomorrow().unwrap_or(now.date())
        } else {
            now.date()
        };
        // A wall-clock time that does not exist (a DST gap) is read as the one after it.
        match date.to_datetime(self.end).to_zoned(self.tz.clone()) {
            Ok(end) => end.timestamp().as_millisecond().max(at),
            Err(_) => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> Millis {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn rome() -> QuietHours {
        QuietHours::new("21:00", "08:00", "Europe/Rome").unwrap()
    }

    #[test]
    fn an_overnight_window_defers_to_its_end_in_local_time() {
        let q = rome();
        // 20:59 and 08:00 local (CET, UTC+1 in November) are allowed.
        assert_eq!(
            q.next_allowed(ms("2026-11-22T19:59:00Z")),
            ms("2026-11-22T19:59:00Z")
        );
        assert_eq!(
            q.next_allowed(ms("2026-11-23T07:00:00Z")),
            ms("2026-11-23T07:00:00Z")
        );
        // 21:00 local to 08:00 local the next morning.
        assert_eq!(
            q.next_allowed(ms("2026-11-22T20:00:00Z")),
            ms("2026-11-23T07:00:00Z")
        );
        // 03:00 local: the same morning.
        assert_eq!(
            q.next_allowed(ms("2026-11-23T02:00:00Z")),
            ms("2026-11-23T07:00:00Z")
        );
        // Summer time (CEST, UTC+2).
        assert_eq!(
            q.next_allowed(ms("2026-07-01T22:00:00Z")),
            ms("2026-07-02T06:00:00Z")
        );
    }

    #[test]
    fn a_daytime_window_and_no_window() {
        let lunch = QuietHours::new("12:00", "14:00", "UTC").unwrap();
        assert_eq!(
            lunch.next_allowed(ms("2026-11-22T13:30:00Z")),
            ms("2026-11-22T14:00:00Z")
        );
        assert_eq!(
            lunch.next_allowed(ms("2026-11-22T14:00:00Z")),
            ms("2026-11-22T14:00:00Z")
        );
        let none = QuietHours::new("09:00", "09:00", "UTC").unwrap();
        assert!(!none.is_quiet(ms("2026-11-22T09:00:00Z")));
    }

    #[test]
    fn the_end_of_a_window_in_a_dst_gap_is_the_time_after_it() {
        // 02:30 does not exist in Rome on 2026-03-29 (clocks jump from 02:00 to 03:00).
        let q = QuietHours::new("22:00", "02:30", "Europe/Rome").unwrap();
        let allowed = q.next_allowed(ms("2026-03-28T23:00:00Z"));
        assert_eq!(allowed, ms("2026-03-29T01:30:00Z"), "03:30 CEST");
        assert!(!q.is_quiet(allowed));
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert_eq!(
            QuietHours::new("25:00", "08:00", "UTC").unwrap_err().0,
            "start"
        );
        assert_eq!(QuietHours::new("21:00", "8am", "UTC").unwrap_err().0, "end");
        assert_eq!(
            QuietHours::new("21:00", "08:00", "Mars/Olympus")
                .unwrap_err()
                .0,
            "time_zone"
        );
    }
}

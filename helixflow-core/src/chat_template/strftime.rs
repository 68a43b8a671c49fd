//! `strftime_now(format)`: the current time formatted like Python's `datetime.strftime`, which
//! Llama-3.x templates use for their "Today Date" line. Times are UTC (no time-zone database).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::calendar::{civil_from_days, days_from_civil};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// The current UTC time formatted with `format`.
pub(super) fn strftime_now(format: String) -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_unix_time(seconds, &format)
}

/// A civil (proleptic Gregorian) date and time of day.
struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    weekday: usize,
    day_of_year: u32,
}

impl DateTime {
    fn from_unix(seconds: u64) -> Self {
        let days = (seconds / 86_400) as i64;
        let rest = (seconds % 86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        let day_of_year = (days - days_from_civil(year, 1, 1)) as u32 + 1;
        DateTime {
            year,
            month,
            day,
            hour: rest / 3600,
            minute: rest / 60 % 60,
            second: rest % 60,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 4).rem_euclid(7)) as usize,
            day_of_year,
        }
    }
}

/// Formats `seconds` since the epoch with the common `strftime` directives; `%-d`-style
/// (no padding) is accepted as on Linux, unknown directives are kept as written.
fn format_unix_time(seconds: u64, format: &str) -> String {
    let t = DateTime::from_unix(seconds);
    let month_name = MONTHS.get(t.month as usize - 1).copied().unwrap_or("");
    let weekday_name = WEEKDAYS.get(t.weekday).copied().unwrap_or("");
    let hour12 = if t.hour.is_multiple_of(12) {
        12
    } else {
        t.hour % 12
    };
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let unpadded = chars.peek() == Some(&'-');
        if unpadded {
            chars.next();
        }
        let number = |n: u32, width: usize| {
            if unpadded {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        match chars.next() {
            Some('Y') => out.push_str(&t.year.to_string()),
            Some('y') => out.push_str(&number(t.year.rem_euclid(100) as u32, 2)),
            Some('m') => out.push_str(&number(t.month, 2)),
            Some('d') => out.push_str(&number(t.day, 2)),
            Some('e') => out.push_str(&format!("{:>2}", t.day)),
            Some('j') => out.push_str(&number(t.day_of_year, 3)),
            Some('H') => out.push_str(&number(t.hour, 2)),
            Some('I') => out.push_str(&number(hour12, 2)),
            Some('M') => out.push_str(&number(t.minute, 2)),
            Some('S') => out.push_str(&number(t.second, 2)),
            Some('p') => out.push_str(if t.hour < 12 { "AM" } else { "PM" }),
            Some('B') => out.push_str(month_name),
            Some('b') | Some('h') => out.push_str(month_name.get(..3).unwrap_or("")),
            Some('A') => out.push_str(weekday_name),
            Some('a') => out.push_str(weekday_name.get(..3).unwrap_or("")),
            Some('Z') => out.push_str("UTC"),
            Some('z') => out.push_str("+0000"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                if unpadded {
                    out.push('-');
                }
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2024-07-23T14:05:09Z (a Tuesday), checked with `date -u -d @1721743509`.
        let t = 1_721_743_509;
        assert_eq!(format_unix_time(t, "%d %b %Y"), "23 Jul 2024");
        assert_eq!(
            format_unix_time(t, "%A, %B %-d %y %H:%M:%S %I%p %j %Z %%"),
            "Tuesday, July 23 24 14:05:09 02PM 205 UTC %"
        );
        // 2000-02-29 (leap day) and the epoch.
        assert_eq!(
            format_unix_time(951_782_400, "%Y-%m-%d %a"),
            "2000-02-29 Tue"
        );
        assert_eq!(
            format_unix_time(0, "%Y-%m-%d %H:%M %a %j"),
            "1970-01-01 00:00 Thu 001"
        );
        assert_eq!(format_unix_time(0, "%Q %-Q"), "%Q %-Q");
    }

    #[test]
    fn now_has_a_plausible_year() {
        let year: i64 = strftime_now("%Y".into()).parse().unwrap();
        assert!(year >= 2024);
    }
}

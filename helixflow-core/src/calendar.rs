//! UTC calendar arithmetic on Unix times (the proleptic Gregorian calendar), with no calendar
//! crate: the dates chat templates print, the day and month windows of token budgets, and the
//! days usage reports group by.

/// Seconds in a day.
pub const DAY_SECONDS: i64 = 86_400;

/// The (year, month 1-12, day 1-31) of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The day count since 1970-01-01 of a (year, month, day): the inverse of
/// [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = year - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The UTC calendar date (year, month 1-12, day 1-31) of a time in Unix seconds.
pub fn utc_date(unix_seconds: i64) -> (i64, u32, u32) {
    civil_from_days(unix_seconds.div_euclid(DAY_SECONDS))
}

/// The UTC date of a time in Unix seconds as `YYYY-MM-DD`.
pub fn utc_date_string(unix_seconds: i64) -> String {
    let (year, month, day) = utc_date(unix_seconds);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_know_leap_days() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(utc_date(1_709_208_030), (2024, 2, 29));
        assert_eq!(utc_date(-1), (1969, 12, 31));
        assert_eq!(utc_date_string(0), "1970-01-01");
        assert_eq!(utc_date_string(951_782_400), "2000-02-29");
        assert_eq!(utc_date_string(1_795_478_400), "2026-11-24");
    }
}

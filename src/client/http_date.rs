//! HTTP dates (RFC 9110 IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`): `Retry-After`
//! may carry one instead of a number of seconds. Read by the client, written by the fake
//! Stripe API.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::display::{civil, days_from_civil};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Reads an IMF-fixdate. `None` for anything else, including the obsolete RFC 850 and
/// asctime forms (which no current server sends) and impossible dates such as 31 Feb.
#[cfg_attr(not(feature = "client"), allow(dead_code))]
pub(crate) fn parse(s: &str) -> Option<SystemTime> {
    let s = s.trim();
    let (day_name, rest) = s.split_once(", ")?;
    if !DAYS.contains(&day_name) {
        return None;
    }
    let mut parts = rest.split(' ');
    let (day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    let number = |t: &str| -> Option<i64> {
        if t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let month = i64::try_from(MONTHS.iter().position(|m| *m == month)? + 1).ok()?;
    let (day, year) = (number(day)?, number(year)?);
    let mut hms = time.split(':');
    let (h, m, sec) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() || [h, m, sec].iter().any(|t| t.len() != 2) {
        return None;
    }
    let (h, m, sec) = (number(h)?, number(m)?, number(sec)?);
    if h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let (y, mo, d, ..) = civil(days * 86_400);
    if (y, mo, d) != (year, month, day) {
        return None;
    }
    let secs = u64::try_from(days * 86_400 + h * 3_600 + m * 60 + sec).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Writes an IMF-fixdate (whole seconds; a time before 1970 is written as 1970).
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) fn format(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2));
    let (year, month, day, h, m, s) = civil(secs);
    let weekday = DAYS[usize::try_from(secs.div_euclid(86_400).rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(month - 1).unwrap_or(0)];
    format!("{weekday}, {day:02} {month} {year:04} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(format(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:37 GMT"), Some(t));
        assert_eq!(parse(" Sun, 06 Nov 1994 08:49:37 GMT "), Some(t));
        let leap = parse("Thu, 29 Feb 2024 23:59:59 GMT").unwrap();
        assert_eq!(format(leap), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(format(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        for i in 0..2_000u64 {
            let t = UNIX_EPOCH + Duration::from_secs(i * 7_919_993);
            assert_eq!(parse(&format(t)), Some(t), "{}", format(t));
        }
    }

    #[test]
    fn refuses_what_is_not_an_imf_fixdate() {
        for bad in [
            "",
            "120",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov +994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}

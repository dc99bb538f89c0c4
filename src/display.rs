//! Text for people: dates, and JSON bodies re-indented as Stripe wrote them. Shared by
//! the event model (RFC 3339 timestamps), the console and the command-line tool.

/// `unix` seconds as (year, month, day, hour, minute, second), UTC (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil(unix: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, secs / 3600, secs / 60 % 60, secs % 60)
}

/// Days since 1970-01-01 of a proleptic Gregorian date, month 1 to 12 (Howard Hinnant's
/// `days_from_civil`); the inverse of [`civil`]'s date.
pub(crate) fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `ms` (Unix milliseconds) as `2025-01-31 23:59:59 UTC`.
#[cfg_attr(not(any(feature = "console", feature = "cli")), allow(dead_code))]
pub(crate) fn utc(ms: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(ms.div_euclid(1000));
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

/// `body` re-indented two spaces a level, keys and numbers exactly as Stripe wrote them
/// (in their order); `None` when it is not JSON. A body that re-indented would be more
/// than eight times its size (and 64 KiB) longer, which only deep nesting does (each
/// line is indented by its depth, up to 128 levels), is given back as it was written:
/// a 1 MiB body would otherwise take a page of over 100 MiB.
pub(crate) fn pretty_json(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let s = std::str::from_utf8(body).ok()?;
    let budget = s.len().saturating_mul(8).saturating_add(64 * 1024);
    let mut out = String::with_capacity(s.len() * 2);
    let mut indent = 0usize;
    let mut strings = InString::default();
    let mut chars = s.chars().peekable();
    let newline = |out: &mut String, indent: usize| {
        out.push('\n');
        for _ in 0..indent {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if strings.feed(c) {
            out.push(c);
            continue;
        }
        match c {
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                out.push(c);
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    indent += 1;
                    newline(&mut out, indent);
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                newline(&mut out, indent);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, indent);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
        if out.len() > budget {
            return Some(s.to_owned());
        }
    }
    Some(out)
}

/// Valid JSON `text` without the whitespace between its tokens (the members in their
/// order, the numbers as written).
#[cfg_attr(not(feature = "cli"), allow(dead_code))]
pub(crate) fn compact_json(text: &str) -> String {
    let mut strings = InString::default();
    text.chars()
        .filter(|&c| strings.feed(c) || !matches!(c, ' ' | '\t' | '\n' | '\r'))
        .collect()
}

/// Follows a JSON text's characters, fed in order, in and out of its strings.
#[derive(Default)]
struct InString {
    inside: bool,
    escaped: bool,
}

impl InString {
    /// Feeds `c`: whether it belongs to a string, its quotes included.
    fn feed(&mut self, c: char) -> bool {
        if self.inside {
            if self.escaped {
                self.escaped = false;
            } else if c == '\\' {
                self.escaped = true;
            } else if c == '"' {
                self.inside = false;
            }
            true
        } else {
            self.inside = c == '"';
            self.inside
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc(1_767_225_599_000), "2025-12-31 23:59:59 UTC");
        assert_eq!(utc(-1000), "1969-12-31 23:59:59 UTC");
    }

    #[test]
    fn json_is_reindented_in_its_own_order() {
        let body = br#"{"z":1,"a":{"s":"a,b:{\"c\"}","e":[],"o":{ }},"l":[1, 2.50]}"#;
        let pretty = pretty_json(body).unwrap();
        assert_eq!(
            pretty,
            "{\n  \"z\": 1,\n  \"a\": {\n    \"s\": \"a,b:{\\\"c\\\"}\",\n    \"e\": [],\n    \
             \"o\": {}\n  },\n  \"l\": [\n    1,\n    2.50\n  ]\n}"
        );
        assert_eq!(pretty_json(b"{not json"), None);
    }

    #[test]
    fn reindenting_keeps_the_value() {
        let raw = br#"{"id":"evt_1", "object" : "event","data":{"object":{}},"list":[1,[]],"s":"a,{\"b\":[c]}"}"#;
        let pretty = pretty_json(raw).unwrap();
        assert_eq!(
            pretty,
            "{\n  \"id\": \"evt_1\",\n  \"object\": \"event\",\n  \"data\": {\n    \"object\": {}\n  },\n  \"list\": [\n    1,\n    []\n  ],\n  \"s\": \"a,{\\\"b\\\":[c]}\"\n}"
        );
        let a: serde_json::Value = serde_json::from_slice(raw).unwrap();
        let b: serde_json::Value = serde_json::from_str(&pretty).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn deep_nesting_is_shown_as_written_rather_than_blown_up() {
        // 100 levels and 40,000 members at the bottom: re-indented, each member's line
        // would carry 200 spaces (about 8 MB from 80 kB).
        let depth = 100;
        let mut body = "[".repeat(depth);
        body.push_str(&vec!["1"; 40_000].join(","));
        body.push_str(&"]".repeat(depth));
        let shown = pretty_json(body.as_bytes()).unwrap();
        assert_eq!(shown, body);
        // Stripe's events, a few levels deep, are re-indented whatever their size.
        let wide = format!(
            r#"{{"data":{{"object":{{"lines":[{}]}}}}}}"#,
            vec!["1"; 40_000].join(",")
        );
        let pretty = pretty_json(wide.as_bytes()).unwrap();
        assert!(
            pretty.starts_with("{\n  \"data\": {\n"),
            "{}",
            &pretty[..40]
        );
        assert!(pretty.len() > wide.len() * 4);
    }
}

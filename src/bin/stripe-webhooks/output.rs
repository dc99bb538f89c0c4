//! Tables, times and durations for people; JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::error::CliError;

/// The longest cell a table prints (longer ones end with `…`; `--json` has them whole).
const MAX_CELL: usize = 80;

/// Writes `args` to stdout, as [`out!`](crate::out) and [`outln!`](crate::outln) do for
/// every command. Control characters other than newline and tab are written as `\u{…}`
/// escapes: job keys, types, errors and bodies come from outside (a handler's error can
/// quote what a customer typed), and an escape sequence must not reach the operator's
/// terminal. When the reader has gone (`stripe-webhooks dead | head -1`), the tool
/// exits quietly with 0 instead of panicking; or, after [`finish_without_stdout`], stops
/// writing and goes on to its own exit code.
pub(crate) fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering::SeqCst;
    if STDOUT_GONE.load(SeqCst) {
        return;
    }
    let text = printable(&args.to_string());
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            if FINISH_WITHOUT_STDOUT.load(SeqCst) {
                STDOUT_GONE.store(true, SeqCst);
                return;
            }
            std::process::exit(0);
        }
        eprintln!("error: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// Set by [`finish_without_stdout`].
static FINISH_WITHOUT_STDOUT: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);
/// The reader of stdout went away.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For a command whose exit code is its result (`send`, a smoke test): a reader that
/// goes away (`stripe-webhooks send | head -1`) stops the output, not the command,
/// which still exits 1 when a delivery failed.
pub(crate) fn finish_without_stdout() {
    FINISH_WITHOUT_STDOUT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether `c` must not reach a terminal raw: a control character, or an invisible
/// format character (zero-width, bidirectional overrides and isolates, the BOM) that
/// would hide or reorder what the operator reads.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` with every control or invisible format character ([`hidden`]) but newline and
/// tab as a `\u{…}` escape.
pub(crate) fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if hidden(c) && c != '\n' && c != '\t' {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` for a field of one line: a newline or carriage return written `\n`, `\r`, so a
/// value (a handler's error quoting what a customer typed) cannot add lines that read as
/// other fields.
pub(crate) fn field(text: &str) -> String {
    text.replace('\n', "\\n").replace('\r', "\\r")
}

/// Prints `value` as pretty JSON on stdout.
///
/// `serde_json` escapes the controls below U+0020 but writes DEL and the C1 controls
/// (U+007F to U+009F) as they are; those become JSON's `\u007f` escapes here, so the
/// output is still JSON and still safe for a terminal.
///
/// # Errors
///
/// [`CliError::Other`] if it cannot be serialized (never, for the tool's own types).
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Other(format!("cannot write JSON: {e}")))?;
    crate::outln!("{}", json_printable(&text));
    Ok(())
}

/// JSON text with every control or invisible format character ([`hidden`]) left raw
/// written as a `\uXXXX` escape. Such characters can only be inside strings (the rest of
/// JSON is ASCII punctuation, digits and words), where the escape means the same
/// character.
fn json_printable(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if hidden(c) && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// An aligned table: a header row, then one row per item.
#[derive(Debug)]
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column names.
    pub(crate) fn new(header: Vec<&'static str>) -> Self {
        Self {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row (one cell per column); cells are put on one line and cut to 80
    /// characters.
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| cell(c)).collect());
    }

    /// The table as text, columns separated by two spaces, no trailing spaces.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                line.extend(std::iter::repeat(' ').take(w - c.chars().count()));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One line, at most [`MAX_CELL`] characters.
fn cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= MAX_CELL {
        one_line
    } else {
        let mut cut: String = one_line.chars().take(MAX_CELL - 1).collect();
        cut.push('…');
        cut
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) use stripe_webhooks::__cli::utc;

/// Unix milliseconds as `2025-01-31 23:59:59 UTC (3h 2m ago)`.
pub(crate) fn when(ms: i64) -> String {
    let age = now_ms().saturating_sub(ms);
    if age >= 0 {
        format!(
            "{} ({} ago)",
            utc(ms),
            human(Duration::from_millis(age.unsigned_abs()))
        )
    } else {
        format!(
            "{} (in {})",
            utc(ms),
            human(Duration::from_millis(age.unsigned_abs()))
        )
    }
}

/// A duration as `3d 4h`, `2h 5m`, `4m 10s`, `12s` or `340ms`.
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Reads an age: a number and a unit, `s`, `m`, `h` or `d` (`30d`, `12h`). A bare number
/// is refused: `3600` could mean seconds as well as days.
///
/// # Errors
///
/// A message saying what is accepted.
pub(crate) fn parse_age(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{s:?} is not an age: use a number and a unit, like 30d, 12h, 90m or 3600s")
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => {
            return Err(format!(
                "{s:?} has no unit: add s, m, h or d (30d, 12h, 90m, 3600s)"
            ))
        }
        _ => {
            return Err(format!(
                "unknown unit {unit:?}: use s, m, h or d (30d, 12h, 90m, 3600s)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_output_stays_json() {
        let value = serde_json::json!({ "error": "boom\u{7f}\u{85}\u{9b}[2J\u{1b}\u{202e}\u{200b}\u{feff}" });
        let text = json_printable(&serde_json::to_string_pretty(&value).unwrap());
        assert_eq!(printable(&text), text, "no raw control is left: {text:?}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn bidirectional_and_zero_width_characters_are_escaped() {
        assert_eq!(
            printable("evt_\u{202e}gpj.exe\u{200b}\u{2066}x\u{2069}"),
            "evt_\\u{202e}gpj.exe\\u{200b}\\u{2066}x\\u{2069}"
        );
        assert_eq!(printable("déjà vu → ok\n"), "déjà vu → ok\n");
    }

    #[test]
    fn reads_ages() {
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("90m"), Ok(Duration::from_secs(5400)));
        assert!(parse_age("7").unwrap_err().contains("no unit"));
        assert!(parse_age("soon").is_err());
        assert!(parse_age("3w").is_err());
    }

    #[test]
    fn aligns_columns() {
        let mut t = Table::new(vec!["ID", "TYPE"]);
        t.row(vec!["evt_1".into(), "invoice.paid".into()]);
        t.row(vec!["evt_long_id".into(), "a\nb".into()]);
        assert_eq!(
            t.render(),
            "ID           TYPE\nevt_1        invoice.paid\nevt_long_id  a b\n"
        );
    }
}

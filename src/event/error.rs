//! Errors from parsing a verified body.

use std::fmt;

use crate::objects::map_only::MapOnly;

/// Why a verified body could not be parsed as an event.
///
/// Only a body that is not a Stripe event at all is an error. An unknown event type, or a
/// known one whose object does not parse, is still an [`Event`](crate::Event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The body is not valid JSON (or not UTF-8).
    #[error("body is not valid JSON: {message} at line {line} column {column}")]
    #[non_exhaustive]
    InvalidJson {
        /// What the JSON parser found.
        message: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
    },
    /// The body is JSON but not a Stripe event: no `id`, no `type`, no `data`, no
    /// `livemode`, no `created` (Unix seconds in a snapshot event, an RFC 3339 timestamp
    /// in a thin one), an `object` other than `"event"`, a part that should be a JSON
    /// object given as something else (an array of its members, say), or any member of
    /// the envelope given twice (`id`, `type`, `created`, `livemode`, `account`,
    /// `context`, `data`, `data.object`, …: which one was meant cannot be told).
    #[error("body is not a Stripe event: {message} at line {line} column {column}")]
    #[non_exhaustive]
    NotAnEvent {
        /// What is missing or wrong.
        message: String,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The event id, when it could be read.
        event_id: Option<String>,
    },
    /// The body is a v2 thin event notification (`"object": "v2.core.event"`), given to
    /// the snapshot parser.
    #[error("body is a v2 thin event notification (object \"v2.core.event\"): parse it with `parse_notification`")]
    ThinEventNotification,
    /// The body is a v1 snapshot event (`"object": "event"`), given to the thin-event
    /// parser.
    #[error("body is a v1 snapshot event (object \"event\"): parse it with `parse`")]
    SnapshotEvent,
}

impl ParseError {
    /// The event id of a body that is JSON but not a Stripe event
    /// ([`NotAnEvent`](Self::NotAnEvent)), when its top-level `id` could be read: what to
    /// look the event up by (the Dashboard, `stripe events retrieve`).
    pub fn event_id(&self) -> Option<&str> {
        match self {
            ParseError::NotAnEvent { event_id, .. } => event_id.as_deref(),
            _ => None,
        }
    }

    /// This error with the body's top-level `id`, read on its own (every other member
    /// skipped), when it has none yet: a body that is not an event in some part (a
    /// `created` missing, a member repeated) often still names one, which the outcome
    /// and the logs then carry. Read on the error path only.
    pub(crate) fn with_id_from(mut self, body: &[u8]) -> Self {
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            #[serde(borrow, default)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        if let ParseError::NotAnEvent { event_id, .. } = &mut self {
            if event_id.is_none() {
                if let Ok(MapOnly(Id { id: Some(id) })) = serde_json::from_slice(body) {
                    *event_id = Some(id.into_owned()).filter(|id| !id.is_empty());
                }
            }
        }
        self
    }

    /// A body that is not UTF-8, at its first byte that is not.
    pub(crate) fn not_utf8(body: &[u8], e: &std::str::Utf8Error) -> Self {
        let (line, column) = position(body, e.valid_up_to());
        ParseError::InvalidJson {
            message: "invalid UTF-8".to_owned(),
            line,
            column,
        }
    }

    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        let message = strip_position(e);
        let (line, column) = (e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Data => ParseError::NotAnEvent {
                message,
                line,
                column,
                event_id: None,
            },
            _ => ParseError::InvalidJson {
                message,
                line,
                column,
            },
        }
    }
}

/// The 1-based line and column of the byte at `at` in `body` (columns count bytes).
pub(crate) fn position(body: &[u8], at: usize) -> (usize, usize) {
    let before = &body[..at.min(body.len())];
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

/// serde_json's message without its trailing " at line L column C".
pub(crate) fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Why a known event's `data.object` did not parse into its struct; kept in
/// [`UnparsedEvent`](crate::UnparsedEvent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectError {
    pub(crate) path: String,
    pub(crate) message: String,
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl ObjectError {
    pub(crate) fn new(raw: &str, e: &serde_json::Error) -> Self {
        let (line, column) = (e.line(), e.column());
        Self {
            path: json_path_at(raw, line, column),
            message: strip_position(e),
            line,
            column,
        }
    }

    /// The JSON path of the failure inside `data.object`, like `items.data[0].price`
    /// (empty when it is the object itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What the parser expected and found.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// 1-based line inside `data.object`.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based column inside `data.object`.
    pub fn column(&self) -> usize {
        self.column
    }
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "data.object{}{}: {} (line {} column {})",
            if self.path.is_empty() || self.path.starts_with('[') {
                ""
            } else {
                "."
            },
            self.path,
            self.message,
            self.line,
            self.column
        )
    }
}

impl std::error::Error for ObjectError {}

enum Frame {
    Object {
        key: Option<String>,
        expect_key: bool,
    },
    Array {
        index: usize,
    },
}

/// The JSON path of the value being read at (`line`, `column`) in `text`, found by
/// scanning the text up to there. Only used on the error path.
pub(crate) fn json_path_at(text: &str, line: usize, column: usize) -> String {
    // Byte offset of the 1-based line and column.
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            offset += column.min(l.len());
            break;
        }
        offset += l.len();
    }
    let bytes = &text.as_bytes()[..offset.min(text.len())];

    let mut stack: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if let Some(Frame::Object { key, expect_key }) = stack.last_mut() {
                    if *expect_key {
                        let end = i.min(bytes.len());
                        *key = Some(String::from_utf8_lossy(&bytes[start..end]).into_owned());
                        *expect_key = false;
                    }
                }
            }
            b'{' => stack.push(Frame::Object {
                key: None,
                expect_key: true,
            }),
            b'[' => stack.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                stack.pop();
            }
            b',' => match stack.last_mut() {
                Some(Frame::Object { expect_key, .. }) => *expect_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            _ => {}
        }
        i += 1;
    }

    let mut path = String::new();
    // The outermost frame is `data.object` itself.
    for frame in &stack {
        match frame {
            Frame::Object { key: Some(k), .. } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
            }
            Frame::Object { key: None, .. } => {}
            Frame::Array { index } => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_of_nested_failure() {
        let text = r#"{"a":1,"items":{"data":[{"x":1},{"price":{"unit_amount":"oops"}}]}}"#;
        let col = text.find("\"oops\"").unwrap() + 6;
        assert_eq!(
            json_path_at(text, 1, col),
            "items.data[1].price.unit_amount"
        );
    }

    #[test]
    fn path_with_escapes_and_lines() {
        let text = "{\n \"k\\\"ey\": {\n  \"b\": [1, 2, true]\n }\n}";
        assert_eq!(json_path_at(text, 3, 15), "k\\\"ey.b[2]");
    }
}

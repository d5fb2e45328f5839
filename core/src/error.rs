//! Errors: a kind to match on, a message for people, an optional source.

use std::fmt;
use std::sync::Arc;

/// What went wrong, in terms a caller can act on. Match on this, never on message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input was invalid; nothing was changed.
    InvalidInput,
    /// A dedup or idempotency key was reused with a different payload.
    Conflict,
    /// A counter would exceed `MAX_AMOUNT`; nothing was applied.
    Overflow,
    /// The server could not be reached, timed out, or the connection dropped. Retryable.
    Unavailable,
    /// Stored data could not be decoded.
    Corruption,
    /// The backend does not support this operation or option.
    Unsupported,
    /// The store's setup refuses the operation and will go on refusing it until an operator acts:
    /// permission denied, a read-only database file, failed authentication, TLS settings that
    /// cannot work. Not retryable; nothing was changed.
    Misconfigured,
    /// A bug or an unexpected engine error.
    Internal,
    /// No reservation with that id: never made, or forgotten after its memory passed (SEMANTICS §4.2).
    NotFound,
    /// The reservation's TTL passed before it was committed; nothing was applied (SEMANTICS §4.2).
    Expired,
}

impl ErrorKind {
    /// The kind's name as written in the contract, e.g. `"InvalidInput"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "InvalidInput",
            ErrorKind::Conflict => "Conflict",
            ErrorKind::Overflow => "Overflow",
            ErrorKind::Unavailable => "Unavailable",
            ErrorKind::Corruption => "Corruption",
            ErrorKind::Unsupported => "Unsupported",
            ErrorKind::Misconfigured => "Misconfigured",
            ErrorKind::Internal => "Internal",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::Expired => "Expired",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The one error type of every stowage operation.
///
/// `Clone` (the source is shared), so one engine failure can answer several waiting callers.
#[derive(Clone)]
pub struct Error {
    kind: ErrorKind,
    /// The operation that failed (`"report_usage"`, …), set by the checked layer.
    operation: Option<&'static str>,
    message: String,
    /// The line of a dump an import refused (1 is the header).
    line: Option<u64>,
    source: Option<Arc<dyn std::error::Error + Send + Sync + 'static>>,
}

/// The result of every stowage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` whose message should name the operation and the offending value.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            operation: None,
            message: message.into(),
            line: None,
            source: None,
        }
    }

    /// Names the line of a dump this error is about (`Backend::import`).
    pub fn with_line(mut self, line: u64) -> Self {
        self.line = Some(line);
        self
    }

    /// The line of a dump an import refused (1 is the header), where the error is about one.
    pub fn line(&self) -> Option<u64> {
        self.line
    }

    /// Adds `more` to the message.
    pub(crate) fn and_message(mut self, more: &str) -> Self {
        self.message.push_str(more);
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// `InvalidInput` with the given message.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// `Conflict` with the given message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Conflict, message)
    }

    /// `Overflow` with the given message.
    pub fn overflow(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Overflow, message)
    }

    /// `Unavailable` with the given message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// `Corruption` with the given message.
    pub fn corruption(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Corruption, message)
    }

    /// `Unsupported` with the given message.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    /// `Misconfigured` with the given message.
    pub fn misconfigured(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Misconfigured, message)
    }

    /// `Internal` with the given message.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// `Conflict`: idempotency key `key` of `record` was stored before with another value or timestamp.
    pub fn idempotency_conflict(op: &str, record: &str, key: &str) -> Self {
        Error::conflict(format!(
            "{op}: idempotency key {} of record {} was used with a different value or timestamp",
            show(key),
            show(record)
        ))
    }

    /// `Conflict`: dedup key `key` of `budget` was recorded with other dimensions or deltas.
    pub fn dedup_conflict(op: &str, budget: &str, key: &str) -> Self {
        Error::conflict(format!(
            "{op}: dedup key {} of budget {} was used with different dimensions or deltas",
            show(key),
            show(budget)
        ))
    }

    /// `Overflow`: `dimension` of `budget` would pass MAX_AMOUNT as `current + delta`.
    pub fn counter_overflow(
        op: &str,
        budget: &str,
        dimension: &str,
        current: impl fmt::Display,
        delta: impl fmt::Display,
    ) -> Self {
        Error::overflow(format!(
            "{op}: budget {} dimension {} would reach {current} + {delta}, above MAX_AMOUNT",
            show(budget),
            show(dimension)
        ))
    }

    /// `NotFound`: budget `budget` knows no reservation `id`.
    pub fn reservation_not_found(op: &str, budget: &str, id: &str) -> Self {
        Error::new(
            ErrorKind::NotFound,
            format!(
                "{op}: budget {} knows no reservation {}",
                show(budget),
                show(id)
            ),
        )
    }

    /// `Expired`: reservation `id` of `budget` stopped holding at `expires_at`.
    pub fn reservation_expired(op: &str, budget: &str, id: &str, expires_at: u64) -> Self {
        Error::new(
            ErrorKind::Expired,
            format!(
                "{op}: reservation {} of budget {} expired at {expires_at}",
                show(id),
                show(budget)
            ),
        )
    }

    /// Names the operation that failed.
    pub fn with_operation(mut self, operation: &'static str) -> Self {
        self.operation = Some(operation);
        self
    }

    /// Names `operation` as the operation of this error, unless one is named already (the checked
    /// layer's rule: the innermost operation wins).
    pub(crate) fn in_operation(self, operation: &'static str) -> Self {
        if self.operation.is_some() {
            self
        } else {
            self.with_operation(operation)
        }
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The operation that failed (`"report_usage"`, `"store"`, …), where known: every error that
    /// leaves a backend through its public API names one.
    pub fn operation(&self) -> Option<&'static str> {
        self.operation
    }

    /// The human-readable message (not for matching).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True for `Unavailable` alone: retrying the same call with the same key is safe.
    pub fn is_retryable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("operation", &self.operation)
            .field("message", &self.message);
        if let Some(line) = self.line {
            d.field("line", &line);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Shows a caller-supplied string in an error message: quoted, escaped, and cut to a readable length.
pub fn show(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut shown = String::with_capacity(value.len().min(MAX_CHARS * 2) + 2);
    shown.push('"');
    for (count, c) in value.chars().enumerate() {
        if count == MAX_CHARS {
            shown.push_str("\"… (");
            shown.push_str(&value.len().to_string());
            shown.push_str(" bytes)");
            return shown;
        }
        shown.extend(c.escape_debug());
    }
    shown.push('"');
    shown
}

#[cfg(test)]
mod tests {
    use super::show;

    #[test]
    fn clones_keep_kind_message_and_source() {
        let io = std::io::Error::other("disk on fire");
        let error = super::Error::unavailable("store: engine failed").with_source(io);
        let copy = error.clone();
        assert_eq!(copy.kind(), super::ErrorKind::Unavailable);
        assert_eq!(copy.message(), error.message());
        let source = std::error::Error::source(&copy).expect("the source survives a clone");
        assert_eq!(source.to_string(), "disk on fire");
    }

    #[test]
    fn shown_values_are_quoted_escaped_and_cut() {
        assert_eq!(show("a\"b\n"), "\"a\\\"b\\n\"");
        let long = "x".repeat(300);
        let shown = show(&long);
        assert!(shown.starts_with(&format!("\"{}", "x".repeat(80))));
        assert!(shown.ends_with("\"… (300 bytes)"));
    }
}

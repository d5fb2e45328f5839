//! Input validation shared by every backend; each check names the operation and the value.

use crate::{BudgetPolicy, Error, QueryParams, Result, UsageReport, Value, MAX_AMOUNT};

use crate::raw::show;

/// The longest valid name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The most dimensions a policy or a report may have.
pub const MAX_DIMENSIONS: usize = 64;
/// The largest serialized record value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1_048_576;

/// A valid name is UTF-8 (guaranteed by `&str`), 1 to 256 bytes, without NUL.
pub fn name(op: &str, what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid_input(format!(
            "{op}: {what} is empty; names are 1 to {MAX_NAME_BYTES} bytes"
        )));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(Error::invalid_input(format!(
            "{op}: {what} {} is {} bytes; names are 1 to {MAX_NAME_BYTES} bytes",
            show(value),
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::invalid_input(format!(
            "{op}: {what} {} contains a NUL character",
            show(value)
        )));
    }
    Ok(())
}

/// An amount, limit, counter or timestamp must be at most `MAX_AMOUNT`.
pub fn amount(op: &str, what: &str, value: u64) -> Result<()> {
    if value > MAX_AMOUNT {
        return Err(Error::invalid_input(format!(
            "{op}: {what} {value} is above MAX_AMOUNT ({MAX_AMOUNT})"
        )));
    }
    Ok(())
}

/// An amount already validated (at most `MAX_AMOUNT`) as the `i64` SQL engines store.
pub fn to_i64(op: &str, what: &str, value: u64) -> Result<i64> {
    i64::try_from(value)
        .map_err(|_| Error::invalid_input(format!("{op}: {what} {value} is above MAX_AMOUNT")))
}

/// An `i64` read back from an engine as an amount; a negative one is `Corruption`.
pub fn from_i64(op: &str, what: &str, value: i64) -> Result<u64> {
    u64::try_from(value)
        .map_err(|_| Error::corruption(format!("{op}: stored {what} {value} is negative")))
}

/// Serializes a record value and checks its size; the string is what backends store.
pub fn value(op: &str, record_name: &str, value: &Value) -> Result<String> {
    let text = serde_json::to_string(value).map_err(|e| {
        Error::invalid_input(format!(
            "{op}: value of record {} cannot be serialized",
            show(record_name)
        ))
        .with_source(e)
    })?;
    if text.len() > MAX_VALUE_BYTES {
        return Err(Error::invalid_input(format!(
            "{op}: value of record {} is {} bytes serialized; at most {MAX_VALUE_BYTES}",
            show(record_name),
            text.len()
        )));
    }
    Ok(text)
}

/// The arguments of `store`: a valid record name, a timestamp in range, a value within size; returns the serialized value.
pub fn store(op: &str, record_name: &str, value: &Value, timestamp: u64) -> Result<String> {
    name(op, "record name", record_name)?;
    amount(op, "timestamp", timestamp)?;
    self::value(op, record_name, value)
}

/// The time range of a query must be in range and not reversed.
pub fn query_params(op: &str, params: &QueryParams) -> Result<()> {
    if let Some(start) = params.start_time {
        amount(op, "start_time", start)?;
    }
    if let Some(end) = params.end_time {
        amount(op, "end_time", end)?;
    }
    if let (Some(start), Some(end)) = (params.start_time, params.end_time) {
        if start > end {
            return Err(Error::invalid_input(format!(
                "{op}: start_time {start} is after end_time {end}"
            )));
        }
    }
    Ok(())
}

/// A policy: at most 64 dimensions, valid names, limits in range, `soft <= hard`.
pub fn policy(op: &str, budget: &str, policy: &BudgetPolicy) -> Result<()> {
    name(op, "budget", budget)?;
    if policy.limits.len() > MAX_DIMENSIONS {
        return Err(Error::invalid_input(format!(
            "{op}: policy of budget {} has {} dimensions; at most {MAX_DIMENSIONS}",
            show(budget),
            policy.limits.len()
        )));
    }
    if let Some(window) = &policy.window {
        window.validate(op)?;
    }
    for (dimension, limit) in &policy.limits {
        name(op, "dimension name", dimension)?;
        if let Some(hard) = limit.hard {
            amount(
                op,
                &format!("hard limit of dimension {}", show(dimension)),
                hard,
            )?;
        }
        if let Some(soft) = limit.soft {
            amount(
                op,
                &format!("soft limit of dimension {}", show(dimension)),
                soft,
            )?;
        }
        if let (Some(hard), Some(soft)) = (limit.hard, limit.soft) {
            if soft > hard {
                return Err(Error::invalid_input(format!(
                    "{op}: dimension {} of budget {} has soft limit {soft} above hard limit {hard}",
                    show(dimension),
                    show(budget)
                )));
            }
        }
    }
    Ok(())
}

/// A usage report: 1 to 64 dimensions, valid names, deltas in range, a valid dedup key if present.
pub fn report(op: &str, budget: &str, report: &UsageReport) -> Result<()> {
    name(op, "budget", budget)?;
    if report.dimensions.is_empty() || report.dimensions.len() > MAX_DIMENSIONS {
        return Err(Error::invalid_input(format!(
            "{op}: report for budget {} has {} dimensions; 1 to {MAX_DIMENSIONS} are allowed",
            show(budget),
            report.dimensions.len()
        )));
    }
    for (dimension, delta) in &report.dimensions {
        name(op, "dimension name", dimension)?;
        amount(
            op,
            &format!("delta of dimension {}", show(dimension)),
            *delta,
        )?;
    }
    if let Some(key) = &report.dedup_key {
        name(op, "dedup key", key)?;
    }
    Ok(())
}

/// A reserve request: the budget, 1 to 64 dimensions with valid names and amounts in range, the id
/// a valid name, `ttl_ms` in `1..=MAX_AMOUNT`.
pub fn reserve(op: &str, budget: &str, request: &crate::ReserveRequest) -> Result<()> {
    name(op, "budget", budget)?;
    name(op, "reservation id", &request.id)?;
    if request.dimensions.is_empty() || request.dimensions.len() > MAX_DIMENSIONS {
        return Err(Error::invalid_input(format!(
            "{op}: reservation {} of budget {} has {} dimensions; 1 to {MAX_DIMENSIONS} are allowed",
            show(&request.id),
            show(budget),
            request.dimensions.len()
        )));
    }
    amounts(op, &request.dimensions)?;
    if request.ttl_ms == 0 || request.ttl_ms > MAX_AMOUNT {
        return Err(Error::invalid_input(format!(
            "{op}: ttl_ms {} of reservation {} is out of range 1..={MAX_AMOUNT}",
            request.ttl_ms,
            show(&request.id)
        )));
    }
    Ok(())
}

/// A commit: the budget and id valid names, `actual` 0 to 64 dimensions with valid names and
/// amounts in range (whether they fit the reservation is checked against it).
pub fn commit(
    op: &str,
    budget: &str,
    id: &str,
    actual: &std::collections::BTreeMap<String, u64>,
) -> Result<()> {
    name(op, "budget", budget)?;
    name(op, "reservation id", id)?;
    if actual.len() > MAX_DIMENSIONS {
        return Err(Error::invalid_input(format!(
            "{op}: commit of reservation {} has {} dimensions; at most {MAX_DIMENSIONS}",
            show(id),
            actual.len()
        )));
    }
    amounts(op, actual)
}

/// Dimension names valid and amounts in range.
fn amounts(op: &str, amounts: &std::collections::BTreeMap<String, u64>) -> Result<()> {
    for (dimension, value) in amounts {
        name(op, "dimension name", dimension)?;
        amount(
            op,
            &format!("amount of dimension {}", show(dimension)),
            *value,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, UsageReport};

    /// Every rejection names the operation and shows the offending value, so logs are actionable.
    #[test]
    fn messages_name_the_operation_and_the_value() {
        let long = "n".repeat(300);
        let cases: Vec<(Result<()>, &str, &str)> = vec![
            (name("store", "record name", ""), "store", "empty"),
            (name("usage", "budget", &long), "usage", "300 bytes"),
            (name("policy", "budget", "a\0b"), "policy", "a\\0b"),
            (
                amount("cleanup", "older_than", MAX_AMOUNT + 1),
                "cleanup",
                "9223372036854775808",
            ),
            (
                report(
                    "report_usage",
                    "team",
                    &UsageReport::new().add("tok", u64::MAX),
                ),
                "report_usage",
                "18446744073709551615",
            ),
            (
                policy(
                    "set_policy",
                    "team",
                    &BudgetPolicy::new().limit("tok", crate::DimensionLimit::both(5, 4)),
                ),
                "set_policy",
                "\"tok\"",
            ),
            (
                query_params("query", &QueryParams::new().start_time(9).end_time(3)),
                "query",
                "start_time 9",
            ),
        ];
        for (result, op, shown) in cases {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(err.message().starts_with(op), "{err}");
            assert!(err.message().contains(shown), "{err} should show {shown}");
        }
    }
}

//! Query planning shared by every engine: what to read for a pattern and parameters, and the one
//! loop that turns rows read in query order into the answer.

use crate::raw::pattern::prefix_upper_bound;
use crate::raw::{decode_value, Pattern, RowSelector};
use crate::{QueryParams, Result, StoredValue, MAX_AMOUNT};

/// Which record names an engine must read for a pattern (a superset; the matcher decides).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRange<'p> {
    /// Exactly this name (a pattern without `*`).
    Exact(&'p str),
    /// Names `>= start` (bytes), and `< end` when there is an end.
    From {
        /// The pattern's literal prefix.
        start: &'p str,
        /// The first string above every name with that prefix, if any.
        end: Option<String>,
    },
}

/// What one query reads: the name range, the inclusive time bounds and the per-record limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPlan<'p> {
    /// The parsed pattern; the final judge of every name.
    pub pattern: &'p Pattern,
    /// Names to read.
    pub names: NameRange<'p>,
    /// Keep rows with `stored_at >= start` (0 when not given).
    pub start: u64,
    /// Keep rows with `stored_at <= end` (`MAX_AMOUNT` when not given).
    pub end: u64,
    /// Keep at most this many rows per record (never `Some(0)`).
    pub limit_per_record: Option<usize>,
}

impl<'p> QueryPlan<'p> {
    /// The plan for `pattern` and (validated) `params`; `None` when the answer is empty without
    /// reading anything (`limit_per_record: Some(0)`).
    pub fn new(pattern: &'p Pattern, params: QueryParams) -> Option<Self> {
        if params.limit_per_record == Some(0) {
            return None;
        }
        let prefix = pattern.literal_prefix();
        let names = if pattern.is_exact() {
            NameRange::Exact(prefix)
        } else {
            NameRange::From {
                start: prefix,
                end: prefix_upper_bound(prefix),
            }
        };
        Some(QueryPlan {
            pattern,
            names,
            start: params.start_time.unwrap_or(0),
            end: params.end_time.unwrap_or(MAX_AMOUNT),
            limit_per_record: params.limit_per_record,
        })
    }

    /// A collector for rows read in query order (name ascending, newest first).
    pub fn collector(&self) -> RowCollector<'p> {
        RowCollector {
            selector: RowSelector::new(self.pattern, self.limit_per_record),
            rows: Vec::new(),
        }
    }
}

/// Collects rows read in query order: keeps those of matching records, at most the limit of each,
/// and decodes their values. The one row-reading loop every engine shares.
#[derive(Debug)]
pub struct RowCollector<'p> {
    selector: RowSelector<'p>,
    rows: Vec<StoredValue>,
}

impl RowCollector<'_> {
    /// Whether a row of record `name`, arriving next, belongs in the answer (call [`Self::push`]
    /// with it if so). Lets an engine skip decoding rows it will drop.
    pub fn wants(&mut self, name: &str) -> bool {
        self.selector.keep(name)
    }

    /// Adds a row [`Self::wants`] accepted; `text` is the stored value (decoded here).
    pub fn push(&mut self, op: &str, name: String, text: &str, stored_at: u64) -> Result<()> {
        let value = decode_value(op, &name, text)?;
        self.rows.push(StoredValue {
            record_name: name,
            value,
            stored_at,
        });
        Ok(())
    }

    /// Offers a row; keeps it if [`Self::wants`] does.
    pub fn offer(&mut self, op: &str, name: String, text: &str, stored_at: u64) -> Result<()> {
        if self.wants(&name) {
            self.push(op, name, text, stored_at)?;
        }
        Ok(())
    }

    /// The answer.
    pub fn finish(self) -> Vec<StoredValue> {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_narrow_by_the_literal_prefix() {
        let exact = Pattern::parse("query", "a:b").unwrap();
        let plan = QueryPlan::new(&exact, QueryParams::new()).unwrap();
        assert_eq!(plan.names, NameRange::Exact("a:b"));
        assert_eq!((plan.start, plan.end), (0, MAX_AMOUNT));
        let star = Pattern::parse("query", "ab*").unwrap();
        let plan = QueryPlan::new(&star, QueryParams::new().start_time(3).end_time(9)).unwrap();
        assert_eq!(
            plan.names,
            NameRange::From {
                start: "ab",
                end: Some("ac".to_owned())
            }
        );
        assert_eq!((plan.start, plan.end), (3, 9));
        assert!(QueryPlan::new(&star, QueryParams::new().limit_per_record(0)).is_none());
    }

    #[test]
    fn the_collector_keeps_matching_rows_up_to_the_limit() {
        let pattern = Pattern::parse("query", "a*").unwrap();
        let plan = QueryPlan::new(&pattern, QueryParams::new().limit_per_record(1)).unwrap();
        let mut rows = plan.collector();
        for (name, text, at) in [("a", "1", 5), ("a", "2", 4), ("ab", "3", 1), ("b", "4", 9)] {
            rows.offer("query", name.to_owned(), text, at).unwrap();
        }
        let names: Vec<_> = rows
            .finish()
            .into_iter()
            .map(|r| (r.record_name, r.stored_at))
            .collect();
        assert_eq!(names, vec![("a".to_owned(), 5), ("ab".to_owned(), 1)]);
    }
}

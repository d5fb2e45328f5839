//! Batches (SEMANTICS §4.4): many reports in one call, answered exactly as the calls one by one.
//!
//! The checked layer validates the batch once: its size ([`MAX_BATCH_ITEMS`]) for the whole call,
//! then every item on its own. An invalid item changes nothing, so the engine is given only the
//! valid ones ([`BatchItem`], in order, each with its position) and [`merge`] puts the invalid
//! items' errors back in their slots. An engine answers one result per item it was given.

use crate::{Error, ErrorKind, Result, UsageReceipt, UsageReport};

/// The most items one `report_usage_batch` call takes; more is `InvalidInput` for the whole call.
pub const MAX_BATCH_ITEMS: usize = 10_000;

/// One valid item of a batch, as an engine sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchItem<'a> {
    /// The item's position in the caller's batch.
    pub index: usize,
    /// The budget the report goes to.
    pub budget: &'a str,
    /// The report, valid.
    pub report: &'a UsageReport,
}

/// The invalid items of a batch: each one's position and error.
pub type InvalidItems = Vec<(usize, Error)>;

/// The valid items of `items` in order, and the error of every invalid one by position.
/// `InvalidInput` for the whole call when there are more than [`MAX_BATCH_ITEMS`].
pub fn split<'a>(
    op: &str,
    items: &'a [(String, UsageReport)],
) -> Result<(Vec<BatchItem<'a>>, InvalidItems)> {
    if items.len() > MAX_BATCH_ITEMS {
        return Err(Error::invalid_input(format!(
            "{op}: {} items; a batch has 0 to {MAX_BATCH_ITEMS}",
            items.len()
        )));
    }
    let mut valid = Vec::with_capacity(items.len());
    let mut invalid = Vec::new();
    for (index, (budget, report)) in items.iter().enumerate() {
        match crate::raw::validate::report(op, budget, report) {
            Ok(()) => valid.push(BatchItem {
                index,
                budget,
                report,
            }),
            Err(error) => invalid.push((index, error)),
        }
    }
    Ok((valid, invalid))
}

/// The answer to the whole batch of `len` items: the engine's `answers` (one per valid item, in
/// order) and the `invalid` items' errors, each in its slot, every error naming `op`.
///
/// An engine that answers a different number of results than it was given items is a bug in the
/// engine: `Unavailable` (the outcome of the items is unknown), never a misplaced answer.
pub fn merge(
    op: &'static str,
    len: usize,
    valid: &[BatchItem<'_>],
    answers: Vec<Result<UsageReceipt>>,
    invalid: InvalidItems,
) -> Result<Vec<Result<UsageReceipt>>> {
    if answers.len() != valid.len() {
        return Err(Error::unavailable(format!(
            "{op}: the engine answered {} results for {} items",
            answers.len(),
            valid.len()
        )));
    }
    let mut slots: Vec<Option<Result<UsageReceipt>>> = (0..len).map(|_| None).collect();
    for (item, answer) in valid.iter().zip(answers) {
        slots[item.index] = Some(answer.map_err(|e| e.in_operation(op)));
    }
    for (index, error) in invalid {
        slots[index] = Some(Err(error));
    }
    slots
        .into_iter()
        .map(|slot| slot.ok_or_else(|| Error::unavailable(format!("{op}: an item got no answer"))))
        .collect()
}

/// The batch answered by calling `report` on each item in order: what an engine without a
/// one-round-trip batch does, and the meaning every engine's batch must keep.
///
/// An item answering `Unavailable` leaves its outcome unknown, so the whole call answers that
/// error (the outer `Err` of §4.4) and the items after it are not tried.
pub async fn one_by_one<'a, F, Fut>(
    items: &[BatchItem<'a>],
    mut report: F,
) -> Result<Vec<Result<UsageReceipt>>>
where
    F: FnMut(BatchItem<'a>) -> Fut,
    Fut: std::future::Future<Output = Result<UsageReceipt>>,
{
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        let answer = report(*item).await;
        if let Err(error) = &answer {
            if error.kind() == ErrorKind::Unavailable {
                return Err(error.clone());
            }
        }
        answers.push(answer);
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UsageOutcome;

    fn ok() -> Result<UsageReceipt> {
        Ok(UsageReceipt {
            outcome: UsageOutcome::Ok,
            replayed: false,
        })
    }

    #[test]
    fn more_than_the_most_items_is_refused_whole() {
        let items = vec![("b".to_owned(), UsageReport::new().add("t", 1)); MAX_BATCH_ITEMS + 1];
        let error = split("report_usage_batch", &items).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let items = &items[..MAX_BATCH_ITEMS];
        let (valid, invalid) = split("report_usage_batch", items).unwrap();
        assert_eq!((valid.len(), invalid.len()), (MAX_BATCH_ITEMS, 0));
    }

    #[test]
    fn invalid_items_keep_their_slots() {
        let items = vec![
            ("".to_owned(), UsageReport::new().add("t", 1)),
            ("b".to_owned(), UsageReport::new().add("t", 1)),
            ("b".to_owned(), UsageReport::new()),
            ("c".to_owned(), UsageReport::new().add("t", 2)),
        ];
        let (valid, invalid) = split("op", &items).unwrap();
        assert_eq!(
            valid
                .iter()
                .map(|i| (i.index, i.budget))
                .collect::<Vec<_>>(),
            vec![(1, "b"), (3, "c")]
        );
        assert_eq!(
            invalid.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![0, 2]
        );
        let conflict = Error::dedup_conflict("report_usage", "c", "k");
        let merged = merge("op", 4, &valid, vec![ok(), Err(conflict)], invalid).unwrap();
        let kinds: Vec<_> = merged
            .iter()
            .map(|r| r.as_ref().err().map(Error::kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                Some(ErrorKind::InvalidInput),
                None,
                Some(ErrorKind::InvalidInput),
                Some(ErrorKind::Conflict)
            ]
        );
        assert_eq!(merged[3].as_ref().unwrap_err().operation(), Some("op"));
    }

    #[test]
    fn a_wrong_number_of_answers_is_unavailable() {
        let items = vec![("b".to_owned(), UsageReport::new().add("t", 1)); 2];
        let (valid, invalid) = split("op", &items).unwrap();
        let error = merge("op", 2, &valid, vec![ok()], invalid).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn one_by_one_stops_at_an_unavailable_item() {
        let items = vec![("b".to_owned(), UsageReport::new().add("t", 1)); 3];
        let (valid, _) = split("op", &items).unwrap();
        let mut calls = 0;
        let answer = crate::raw::run_now(
            "op",
            one_by_one(&valid, |item| {
                calls += 1;
                let index = item.index;
                async move {
                    match index {
                        0 => Err(Error::dedup_conflict("op", "b", "k")),
                        1 => Err(Error::unavailable("gone")),
                        _ => ok(),
                    }
                }
            }),
        );
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::Unavailable);
        assert_eq!(calls, 2);
    }
}

//! Several budgets in one call (SEMANTICS §4.3): key → team → org.
//!
//! The answers and effects are defined by a sequence of §4.2 calls, budgets taken in name order.
//! That sequence is written here once ([`reserve_all`], [`commit_all`], [`release_all`],
//! [`report_usage_all`]) over [`Steps`]: the reference model and SQLite run it inside their one
//! atomic step (driven by [`run_now`]), a Valkey cluster runs it call by call over the network,
//! and the server-side engines (PostgreSQL, standalone Valkey) mirror it in one function or script.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use serde::{Deserialize, Serialize};

use crate::raw::show;
use crate::{
    Breach, Error, ReserveOutcome, ReserveReceipt, ReserveRequest, Result, UsageOutcome,
    UsageReceipt, UsageReport,
};

/// The most budgets one call may name.
pub const MAX_BUDGETS: usize = 16;

/// The TTL of the reservations `report_usage_all` makes under its dedup key: 60 s.
pub const REPORT_ALL_TTL_MS: u64 = 60_000;

/// What `report_usage_all` or `commit_all` answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultiReceipt {
    /// What happened, per budget.
    pub outcome: MultiOutcome,
    /// True when every budget's answer was a replay.
    pub replayed: bool,
}

/// The outcome over several budgets; maps are budget → its breaches.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MultiOutcome {
    /// Applied everywhere; no limit exceeded.
    Ok,
    /// Applied everywhere; these budgets' soft limits are exceeded.
    SoftBreach(BTreeMap<String, Vec<Breach>>),
    /// Applied nowhere: these budgets' hard limits would have been exceeded.
    HardBreach(BTreeMap<String, Vec<Breach>>),
}

/// What `reserve_all` answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MultiReserveReceipt {
    /// Held everywhere, or refused.
    pub outcome: MultiReserveOutcome,
    /// The earliest expiry of the budgets' reservations.
    pub expires_at: u64,
    /// True when every budget's `reserve` was a replay.
    pub replayed: bool,
}

/// The outcome of `reserve_all`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MultiReserveOutcome {
    /// Held on every budget.
    Reserved,
    /// Held nowhere: these budgets (budget → breaches) refused.
    HardBreach(BTreeMap<String, Vec<Breach>>),
}

/// The §4.2 calls the §4.3 sequence is made of, on one store. Inputs are valid.
///
/// An implementation over a transaction (the model, SQLite) answers without awaiting anything, so
/// the sequence runs inside the transaction through [`run_now`]; one over the network (a Valkey
/// cluster) awaits each call.
pub trait Steps {
    /// `reserve` on one budget.
    fn reserve(
        &mut self,
        budget: &str,
        request: &ReserveRequest,
    ) -> impl Future<Output = Result<ReserveReceipt>>;

    /// The error `commit` would answer now, changing nothing (`raw::check_commit`).
    fn check_commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<()>>;

    /// `commit` on one budget.
    fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> impl Future<Output = Result<UsageReceipt>>;

    /// `release` on one budget.
    fn release(&mut self, budget: &str, id: &str) -> impl Future<Output = Result<bool>>;
}

/// Checks the budgets of a §4.3 call: 1 to 16 distinct valid names. Returns them in name (byte)
/// order, the order every step takes them in.
pub fn sorted_budgets<'a>(op: &str, budgets: &[&'a str]) -> Result<Vec<&'a str>> {
    if budgets.is_empty() || budgets.len() > MAX_BUDGETS {
        return Err(Error::invalid_input(format!(
            "{op}: {} budgets given; 1 to {MAX_BUDGETS} are allowed",
            budgets.len()
        )));
    }
    for budget in budgets {
        crate::raw::validate::name(op, "budget", budget)?;
    }
    let mut sorted = budgets.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(Error::invalid_input(format!(
            "{op}: budget {} is given twice",
            show(pair[0])
        )));
    }
    Ok(sorted)
}

/// `reserve_all`: `reserve` on every budget (in the order given: name order), all of them whatever
/// the earlier ones answered. If any answered an error, or any refused, every hold this call
/// created (not replays) is released; the answer is the first error in name order, else the
/// refusals. `expires_at` is the earliest; `replayed` when every `reserve` was a replay.
pub async fn reserve_all<S: Steps>(
    steps: &mut S,
    budgets: &[&str],
    request: &ReserveRequest,
) -> Result<MultiReserveReceipt> {
    let mut answers = Vec::with_capacity(budgets.len());
    for budget in budgets {
        answers.push(steps.reserve(budget, request).await);
    }
    let mut release_error = None;
    for budget in holds_to_release(budgets, &answers) {
        // A release that could not be done may leave a hold until it expires: the caller must hear
        // of it. Any other error means nothing is held any more (the reservation ended and was
        // forgotten at once — a hold made at `MAX_AMOUNT` — or another caller resolved it).
        if let Some(error) = cleanup_error(steps.release(budget, &request.id).await) {
            release_error.get_or_insert(error);
        }
    }
    let answer = reserve_answer(budgets, answers);
    match release_error {
        Some(error) if answer.is_ok() => Err(error),
        _ => answer,
    }
}

/// What a `reserve_all` makes of the answer of a release of a hold it created: only an error that
/// may have left the hold (`Unavailable`) is one the caller must hear of; any other error means
/// nothing is held any more (the reservation ended and was forgotten at once, or another caller
/// resolved it).
pub fn cleanup_error(answer: Result<bool>) -> Option<Error> {
    match answer {
        Err(error) if error.is_retryable() => Some(error),
        Ok(_) | Err(_) => None,
    }
}

/// The budgets whose hold a `reserve_all` must release, given every budget's `reserve` answer (in
/// the order of `budgets`): the holds it created (not replays) when any budget answered an error
/// or refused; none otherwise.
pub fn holds_to_release<'a>(
    budgets: &[&'a str],
    answers: &[Result<ReserveReceipt>],
) -> Vec<&'a str> {
    let failed = answers.iter().any(|answer| match answer {
        Err(_) => true,
        Ok(receipt) => !receipt.outcome.is_reserved(),
    });
    if !failed {
        return Vec::new();
    }
    budgets
        .iter()
        .zip(answers)
        .filter(|(_, answer)| {
            matches!(answer, Ok(receipt) if receipt.outcome.is_reserved() && !receipt.replayed)
        })
        .map(|(budget, _)| *budget)
        .collect()
}

/// `reserve_all`'s answer from every budget's `reserve` answer (in the order of `budgets`): the
/// first error in name order, else the refusals, else `Reserved`; `expires_at` the earliest,
/// `replayed` when every one was a replay. Engines that run the sequence on the server build their
/// answer with it too.
pub fn reserve_answer(
    budgets: &[&str],
    answers: Vec<Result<ReserveReceipt>>,
) -> Result<MultiReserveReceipt> {
    let mut refused = BTreeMap::new();
    let mut expires_at = u64::MAX;
    let mut replayed = true;
    let mut receipts = Vec::with_capacity(answers.len());
    for (budget, answer) in budgets.iter().zip(answers) {
        receipts.push((budget, answer?));
    }
    for (budget, receipt) in receipts {
        expires_at = expires_at.min(receipt.expires_at);
        replayed &= receipt.replayed;
        if let ReserveOutcome::HardBreach(breaches) = receipt.outcome {
            refused.insert((*budget).to_owned(), breaches);
        }
    }
    let outcome = if refused.is_empty() {
        MultiReserveOutcome::Reserved
    } else {
        MultiReserveOutcome::HardBreach(refused)
    };
    Ok(MultiReserveReceipt {
        outcome,
        expires_at,
        replayed,
    })
}

/// `commit_all`: first every budget's reservation is checked as `commit` would check it (the first
/// failure in name order answers and nothing is applied); then `commit` on every budget. Soft
/// breaches are listed per budget; `replayed` when every commit was a replay.
pub async fn commit_all<S: Steps>(
    steps: &mut S,
    budgets: &[&str],
    id: &str,
    actual: &BTreeMap<String, u64>,
) -> Result<MultiReceipt> {
    for budget in budgets {
        steps.check_commit(budget, id, actual).await?;
    }
    let mut receipts = Vec::with_capacity(budgets.len());
    for budget in budgets {
        receipts.push(steps.commit(budget, id, actual).await?);
    }
    commit_answer(budgets, receipts)
}

/// `commit_all`'s answer from every budget's `commit` receipt (in the order of `budgets`): soft
/// breaches per budget; `replayed` when every commit was a replay.
pub fn commit_answer(budgets: &[&str], receipts: Vec<UsageReceipt>) -> Result<MultiReceipt> {
    let mut soft = BTreeMap::new();
    let mut replayed = true;
    for (budget, receipt) in budgets.iter().zip(receipts) {
        replayed &= receipt.replayed;
        match receipt.outcome {
            UsageOutcome::Ok => {}
            UsageOutcome::SoftBreach(breaches) => {
                soft.insert((*budget).to_owned(), breaches);
            }
            UsageOutcome::HardBreach(_) => {
                return Err(Error::internal(format!(
                    "commit_all: commit on budget {} answered a hard breach; commits check no hard limit",
                    show(budget)
                )))
            }
        }
    }
    let outcome = if soft.is_empty() {
        MultiOutcome::Ok
    } else {
        MultiOutcome::SoftBreach(soft)
    };
    Ok(MultiReceipt { outcome, replayed })
}

/// `release_all`: `release` on every budget; after all were tried, the first error in name order.
pub async fn release_all<S: Steps>(steps: &mut S, budgets: &[&str], id: &str) -> Result<()> {
    let mut answers = Vec::with_capacity(budgets.len());
    for budget in budgets {
        answers.push(steps.release(budget, id).await);
    }
    release_answer(answers)
}

/// `release_all`'s answer from every budget's `release` answer (in name order): the first error.
pub fn release_answer(answers: impl IntoIterator<Item = Result<bool>>) -> Result<()> {
    answers
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

/// `report_usage_all`'s answer when its `reserve_all` refused (its `HardBreach`); `None` when
/// every budget reserved and the commits answer.
pub fn refusal_answer(reserved: MultiReserveReceipt) -> Option<MultiReceipt> {
    match reserved.outcome {
        MultiReserveOutcome::HardBreach(breaches) => Some(MultiReceipt {
            outcome: MultiOutcome::HardBreach(breaches),
            replayed: reserved.replayed,
        }),
        MultiReserveOutcome::Reserved => None,
    }
}

/// The reservation `report_usage_all` makes: id = the report's dedup key, its dimensions, 60 s.
/// `InvalidInput` for a report without a key.
pub fn report_all_request(op: &str, report: &UsageReport) -> Result<ReserveRequest> {
    let Some(key) = &report.dedup_key else {
        return Err(Error::invalid_input(format!(
            "{op}: a report over several budgets needs a dedup key (it is the reservation id a retry replays)"
        )));
    };
    Ok(ReserveRequest {
        id: key.clone(),
        dimensions: report.dimensions.clone(),
        ttl_ms: REPORT_ALL_TTL_MS,
    })
}

/// `report_usage_all`: `reserve_all` with [`report_all_request`], then, if reserved,
/// `commit_all` with the same amounts; a refusal is its `HardBreach`.
pub async fn report_usage_all<S: Steps>(
    steps: &mut S,
    budgets: &[&str],
    report: &UsageReport,
) -> Result<MultiReceipt> {
    let request = report_all_request("report_usage_all", report)?;
    let reserved = reserve_all(steps, budgets, &request).await?;
    match refusal_answer(reserved) {
        Some(refused) => Ok(refused),
        None => commit_all(steps, budgets, &request.id, &request.dimensions).await,
    }
}

/// Drives a future that never waits (a sequence of steps inside one transaction) to its answer.
/// A future that would wait is a bug of the engine: `Internal`.
pub fn run_now<T>(op: &str, future: impl Future<Output = Result<T>>) -> Result<T> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(answer) => answer,
        Poll::Pending => Err(Error::internal(format!(
            "{op}: a step inside one atomic transaction tried to wait"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn budgets_are_sorted_distinct_and_bounded() {
        assert_eq!(
            sorted_budgets("op", &["org", "key", "team"]).unwrap(),
            vec!["key", "org", "team"]
        );
        let kind = |b: &[&str]| sorted_budgets("op", b).unwrap_err().kind();
        assert_eq!(kind(&[]), ErrorKind::InvalidInput);
        assert_eq!(kind(&["a", "b", "a"]), ErrorKind::InvalidInput);
        assert_eq!(kind(&[""]), ErrorKind::InvalidInput);
        let names: Vec<String> = (0..17).map(|i| format!("b{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(kind(&refs), ErrorKind::InvalidInput);
        assert_eq!(sorted_budgets("op", &refs[..16]).unwrap().len(), 16);
        // Byte order, not locale order.
        assert_eq!(
            sorted_budgets("op", &["b", "B", "á"]).unwrap(),
            vec!["B", "b", "á"]
        );
    }

    #[test]
    fn a_report_over_several_budgets_needs_a_key() {
        let report = UsageReport::new().add("t", 1);
        assert_eq!(
            report_all_request("op", &report).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        let request = report_all_request("op", &report.dedup_key("k")).unwrap();
        assert_eq!(request, ReserveRequest::new("k", 60_000).add("t", 1));
    }

    #[test]
    fn a_future_that_waits_is_an_internal_error() {
        let waits = std::future::pending::<Result<()>>();
        assert_eq!(
            run_now("op", waits).unwrap_err().kind(),
            ErrorKind::Internal
        );
        assert_eq!(run_now("op", async { Ok(7) }).unwrap(), 7);
    }

    /// Steps over scripted answers: `reserve` answers per budget, `release` one answer for all.
    struct Scripted {
        reserves: BTreeMap<&'static str, Result<ReserveReceipt>>,
        release: Result<bool>,
        released: Vec<String>,
    }

    impl Steps for Scripted {
        async fn reserve(&mut self, budget: &str, _: &ReserveRequest) -> Result<ReserveReceipt> {
            self.reserves[budget].clone()
        }

        async fn check_commit(
            &mut self,
            _: &str,
            _: &str,
            _: &BTreeMap<String, u64>,
        ) -> Result<()> {
            Ok(())
        }

        async fn commit(
            &mut self,
            _: &str,
            _: &str,
            _: &BTreeMap<String, u64>,
        ) -> Result<UsageReceipt> {
            Err(Error::internal("not used"))
        }

        async fn release(&mut self, budget: &str, _: &str) -> Result<bool> {
            self.released.push(budget.to_owned());
            self.release.clone()
        }
    }

    fn held(replayed: bool) -> Result<ReserveReceipt> {
        Ok(ReserveReceipt {
            outcome: ReserveOutcome::Reserved,
            expires_at: 10,
            replayed,
        })
    }

    fn refused() -> Result<ReserveReceipt> {
        Ok(ReserveReceipt {
            outcome: ReserveOutcome::HardBreach(Vec::new()),
            expires_at: 10,
            replayed: false,
        })
    }

    /// `reserve_all` over budgets a (created), b (replayed) and c (answer `last`), releases
    /// answering `release`: what it answers and which budgets it released.
    fn reserve_all_with(
        last: Result<ReserveReceipt>,
        release: Result<bool>,
    ) -> (Result<MultiReserveReceipt>, Vec<String>) {
        let mut steps = Scripted {
            reserves: BTreeMap::from([("a", held(false)), ("b", held(true)), ("c", last)]),
            release,
            released: Vec::new(),
        };
        let request = ReserveRequest::new("r", 10).add("t", 1);
        let answer = run_now("op", reserve_all(&mut steps, &["a", "b", "c"], &request));
        (answer, steps.released)
    }

    #[test]
    fn only_a_release_that_may_have_left_a_hold_changes_the_answer() {
        // A refusal releases the hold this call created (a), not the replayed one (b).
        let (answer, released) = reserve_all_with(refused(), Ok(true));
        assert!(matches!(
            answer.unwrap().outcome,
            MultiReserveOutcome::HardBreach(_)
        ));
        assert_eq!(released, vec!["a".to_owned()]);
        // The hold may be left: the caller must hear of it and retry.
        let unavailable = Err(Error::unavailable("release: no answer"));
        let (answer, _) = reserve_all_with(refused(), unavailable.clone());
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::Unavailable);
        // Nothing is held any more (forgotten at once, or resolved by another caller): no answer.
        for gone in [ErrorKind::NotFound, ErrorKind::Conflict] {
            let (answer, _) = reserve_all_with(refused(), Err(Error::new(gone, "release")));
            assert!(answer.is_ok(), "{gone:?} of a release is not the answer");
        }
        // The sequence's own error answers before a release's.
        let conflict = Err(Error::conflict("reserve: other request"));
        let (answer, released) = reserve_all_with(conflict, unavailable);
        assert_eq!(answer.unwrap_err().kind(), ErrorKind::Conflict);
        assert_eq!(released, vec!["a".to_owned()]);
        // Everything reserved: nothing is released.
        let (answer, released) = reserve_all_with(held(false), Ok(true));
        assert_eq!(answer.unwrap().outcome, MultiReserveOutcome::Reserved);
        assert!(released.is_empty());
    }
}

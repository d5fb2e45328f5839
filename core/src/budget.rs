//! Budgets: policies with hard and soft limits, usage counters, and deduplicated usage reports.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::multi::{self, MultiReceipt, MultiReserveReceipt, Steps};
use crate::{
    BoxFuture, Error, Reservation, ReserveReceipt, ReserveRequest, Result, Window, WindowBounds,
    MAX_AMOUNT,
};

use crate::raw::show;

/// The limits of one budget, per dimension.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BudgetPolicy {
    /// Dimension name → its limits; dimensions not listed have no limit.
    pub limits: BTreeMap<String, DimensionLimit>,
    /// When the counters start again; `None`: lifetime counters (SEMANTICS §4.1).
    #[serde(default)]
    pub window: Option<Window>,
}

impl BudgetPolicy {
    /// A policy without limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces the limits of `dimension`.
    pub fn limit(mut self, dimension: impl Into<String>, limit: DimensionLimit) -> Self {
        self.limits.insert(dimension.into(), limit);
        self
    }

    /// Counts usage per `window` (a day, week, month, year or fixed period).
    pub fn window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }
}

/// The limits of one dimension; `None` means no limit, `Some(0)` means nothing may be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DimensionLimit {
    /// Usage may never go above this; a report that would is refused whole.
    pub hard: Option<u64>,
    /// Usage above this is reported as a soft breach but applied.
    pub soft: Option<u64>,
}

impl DimensionLimit {
    /// A hard limit only.
    pub fn hard(limit: u64) -> Self {
        DimensionLimit {
            hard: Some(limit),
            soft: None,
        }
    }

    /// A soft limit only.
    pub fn soft(limit: u64) -> Self {
        DimensionLimit {
            hard: None,
            soft: Some(limit),
        }
    }

    /// Both limits.
    pub fn both(soft: u64, hard: u64) -> Self {
        DimensionLimit {
            hard: Some(hard),
            soft: Some(soft),
        }
    }
}

/// Usage to add to a budget, optionally deduplicated by a key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageReport {
    /// Dimension name → delta to add.
    pub dimensions: BTreeMap<String, u64>,
    /// A retry with the same key applies nothing and returns the recorded outcome.
    pub dedup_key: Option<String>,
}

impl UsageReport {
    /// An empty report without a dedup key.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `delta` to `dimension` (replacing an earlier delta for it).
    pub fn add(mut self, dimension: impl Into<String>, delta: u64) -> Self {
        self.dimensions.insert(dimension.into(), delta);
        self
    }

    /// Deduplicates the report by `key`.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.dedup_key = Some(key.into());
        self
    }
}

/// What `report_usage` answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UsageReceipt {
    /// What happened to the report.
    pub outcome: UsageOutcome,
    /// True when this is the recorded answer to an earlier report with the same dedup key.
    pub replayed: bool,
}

/// The outcome of a report.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UsageOutcome {
    /// Applied; no limit exceeded.
    Ok,
    /// Applied; these soft limits are exceeded (usage after the report).
    SoftBreach(Vec<Breach>),
    /// Refused whole; these hard limits would have been exceeded (usage before the report).
    HardBreach(Vec<Breach>),
}

impl UsageOutcome {
    /// True unless the outcome is a hard breach, i.e. the report was applied.
    pub fn is_applied(&self) -> bool {
        !matches!(self, UsageOutcome::HardBreach(_))
    }
}

/// One exceeded limit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Breach {
    /// The dimension.
    pub dimension: String,
    /// Usage before the report for a hard breach, after it for a soft breach.
    pub usage: u64,
    /// The limit exceeded.
    pub limit: u64,
    /// True when this report moved usage from at-or-below the limit to above it (for a hard
    /// breach: `usage + pending <= limit`).
    pub crossed: bool,
    /// For a hard breach: the amount held by live reservations of the dimension, which counts
    /// against the limit (SEMANTICS §4.2); 0 in soft breaches.
    #[serde(default)]
    pub pending: u64,
}

/// The counters of one budget.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BudgetUsage {
    /// Dimension → usage since the last reset (in the current window, for a windowed budget), for
    /// every dimension of an applied report.
    pub counters: BTreeMap<String, u64>,
    /// Dimension → amount held by live reservations (SEMANTICS §4.2); dimensions with nothing
    /// held are absent.
    #[serde(default)]
    pub pending: BTreeMap<String, u64>,
    /// The window the counters belong to; `None` for a budget whose policy has no window.
    #[serde(default)]
    pub window: Option<WindowBounds>,
}

/// Limits and usage counters per budget (SEMANTICS §3).
pub trait BudgetBackend: Send + Sync {
    /// Replaces the whole policy of `budget` atomically; usage stays as it is.
    fn set_policy<'a>(
        &'a self,
        budget: &'a str,
        policy: &'a BudgetPolicy,
    ) -> BoxFuture<'a, Result<()>>;

    /// Exactly the policy last set, or `None`.
    fn policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Option<BudgetPolicy>>>;

    /// Removes the policy and returns whether one existed.
    fn delete_policy<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Checks limits and applies a report in one atomic, deduplicated step.
    fn report_usage<'a>(
        &'a self,
        budget: &'a str,
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<UsageReceipt>>;

    /// Many reports in one call (SEMANTICS §4.4): answers exactly those of calling
    /// [`BudgetBackend::report_usage`] on each `(budget, report)` item in order, each in its slot
    /// (a breach, a conflict or an invalid item affects only itself; later items see earlier
    /// ones). 0 to [`MAX_BATCH_ITEMS`](crate::MAX_BATCH_ITEMS) items, else `InvalidInput` for the
    /// whole call. The outer `Err` is only for failures that leave the outcome of items unknown
    /// (`Unavailable`): retrying the whole batch with dedup keys is safe.
    ///
    /// The default calls `report_usage` item by item; the backends of this project answer a
    /// batch in one round trip (one transaction on SQLite).
    fn report_usage_batch<'a>(
        &'a self,
        items: &'a [(String, UsageReport)],
    ) -> BoxFuture<'a, Result<Vec<Result<UsageReceipt>>>> {
        Box::pin(async move {
            let op = "report_usage_batch";
            let (valid, invalid) = crate::batch::split(op, items)?;
            let answers = crate::batch::one_by_one(&valid, |item| {
                self.report_usage(item.budget, item.report)
            })
            .await?;
            crate::batch::merge(op, items.len(), &valid, answers, invalid)
        })
    }

    /// The counters of `budget`; empty for an unknown budget.
    fn usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<BudgetUsage>>;

    /// Removes every counter of `budget`; policy, holds and dedup records stay.
    fn reset_usage<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<()>>;

    /// Holds amounts of `budget` until commit, release or expiry, if hard limits allow them with
    /// every other hold (SEMANTICS §4.2). A retry with the same id replays the first answer.
    fn reserve<'a>(
        &'a self,
        budget: &'a str,
        request: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<ReserveReceipt>>;

    /// Frees the hold of reservation `reservation_id` and applies `actual` (each amount at most
    /// the reserved one) in one atomic step; soft limits are checked, hard ones were at reserve.
    fn commit<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<UsageReceipt>>;

    /// Frees a live hold: `true`; `false` when nothing is held (released, expired, refused).
    fn release<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<bool>>;

    /// The error `commit(budget, reservation_id, actual)` would answer now, changing nothing:
    /// `Ok(())` when it would apply or replay.
    fn check_commit<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<()>>;

    /// The reservation `budget` remembers under `reservation_id`, or `None` (never made, or
    /// forgotten).
    fn reservation<'a>(
        &'a self,
        budget: &'a str,
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<Reservation>>>;

    /// Every reservation `budget` remembers, by id: holding, expired and ended ones.
    fn reservations<'a>(&'a self, budget: &'a str) -> BoxFuture<'a, Result<Vec<Reservation>>>;

    /// A keyed report on several budgets at once: applied on every one or none (SEMANTICS §4.3).
    ///
    /// The default composes §4.2 budget by budget; a backend that holds every budget in one store
    /// overrides it with one atomic step that gives the same answers.
    fn report_usage_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        report: &'a UsageReport,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        Box::pin(async move {
            let budgets = multi::sorted_budgets("report_usage_all", budgets)?;
            multi::report_usage_all(&mut OverBackend(self), &budgets, report).await
        })
    }

    /// `reserve` on several budgets: held on every one or none (SEMANTICS §4.3).
    fn reserve_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        request: &'a ReserveRequest,
    ) -> BoxFuture<'a, Result<MultiReserveReceipt>> {
        Box::pin(async move {
            let budgets = multi::sorted_budgets("reserve_all", budgets)?;
            multi::reserve_all(&mut OverBackend(self), &budgets, request).await
        })
    }

    /// `commit` on several budgets, after checking that every one would succeed (SEMANTICS §4.3).
    fn commit_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        reservation_id: &'a str,
        actual: &'a BTreeMap<String, u64>,
    ) -> BoxFuture<'a, Result<MultiReceipt>> {
        Box::pin(async move {
            let budgets = multi::sorted_budgets("commit_all", budgets)?;
            multi::commit_all(&mut OverBackend(self), &budgets, reservation_id, actual).await
        })
    }

    /// `release` on several budgets; the first error in name order, after all were tried.
    fn release_all<'a>(
        &'a self,
        budgets: &'a [&'a str],
        reservation_id: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let budgets = multi::sorted_budgets("release_all", budgets)?;
            multi::release_all(&mut OverBackend(self), &budgets, reservation_id).await
        })
    }
}

/// The §4.3 sequence over any [`BudgetBackend`]'s public calls, budget by budget: the default of
/// its multi-budget methods, and what a wrapper that overrides them can fall back to
/// (`raw::reserve_all(&mut OverBackend(backend), …)`).
pub struct OverBackend<'a, B: ?Sized>(pub &'a B);

impl<B: ?Sized> std::fmt::Debug for OverBackend<'_, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OverBackend")
    }
}

impl<B: BudgetBackend + ?Sized> Steps for OverBackend<'_, B> {
    async fn reserve(&mut self, budget: &str, request: &ReserveRequest) -> Result<ReserveReceipt> {
        self.0.reserve(budget, request).await
    }

    async fn check_commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<()> {
        self.0.check_commit(budget, id, actual).await
    }

    async fn commit(
        &mut self,
        budget: &str,
        id: &str,
        actual: &BTreeMap<String, u64>,
    ) -> Result<UsageReceipt> {
        self.0.commit(budget, id, actual).await
    }

    async fn release(&mut self, budget: &str, id: &str) -> Result<bool> {
        self.0.release(budget, id).await
    }
}

/// What [`decide`] concluded for one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The outcome to answer (and to record under the dedup key).
    pub outcome: UsageOutcome,
    /// The counters to write, one per report dimension; empty on a hard breach.
    pub new_counters: BTreeMap<String, u64>,
}

/// The admission rule of SEMANTICS §3 steps 3–4 with §4.2's holds, for `report_usage` and
/// `reserve`: per dimension (in name order) `counters + pending + delta`; above `MAX_AMOUNT` is an
/// `Overflow` error (apply and record nothing); above a hard limit is a breach with
/// `usage = counters`, `pending`, and `crossed = usage + pending <= limit`. Returns the breaches,
/// empty when the amounts are admitted.
///
/// `current` and `pending` hold the budget's counters (of the window containing now) and held
/// amounts; missing means 0.
pub fn admit(
    op: &str,
    budget: &str,
    current: &BTreeMap<String, u64>,
    pending: &BTreeMap<String, u64>,
    policy: Option<&BudgetPolicy>,
    amounts: &BTreeMap<String, u64>,
) -> Result<Vec<Breach>> {
    let mut breaches = Vec::new();
    for (dimension, delta) in amounts {
        let before = current.get(dimension).copied().unwrap_or(0);
        let held = pending.get(dimension).copied().unwrap_or(0);
        let committed_and_held = before.checked_add(held).filter(|sum| *sum <= MAX_AMOUNT);
        let Some(after) = committed_and_held
            .and_then(|sum| sum.checked_add(*delta))
            .filter(|sum| *sum <= MAX_AMOUNT)
        else {
            let current = format!("{before} + pending {held}");
            return Err(Error::counter_overflow(
                op, budget, dimension, current, delta,
            ));
        };
        let hard = policy
            .and_then(|p| p.limits.get(dimension))
            .and_then(|l| l.hard);
        if let Some(limit) = hard.filter(|h| after > *h) {
            breaches.push(Breach {
                dimension: dimension.clone(),
                usage: before,
                limit,
                crossed: before.saturating_add(held) <= limit,
                pending: held,
            });
        }
    }
    Ok(breaches)
}

/// SEMANTICS §3 step 5: applies `amounts` to `current` and checks soft limits (usage after,
/// `crossed = before <= limit`). Used by `report_usage` once admitted and by `commit`, which
/// checks no hard limit. Overflow is impossible once admitted (`counters + pending <= MAX_AMOUNT`)
/// but still an error here rather than a wrapped counter.
pub fn settle(
    op: &str,
    budget: &str,
    current: &BTreeMap<String, u64>,
    policy: Option<&BudgetPolicy>,
    amounts: &BTreeMap<String, u64>,
) -> Result<Decision> {
    let mut new_counters = BTreeMap::new();
    let mut soft = Vec::new();
    for (dimension, delta) in amounts {
        let before = current.get(dimension).copied().unwrap_or(0);
        let after = before
            .checked_add(*delta)
            .filter(|sum| *sum <= MAX_AMOUNT)
            .ok_or_else(|| Error::counter_overflow(op, budget, dimension, before, delta))?;
        let limit = policy
            .and_then(|p| p.limits.get(dimension))
            .and_then(|l| l.soft);
        if let Some(limit) = limit.filter(|s| after > *s) {
            soft.push(Breach {
                dimension: dimension.clone(),
                usage: after,
                limit,
                crossed: before <= limit,
                pending: 0,
            });
        }
        new_counters.insert(dimension.clone(), after);
    }
    let outcome = if soft.is_empty() {
        UsageOutcome::Ok
    } else {
        UsageOutcome::SoftBreach(soft)
    };
    Ok(Decision {
        outcome,
        new_counters,
    })
}

/// The rules of SEMANTICS §3 steps 3–5 (with §4.2's holds) for one validated report, given the
/// current counters, the held amounts and the policy: [`admit`], then [`settle`].
///
/// `current` and `pending` hold the budget's counters and held amounts (missing means 0). An
/// overflow is an `Overflow` error; the caller must then apply and record nothing.
pub fn decide(
    budget: &str,
    current: &BTreeMap<String, u64>,
    pending: &BTreeMap<String, u64>,
    policy: Option<&BudgetPolicy>,
    report: &UsageReport,
) -> Result<Decision> {
    let op = "report_usage";
    let hard = admit(op, budget, current, pending, policy, &report.dimensions)?;
    if !hard.is_empty() {
        return Ok(Decision {
            outcome: UsageOutcome::HardBreach(hard),
            new_counters: BTreeMap::new(),
        });
    }
    settle(op, budget, current, policy, &report.dimensions)
}

/// The canonical, unambiguous text of a report's dimensions and deltas, from which
/// [`dedup_fingerprint`] is taken.
///
/// Format: `v1` then, per dimension in name order, `;<byte length>:<name>=<delta>`.
pub fn dedup_fingerprint_text(report: &UsageReport) -> String {
    let mut text = String::from("v1");
    for (dimension, delta) in &report.dimensions {
        text.push(';');
        text.push_str(&dimension.len().to_string());
        text.push(':');
        text.push_str(dimension);
        text.push('=');
        text.push_str(&delta.to_string());
    }
    text
}

/// The length of a [`dedup_fingerprint`]: 128 bits in base64 digits of 6 bits.
pub const FINGERPRINT_LEN: usize = 22;

/// What every engine stores of a keyed report in its dedup record, and compares to detect a
/// reused key: the first 128 bits of the SHA-256 of [`dedup_fingerprint_text`], as 22 digits of
/// the URL-safe base64 alphabet. Two different reports conflict unless their digests collide
/// (2^-128). One form on every engine, so a dump (§4.5) carries it as it is.
pub fn dedup_fingerprint(report: &UsageReport) -> String {
    use sha2::{Digest, Sha256};
    const DIGITS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let hash = Sha256::digest(dedup_fingerprint_text(report).as_bytes());
    let mut bits: u32 = 0;
    let mut held = 0;
    let mut out = String::with_capacity(FINGERPRINT_LEN);
    for byte in &hash[..16] {
        bits = (bits << 8) | u32::from(*byte);
        held += 8;
        while held >= 6 {
            held -= 6;
            out.push(char::from(
                DIGITS[usize::try_from((bits >> held) & 63).unwrap_or(0)],
            ));
        }
    }
    if held > 0 {
        out.push(char::from(
            DIGITS[usize::try_from((bits << (6 - held)) & 63).unwrap_or(0)],
        ));
    }
    out
}

/// Whether `text` has the form of a [`dedup_fingerprint`]: 22 URL-safe base64 digits.
pub fn is_fingerprint(text: &str) -> bool {
    text.len() == FINGERPRINT_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The expiry a dedup record carries: `written_at + ttl_ms` of the handle that writes it, capped at
/// `MAX_AMOUNT` (as reservation expiries are). Computed once, when the record is written, and
/// stored with it: a record's life never depends on the TTL of the handle that reads it.
pub fn dedup_expiry(written_at: u64, ttl_ms: u64) -> u64 {
    written_at.saturating_add(ttl_ms).min(MAX_AMOUNT)
}

/// Whether a dedup record with expiry `expires_at` is live at `now`: live while `now < expires_at`.
/// Garbage collection may remove a record only once this is false by the collector's clock.
pub fn dedup_is_live(expires_at: u64, now: u64) -> bool {
    now < expires_at
}

/// Encodes an outcome for storage in a dedup record (JSON).
pub fn encode_outcome(outcome: &UsageOutcome) -> String {
    serde_json::to_string(outcome).expect("an outcome always serializes")
}

/// Decodes an outcome stored by [`encode_outcome`]; anything else is `Corruption`.
pub fn decode_outcome(op: &str, text: &str) -> Result<UsageOutcome> {
    serde_json::from_str(text).map_err(|e| {
        Error::corruption(format!(
            "{op}: stored dedup outcome {} cannot be decoded",
            show(text)
        ))
        .with_source(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(dims: &[(&str, u64)]) -> UsageReport {
        let mut r = UsageReport::new();
        for (d, v) in dims {
            r = r.add(*d, *v);
        }
        r
    }

    #[test]
    fn fingerprint_is_unambiguous() {
        assert_ne!(
            dedup_fingerprint_text(&report(&[("a=1;1:b", 2)])),
            dedup_fingerprint_text(&report(&[("a", 1), ("b", 2)]))
        );
        assert_eq!(
            dedup_fingerprint_text(&report(&[("b", 2), ("a", 1)])),
            "v1;1:a=1;1:b=2"
        );
        // SHA-256 of the text, first 16 bytes, URL-safe base64 without padding (computed
        // independently with Python's hashlib and base64).
        let digest = dedup_fingerprint(&report(&[("b", 2), ("a", 1)]));
        assert_eq!(digest, "W2oUWlMcisEICHfgxPjHgA");
        assert!(is_fingerprint(&digest));
        assert!(!is_fingerprint("W2oUWlMcisEICHfgxPjHg"));
        assert!(!is_fingerprint("W2oUWlMcisEICHfgxPjHg="));
    }

    #[test]
    fn dedup_liveness_is_exclusive_at_expiry() {
        assert_eq!(dedup_expiry(100, 10), 110);
        assert!(dedup_is_live(110, 100));
        assert!(dedup_is_live(110, 109));
        assert!(!dedup_is_live(110, 110));
        assert!(!dedup_is_live(110, 111));
    }

    #[test]
    fn limit_constructors_set_what_they_name() {
        assert_eq!(
            DimensionLimit::soft(3),
            DimensionLimit {
                hard: None,
                soft: Some(3)
            }
        );
        assert_eq!(
            DimensionLimit::hard(4),
            DimensionLimit {
                hard: Some(4),
                soft: None
            }
        );
    }

    #[test]
    fn outcomes_round_trip_through_their_stored_text() {
        let outcome = UsageOutcome::SoftBreach(vec![Breach {
            dimension: "t:x".into(),
            usage: MAX_AMOUNT,
            limit: 9_007_199_254_740_993,
            crossed: true,
            pending: 0,
        }]);
        let text = encode_outcome(&outcome);
        assert_eq!(decode_outcome("op", &text).unwrap(), outcome);
        assert_ne!(encode_outcome(&UsageOutcome::Ok), text);
        assert_eq!(
            decode_outcome("op", "xyzzy").unwrap_err().kind(),
            crate::ErrorKind::Corruption
        );
    }

    #[test]
    fn dedup_expiry_is_capped_at_max_amount() {
        assert_eq!(dedup_expiry(MAX_AMOUNT - 5, 3), MAX_AMOUNT - 2);
        assert_eq!(dedup_expiry(MAX_AMOUNT - 5, 5), MAX_AMOUNT);
        assert_eq!(dedup_expiry(MAX_AMOUNT - 5, 6), MAX_AMOUNT);
        assert_eq!(dedup_expiry(MAX_AMOUNT, MAX_AMOUNT), MAX_AMOUNT);
        assert!(dedup_is_live(
            dedup_expiry(MAX_AMOUNT - 1, MAX_AMOUNT),
            MAX_AMOUNT - 1
        ));
    }

    #[test]
    fn hard_breach_reports_usage_before_and_applies_nothing() {
        let policy = BudgetPolicy::new().limit("t", DimensionLimit::hard(10));
        let current = BTreeMap::from([("t".to_owned(), 8)]);
        let none = BTreeMap::new();
        let d = decide("b", &current, &none, Some(&policy), &report(&[("t", 3)])).unwrap();
        assert_eq!(
            d.outcome,
            UsageOutcome::HardBreach(vec![Breach {
                dimension: "t".into(),
                usage: 8,
                limit: 10,
                crossed: true,
                pending: 0,
            }])
        );
        assert!(d.new_counters.is_empty());
    }

    #[test]
    fn holds_count_against_hard_limits_and_overflow_but_not_soft_limits() {
        let policy = BudgetPolicy::new().limit("t", DimensionLimit::both(5, 10));
        let current = BTreeMap::from([("t".to_owned(), 4)]);
        let pending = BTreeMap::from([("t".to_owned(), 6)]);
        // 4 + 6 + 0 = 10: reaching the limit exactly is allowed; soft looks at counters (4 + 0).
        let d = decide("b", &current, &pending, Some(&policy), &report(&[("t", 0)])).unwrap();
        assert_eq!(d.outcome, UsageOutcome::Ok);
        let d = decide("b", &current, &pending, Some(&policy), &report(&[("t", 1)])).unwrap();
        assert_eq!(
            d.outcome,
            UsageOutcome::HardBreach(vec![Breach {
                dimension: "t".into(),
                usage: 4,
                limit: 10,
                crossed: true,
                pending: 6,
            }])
        );
        let over = BTreeMap::from([("t".to_owned(), 7)]);
        let breaches = admit(
            "reserve",
            "b",
            &current,
            &over,
            Some(&policy),
            &report(&[("t", 0)]).dimensions,
        )
        .unwrap();
        assert!(!breaches[0].crossed, "4 + 7 was already above 10");
        let full = BTreeMap::from([("t".to_owned(), MAX_AMOUNT - 4)]);
        let err = decide("b", &current, &full, None, &report(&[("t", 1)])).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Overflow);
        let d = settle(
            "commit",
            "b",
            &current,
            Some(&policy),
            &report(&[("t", 2)]).dimensions,
        )
        .unwrap();
        assert_eq!(
            d.outcome,
            UsageOutcome::SoftBreach(vec![Breach {
                dimension: "t".into(),
                usage: 6,
                limit: 5,
                crossed: true,
                pending: 0,
            }])
        );
    }
}

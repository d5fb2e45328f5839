//! Reservations (SEMANTICS §4.2): hold an amount before the work, settle it after.
//!
//! The model is TigerBeetle's pending transfer: a hold counts against hard limits from `reserve`
//! until it is committed, released, or its TTL passes; it resolves exactly once; its id is
//! remembered for the creator's dedup TTL after it ended, so a retry gets the first answer.
//!
//! The rules live here once, as pure functions over a [`Reservation`] read inside the engine's
//! atomic step ([`check_reserve`], [`check_commit`], [`check_release`], [`pending_of`]); engines
//! whose atomic step runs on the server (PostgreSQL functions, Valkey scripts) mirror them and are
//! held to them by the conformance suite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::raw::show;
use crate::{Breach, Error, Result, UsageOutcome, UsageReceipt, MAX_AMOUNT};

/// A request to hold amounts of a budget for a while (`BudgetBackend::reserve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReserveRequest {
    /// The reservation's id: a name, unique per budget while remembered; a retry reuses it.
    pub id: String,
    /// Dimension → amount to hold (the most the work can cost).
    pub dimensions: BTreeMap<String, u64>,
    /// How long the hold lives, `1..=MAX_AMOUNT` ms; it expires at `min(now + ttl_ms, MAX_AMOUNT)`.
    pub ttl_ms: u64,
}

impl ReserveRequest {
    /// A request for reservation `id` living `ttl_ms`, holding nothing yet.
    pub fn new(id: impl Into<String>, ttl_ms: u64) -> Self {
        ReserveRequest {
            id: id.into(),
            dimensions: BTreeMap::new(),
            ttl_ms,
        }
    }

    /// Holds `amount` of `dimension` (replacing an earlier amount for it).
    pub fn add(mut self, dimension: impl Into<String>, amount: u64) -> Self {
        self.dimensions.insert(dimension.into(), amount);
        self
    }
}

/// What `reserve` answered.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReserveReceipt {
    /// Held, or refused by hard limits.
    pub outcome: ReserveOutcome,
    /// When the hold stops counting: `min(reserve time + ttl_ms, MAX_AMOUNT)`.
    pub expires_at: u64,
    /// True when this is the recorded answer to an earlier `reserve` with the same id.
    pub replayed: bool,
}

/// The outcome of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReserveOutcome {
    /// The amounts are held until commit, release or expiry.
    Reserved,
    /// Refused whole, nothing held: these hard limits would have been exceeded.
    HardBreach(Vec<Breach>),
}

impl ReserveOutcome {
    /// True for `Reserved`.
    pub fn is_reserved(&self) -> bool {
        matches!(self, ReserveOutcome::Reserved)
    }
}

/// A reservation as its budget remembers it (`BudgetBackend::reservation`).
///
/// A hold whose `expires_at` has passed stays `Held` here: expiry is read from the clock, never
/// written ([`Reservation::is_holding`]), so two stores given the same calls hold the same data.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reservation {
    /// The id.
    pub id: String,
    /// Dimension → amount requested (held while `Held` and unexpired).
    pub dimensions: BTreeMap<String, u64>,
    /// The TTL requested.
    pub ttl_ms: u64,
    /// When the hold stops counting.
    pub expires_at: u64,
    /// How long the id is remembered after the reservation ended: the dedup TTL of the handle
    /// that created it.
    pub remember_ms: u64,
    /// What became of it.
    pub state: ReservationState,
}

/// What became of a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReservationState {
    /// Reserved and not yet resolved: holding until `expires_at`, expired after.
    Held,
    /// Refused by hard limits at `reserve` (time `at`); nothing was held.
    Refused {
        /// When.
        at: u64,
        /// The breaches answered.
        breaches: Vec<Breach>,
    },
    /// Committed at `at` with `actual`; `outcome` is the commit's recorded answer.
    Committed {
        /// When.
        at: u64,
        /// The amounts committed, exactly as given.
        actual: BTreeMap<String, u64>,
        /// What the commit answered (`Ok` or `SoftBreach`).
        outcome: UsageOutcome,
    },
    /// Released at `at` while it held.
    Released {
        /// When.
        at: u64,
    },
}

impl Reservation {
    /// A reservation created at `now` from `request` by a handle whose dedup TTL is `remember_ms`.
    pub fn new(request: &ReserveRequest, now: u64, remember_ms: u64) -> Self {
        Reservation {
            id: request.id.clone(),
            dimensions: request.dimensions.clone(),
            ttl_ms: request.ttl_ms,
            expires_at: hold_expiry(now, request.ttl_ms),
            remember_ms,
            state: ReservationState::Held,
        }
    }

    /// True while its amounts count: held and `now < expires_at`.
    pub fn is_holding(&self, now: u64) -> bool {
        matches!(self.state, ReservationState::Held) && now < self.expires_at
    }

    /// When it ended, as far as known: the resolution time, or `expires_at` for a hold that was
    /// never resolved (it ends there unless resolved before).
    pub fn ended_at(&self) -> u64 {
        match &self.state {
            ReservationState::Held => self.expires_at,
            ReservationState::Refused { at, .. }
            | ReservationState::Committed { at, .. }
            | ReservationState::Released { at } => *at,
        }
    }

    /// When the id is forgotten: `min(ended_at + remember_ms, MAX_AMOUNT)`.
    pub fn forget_at(&self) -> u64 {
        self.ended_at()
            .saturating_add(self.remember_ms)
            .min(MAX_AMOUNT)
    }

    /// True while the budget still knows the id: `now < forget_at`.
    pub fn is_remembered(&self, now: u64) -> bool {
        now < self.forget_at()
    }

    /// The receipt `reserve` answers for it, and answers again to a retry (`replayed`).
    pub fn receipt(&self, replayed: bool) -> ReserveReceipt {
        let outcome = match &self.state {
            ReservationState::Refused { breaches, .. } => {
                ReserveOutcome::HardBreach(breaches.clone())
            }
            _ => ReserveOutcome::Reserved,
        };
        ReserveReceipt {
            outcome,
            expires_at: self.expires_at,
            replayed,
        }
    }

    /// True when `request` asks for exactly this reservation (dimensions, amounts and TTL).
    pub fn is_same_request(&self, request: &ReserveRequest) -> bool {
        self.dimensions == request.dimensions && self.ttl_ms == request.ttl_ms
    }
}

/// The expiry of a hold created at `now`: `min(now + ttl_ms, MAX_AMOUNT)`.
pub fn hold_expiry(now: u64, ttl_ms: u64) -> u64 {
    now.saturating_add(ttl_ms).min(MAX_AMOUNT)
}

/// `pending`: dimension → sum held at `now` by `reservations` (those of one budget). Dimensions
/// with nothing held (a sum of 0) are absent.
pub fn pending_of<'a>(
    reservations: impl IntoIterator<Item = &'a Reservation>,
    now: u64,
) -> BTreeMap<String, u64> {
    let mut pending: BTreeMap<String, u64> = BTreeMap::new();
    for reservation in reservations {
        if !reservation.is_holding(now) {
            continue;
        }
        for (dimension, amount) in &reservation.dimensions {
            if *amount > 0 {
                // counters + pending <= MAX_AMOUNT always holds, so the sum cannot wrap; saturate anyway.
                let sum = pending.entry(dimension.clone()).or_insert(0);
                *sum = sum.saturating_add(*amount);
            }
        }
    }
    pending
}

/// `reserve`'s first step, given the reservation the budget remembers under the request's id:
/// `Some(receipt)` to replay, `None` to reserve afresh (unknown or forgotten id), `Conflict` for
/// another request under a remembered id.
pub fn check_reserve(
    op: &str,
    budget: &str,
    known: Option<&Reservation>,
    request: &ReserveRequest,
    now: u64,
) -> Result<Option<ReserveReceipt>> {
    let Some(known) = known.filter(|r| r.is_remembered(now)) else {
        return Ok(None);
    };
    if !known.is_same_request(request) {
        return Err(refusal(op, budget, &request.id, Refusal::OtherRequest));
    }
    Ok(Some(known.receipt(true)))
}

/// What a `commit` that passed [`check_commit`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitStep {
    /// Free the hold, apply `actual` to the counters, check soft limits, record the receipt.
    Apply,
    /// Answer the receipt recorded by the first commit; change nothing.
    Replay(UsageReceipt),
}

/// `commit`'s checks, in the contract's order, given the reservation the budget remembers under
/// `id`: unknown (or forgotten) → `NotFound`; `actual` outside the reservation → `InvalidInput`;
/// then its state: live → [`CommitStep::Apply`]; committed with an equal `actual` → replay, with
/// another → `Conflict`; released or refused → `Conflict`; expired → `Expired`.
pub fn check_commit(
    op: &str,
    budget: &str,
    id: &str,
    known: Option<&Reservation>,
    actual: &BTreeMap<String, u64>,
    now: u64,
) -> Result<CommitStep> {
    let Some(known) = known.filter(|r| r.is_remembered(now)) else {
        return Err(Error::reservation_not_found(op, budget, id));
    };
    for (dimension, amount) in actual {
        let reserved = known.dimensions.get(dimension).copied();
        if reserved.is_none_or(|reserved| *amount > reserved) {
            return Err(not_within(op, budget, id, dimension, *amount, reserved));
        }
    }
    match &known.state {
        ReservationState::Held if now < known.expires_at => Ok(CommitStep::Apply),
        ReservationState::Held => Err(Error::reservation_expired(op, budget, id, known.expires_at)),
        ReservationState::Committed {
            actual: committed,
            outcome,
            ..
        } => {
            if committed == actual {
                Ok(CommitStep::Replay(UsageReceipt {
                    outcome: outcome.clone(),
                    replayed: true,
                }))
            } else {
                Err(refusal(op, budget, id, Refusal::CommittedOtherwise))
            }
        }
        ReservationState::Released { .. } => Err(refusal(op, budget, id, Refusal::Released)),
        ReservationState::Refused { .. } => Err(refusal(op, budget, id, Refusal::Refused)),
    }
}

/// Why a reservation call is a `Conflict` (SEMANTICS §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `reserve` with a remembered id and another request.
    OtherRequest,
    /// `commit` of a reservation committed with another `actual`.
    CommittedOtherwise,
    /// `commit` of a released reservation.
    Released,
    /// `commit` of a reservation refused at `reserve`.
    Refused,
    /// `release` of a committed reservation.
    Committed,
}

/// The `Conflict` error for `reason`, naming the reservation.
pub fn refusal(op: &str, budget: &str, id: &str, reason: Refusal) -> Error {
    let what = match reason {
        Refusal::OtherRequest => "was made with other dimensions, amounts or TTL",
        Refusal::CommittedOtherwise => "was committed with other amounts",
        Refusal::Released => "was released",
        Refusal::Refused => "was refused by a hard limit",
        Refusal::Committed => "was committed; it cannot be released",
    };
    Error::conflict(format!(
        "{op}: reservation {} of budget {} {what}",
        show(id),
        show(budget)
    ))
}

/// The `InvalidInput` error of a commit whose `amount` of `dimension` is not within the
/// reservation (`reserved`: what it holds of the dimension, `None` when it is not one of its).
pub fn not_within(
    op: &str,
    budget: &str,
    id: &str,
    dimension: &str,
    amount: u64,
    reserved: Option<u64>,
) -> Error {
    match reserved {
        None => Error::invalid_input(format!(
            "{op}: dimension {} is not one of reservation {} of budget {}",
            show(dimension),
            show(id),
            show(budget)
        )),
        Some(reserved) => Error::invalid_input(format!(
            "{op}: {amount} of dimension {} is more than the {reserved} reservation {} of budget {} holds",
            show(dimension),
            show(id),
            show(budget)
        )),
    }
}

/// `release`'s answer, given the reservation the budget remembers under `id`: `Ok(true)` when a
/// live hold is to be freed (mark it released at `now`), `Ok(false)` when nothing is held
/// (released before, expired, refused), `Conflict` after a commit, `NotFound` for an unknown id.
pub fn check_release(
    op: &str,
    budget: &str,
    id: &str,
    known: Option<&Reservation>,
    now: u64,
) -> Result<bool> {
    let Some(known) = known.filter(|r| r.is_remembered(now)) else {
        return Err(Error::reservation_not_found(op, budget, id));
    };
    match known.state {
        ReservationState::Held => Ok(now < known.expires_at),
        ReservationState::Released { .. } | ReservationState::Refused { .. } => Ok(false),
        ReservationState::Committed { .. } => Err(refusal(op, budget, id, Refusal::Committed)),
    }
}

/// The canonical, unambiguous text of a reserve request's dimensions, amounts and TTL, for engines
/// that compare requests by text (the server-side ones).
///
/// Format: `r1;ttl=<ttl_ms>` then, per dimension in name order, `;<byte length>:<name>=<amount>`.
pub fn reserve_fingerprint(request: &ReserveRequest) -> String {
    let mut text = format!("r1;ttl={}", request.ttl_ms);
    push_dimensions(&mut text, &request.dimensions);
    text
}

/// The canonical, unambiguous text of a commit's `actual`: `c1` then, per dimension in name
/// order, `;<byte length>:<name>=<amount>` (an empty `actual` is `c1`).
pub fn commit_fingerprint(actual: &BTreeMap<String, u64>) -> String {
    let mut text = String::from("c1");
    push_dimensions(&mut text, actual);
    text
}

fn push_dimensions(text: &mut String, dimensions: &BTreeMap<String, u64>) {
    for (dimension, amount) in dimensions {
        text.push(';');
        text.push_str(&dimension.len().to_string());
        text.push(':');
        text.push_str(dimension);
        text.push('=');
        text.push_str(&amount.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn request() -> ReserveRequest {
        ReserveRequest::new("r", 100).add("tok", 10).add("usd", 3)
    }

    fn held_at(now: u64) -> Reservation {
        Reservation::new(&request(), now, 1_000)
    }

    #[test]
    fn a_hold_counts_until_its_expiry_exclusive() {
        let r = held_at(50);
        assert_eq!(r.expires_at, 150);
        assert!(r.is_holding(149));
        assert!(!r.is_holding(150));
        assert_eq!(
            pending_of([&r], 149),
            BTreeMap::from([("tok".into(), 10), ("usd".into(), 3)])
        );
        assert!(pending_of([&r], 150).is_empty());
    }

    #[test]
    fn expiry_and_memory_are_capped_at_max_amount() {
        assert_eq!(hold_expiry(MAX_AMOUNT - 1, 5), MAX_AMOUNT);
        let r = Reservation::new(&request(), MAX_AMOUNT - 10, MAX_AMOUNT);
        assert_eq!(r.forget_at(), MAX_AMOUNT);
    }

    #[test]
    fn an_id_is_remembered_for_the_creators_ttl_after_it_ended() {
        let mut r = held_at(0);
        assert_eq!(r.forget_at(), 1_100);
        r.state = ReservationState::Released { at: 20 };
        assert_eq!(r.forget_at(), 1_020);
        assert!(r.is_remembered(1_019));
        assert!(!r.is_remembered(1_020));
        assert_eq!(
            check_reserve("reserve", "b", Some(&r), &request(), 1_020).unwrap(),
            None
        );
        assert_eq!(
            check_release("release", "b", "r", Some(&r), 1_020)
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn zero_amounts_are_not_pending() {
        let r = Reservation::new(&ReserveRequest::new("z", 5).add("a", 0), 0, 1);
        assert!(pending_of([&r], 0).is_empty());
    }

    #[test]
    fn reserve_replays_the_same_request_and_refuses_another() {
        let r = held_at(0);
        let replay = check_reserve("reserve", "b", Some(&r), &request(), 10).unwrap();
        assert_eq!(
            replay,
            Some(ReserveReceipt {
                outcome: ReserveOutcome::Reserved,
                expires_at: 100,
                replayed: true
            })
        );
        let other_ttl = ReserveRequest {
            ttl_ms: 101,
            ..request()
        };
        assert_eq!(
            check_reserve("reserve", "b", Some(&r), &other_ttl, 10)
                .unwrap_err()
                .kind(),
            ErrorKind::Conflict
        );
    }

    #[test]
    fn commit_checks_run_in_the_contracts_order() {
        let kind = |known: Option<&Reservation>, actual: &[(&str, u64)], now| {
            let actual = actual.iter().map(|(d, v)| ((*d).to_owned(), *v)).collect();
            check_commit("commit", "b", "r", known, &actual, now).map_err(|e| e.kind())
        };
        let held = held_at(0);
        assert_eq!(kind(None, &[("x", 1)], 0), Err(ErrorKind::NotFound));
        assert_eq!(
            kind(Some(&held), &[("x", 1)], 0),
            Err(ErrorKind::InvalidInput)
        );
        assert_eq!(
            kind(Some(&held), &[("tok", 11)], 0),
            Err(ErrorKind::InvalidInput)
        );
        // Outside the reservation beats expired: the input is checked first.
        assert_eq!(
            kind(Some(&held), &[("tok", 11)], 100),
            Err(ErrorKind::InvalidInput)
        );
        assert_eq!(kind(Some(&held), &[("tok", 10)], 99), Ok(CommitStep::Apply));
        assert_eq!(kind(Some(&held), &[], 99), Ok(CommitStep::Apply));
        assert_eq!(
            kind(Some(&held), &[("tok", 10)], 100),
            Err(ErrorKind::Expired)
        );
        let committed = Reservation {
            state: ReservationState::Committed {
                at: 5,
                actual: BTreeMap::from([("tok".into(), 4)]),
                outcome: UsageOutcome::Ok,
            },
            ..held.clone()
        };
        assert_eq!(
            kind(Some(&committed), &[("tok", 4)], 500),
            Ok(CommitStep::Replay(UsageReceipt {
                outcome: UsageOutcome::Ok,
                replayed: true
            }))
        );
        assert_eq!(
            kind(Some(&committed), &[("tok", 4), ("usd", 0)], 5),
            Err(ErrorKind::Conflict)
        );
        let released = Reservation {
            state: ReservationState::Released { at: 5 },
            ..held.clone()
        };
        assert_eq!(kind(Some(&released), &[], 5), Err(ErrorKind::Conflict));
        let refused = Reservation {
            state: ReservationState::Refused {
                at: 0,
                breaches: Vec::new(),
            },
            ..held
        };
        assert_eq!(kind(Some(&refused), &[], 5), Err(ErrorKind::Conflict));
    }

    #[test]
    fn release_frees_only_a_live_hold() {
        let held = held_at(0);
        assert!(check_release("release", "b", "r", Some(&held), 99).unwrap());
        assert!(!check_release("release", "b", "r", Some(&held), 100).unwrap());
        let released = Reservation {
            state: ReservationState::Released { at: 5 },
            ..held.clone()
        };
        assert!(!check_release("release", "b", "r", Some(&released), 6).unwrap());
        let committed = Reservation {
            state: ReservationState::Committed {
                at: 5,
                actual: BTreeMap::new(),
                outcome: UsageOutcome::Ok,
            },
            ..held
        };
        assert_eq!(
            check_release("release", "b", "r", Some(&committed), 6)
                .unwrap_err()
                .kind(),
            ErrorKind::Conflict
        );
        assert_eq!(
            check_release("release", "b", "r", None, 6)
                .unwrap_err()
                .kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn fingerprints_are_unambiguous() {
        assert_eq!(
            reserve_fingerprint(&request()),
            "r1;ttl=100;3:tok=10;3:usd=3"
        );
        assert_ne!(
            reserve_fingerprint(&ReserveRequest::new("r", 1).add("a=1;1:b", 2)),
            reserve_fingerprint(&ReserveRequest::new("r", 1).add("a", 1).add("b", 2))
        );
        assert_eq!(commit_fingerprint(&BTreeMap::new()), "c1");
    }
}

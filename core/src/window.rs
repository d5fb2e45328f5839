//! Budget windows: usage that starts again every period (SEMANTICS §4.1). [`Window::bounds_at`] is
//! the one function that computes windows; engines store its answer and never compute their own.

use std::fmt;

use jiff::tz::TimeZone;
use jiff::{civil::Date, Timestamp, ToSpan};
use serde::{Deserialize, Serialize};

use crate::raw::show;
use crate::{Error, Result, MAX_AMOUNT};

/// When a budget's counters start again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Window {
    /// Windows `[offset + k·period, offset + (k+1)·period)` for every integer k, cut to
    /// `0..=MAX_AMOUNT`. `period_ms` ≥ 1 and `offset_ms < period_ms`.
    Fixed {
        /// The length of every window.
        period_ms: u64,
        /// Where windows start, relative to the epoch.
        offset_ms: u64,
    },
    /// The local day, ISO week (from Monday), month or year in `time_zone` (an IANA name); a window
    /// starts at local midnight of its first day (or the first instant after a DST gap there) and
    /// ends where the next starts.
    Calendar {
        /// Day, week, month or year.
        unit: CalendarUnit,
        /// An IANA zone name such as `"Europe/Berlin"`, from the zone database compiled into stowage.
        time_zone: String,
    },
}

/// The unit of a calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CalendarUnit {
    /// From local midnight to the next (23, 24 or 25 hours).
    Day,
    /// An ISO week: Monday 00:00 to the next Monday 00:00.
    Week,
    /// The first of the month 00:00 to the first of the next.
    Month,
    /// 1 January 00:00 to the next 1 January 00:00.
    Year,
}

/// One window: `[start_ms, end_ms)`. The last window before the end of time ends at `MAX_AMOUNT`
/// and also holds the instant `MAX_AMOUNT` itself (see [`WindowBounds::contains`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct WindowBounds {
    /// The first millisecond of the window.
    pub start_ms: u64,
    /// The first millisecond after it (`MAX_AMOUNT` for the last window).
    pub end_ms: u64,
}

impl WindowBounds {
    /// Whether `now` falls in this window: `start <= now < end`, or `now == end == MAX_AMOUNT`.
    pub fn contains(&self, now_ms: u64) -> bool {
        self.start_ms <= now_ms && !self.has_passed(now_ms)
    }

    /// Whether the window is over at `now`: `now >= end`, except for the last window, which never
    /// ends. A `now` before `start` (a lagging clock) has not passed it.
    pub fn has_passed(&self, now_ms: u64) -> bool {
        now_ms >= self.end_ms && self.end_ms < MAX_AMOUNT
    }
}

impl Window {
    /// A fixed window of `period_ms`, starting at `offset_ms` past every multiple of it.
    pub fn fixed(period_ms: u64, offset_ms: u64) -> Self {
        Window::Fixed {
            period_ms,
            offset_ms,
        }
    }

    /// A calendar window of `unit` in `time_zone`.
    pub fn calendar(unit: CalendarUnit, time_zone: impl Into<String>) -> Self {
        Window::Calendar {
            unit,
            time_zone: time_zone.into(),
        }
    }

    /// The local day in `time_zone`.
    pub fn day(time_zone: impl Into<String>) -> Self {
        Self::calendar(CalendarUnit::Day, time_zone)
    }

    /// The ISO week (from Monday) in `time_zone`.
    pub fn week(time_zone: impl Into<String>) -> Self {
        Self::calendar(CalendarUnit::Week, time_zone)
    }

    /// The month in `time_zone`.
    pub fn month(time_zone: impl Into<String>) -> Self {
        Self::calendar(CalendarUnit::Month, time_zone)
    }

    /// The year in `time_zone`.
    pub fn year(time_zone: impl Into<String>) -> Self {
        Self::calendar(CalendarUnit::Year, time_zone)
    }

    /// `InvalidInput` unless `period_ms` ≥ 1, `offset_ms < period_ms`, both at most `MAX_AMOUNT`,
    /// and the zone is known to the compiled-in database.
    pub fn validate(&self, op: &str) -> Result<()> {
        match self {
            Window::Fixed {
                period_ms,
                offset_ms,
            } => {
                if *period_ms == 0 || *period_ms > MAX_AMOUNT || offset_ms >= period_ms {
                    return Err(Error::invalid_input(format!(
                        "{op}: fixed window period_ms {period_ms} offset_ms {offset_ms}: the period \
                         must be 1..=MAX_AMOUNT and the offset below it"
                    )));
                }
                Ok(())
            }
            Window::Calendar { time_zone, .. } => zone(op, time_zone).map(|_| ()),
        }
    }

    /// The window containing `now_ms`: the only place stowage computes windows.
    ///
    /// `InvalidInput` for an invalid window, or, for calendar windows, a `now` whose local year is
    /// outside 1970–9999.
    pub fn bounds_at(&self, now_ms: u64) -> Result<WindowBounds> {
        let op = "bounds_at";
        self.validate(op)?;
        if now_ms > MAX_AMOUNT {
            return Err(Error::invalid_input(format!(
                "{op}: time {now_ms} is above MAX_AMOUNT"
            )));
        }
        match self {
            Window::Fixed {
                period_ms,
                offset_ms,
            } => Ok(fixed_bounds(*period_ms, *offset_ms, now_ms)),
            Window::Calendar { unit, time_zone } => {
                calendar_bounds(op, *unit, &zone(op, time_zone)?, now_ms)
            }
        }
    }

    /// The canonical text of this window, as engines store and compare it:
    /// `fixed:<period>:<offset>` or `calendar:<day|week|month|year>:<zone>`.
    pub fn spec(&self) -> String {
        self.to_string()
    }

    /// Parses [`Window::spec`]'s text; anything else is `Corruption` (it comes from storage).
    pub fn from_spec(op: &str, spec: &str) -> Result<Self> {
        let bad = || {
            Error::corruption(format!(
                "{op}: stored window {} cannot be decoded",
                show(spec)
            ))
        };
        let mut parts = spec.splitn(3, ':');
        let window = match (parts.next(), parts.next(), parts.next()) {
            (Some("fixed"), Some(period), Some(offset)) => Window::Fixed {
                period_ms: period.parse().map_err(|_| bad())?,
                offset_ms: offset.parse().map_err(|_| bad())?,
            },
            (Some("calendar"), Some(unit), Some(time_zone)) => Window::Calendar {
                unit: match unit {
                    "day" => CalendarUnit::Day,
                    "week" => CalendarUnit::Week,
                    "month" => CalendarUnit::Month,
                    "year" => CalendarUnit::Year,
                    _ => return Err(bad()),
                },
                time_zone: time_zone.to_owned(),
            },
            _ => return Err(bad()),
        };
        if window.spec() != spec {
            return Err(bad());
        }
        Ok(window)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Window::Fixed {
                period_ms,
                offset_ms,
            } => write!(f, "fixed:{period_ms}:{offset_ms}"),
            Window::Calendar { unit, time_zone } => {
                let unit = match unit {
                    CalendarUnit::Day => "day",
                    CalendarUnit::Week => "week",
                    CalendarUnit::Month => "month",
                    CalendarUnit::Year => "year",
                };
                write!(f, "calendar:{unit}:{time_zone}")
            }
        }
    }
}

fn zone(op: &str, name: &str) -> Result<TimeZone> {
    // The bundled database only (jiff's `tzdb-bundle-always`, no system zoneinfo): every process
    // of one stowage version draws the same boundaries.
    TimeZone::get(name).map_err(|e| {
        Error::invalid_input(format!("{op}: time zone {} is unknown", show(name))).with_source(e)
    })
}

fn fixed_bounds(period: u64, offset: u64, now: u64) -> WindowBounds {
    let (period, offset, now) = (i128::from(period), i128::from(offset), i128::from(now));
    let k = (now - offset).div_euclid(period);
    let start = offset + k * period;
    let end = start + period;
    let max = i128::from(MAX_AMOUNT);
    let clamp = |v: i128| u64::try_from(v.clamp(0, max)).expect("clamped into u64");
    WindowBounds {
        start_ms: clamp(start),
        end_ms: clamp(end),
    }
}

fn calendar_bounds(op: &str, unit: CalendarUnit, tz: &TimeZone, now: u64) -> Result<WindowBounds> {
    let out_of_range = || {
        Error::invalid_input(format!(
            "{op}: time {now} is outside the years 1970-9999 that calendar windows cover"
        ))
    };
    let ms = i64::try_from(now).map_err(|_| out_of_range())?;
    let local = Timestamp::from_millisecond(ms)
        .map_err(|_| out_of_range())?
        .to_zoned_datetime(tz.clone());
    let date = local.date();
    if !(1970..=9999).contains(&date.year()) {
        return Err(out_of_range());
    }
    let first: Date = match unit {
        CalendarUnit::Day => date,
        CalendarUnit::Week => date
            .checked_sub(i64::from(date.weekday().to_monday_zero_offset()).days())
            .map_err(|_| out_of_range())?,
        CalendarUnit::Month => date.first_of_month(),
        CalendarUnit::Year => date.first_of_year(),
    };
    let next = match unit {
        CalendarUnit::Day => first.checked_add(1.day()),
        CalendarUnit::Week => first.checked_add(1.week()),
        CalendarUnit::Month => first.checked_add(1.month()),
        CalendarUnit::Year => first.checked_add(1.year()),
    }
    .map_err(|_| out_of_range())?;
    let start = midnight(op, tz, first)?;
    let end = midnight(op, tz, next)?;
    let to_u64 = |v: i64| u64::try_from(v).map_err(|_| out_of_range());
    Ok(WindowBounds {
        start_ms: to_u64(start)?,
        end_ms: to_u64(end)?.min(MAX_AMOUNT),
    })
}

/// The first instant of `date` in `tz` in milliseconds: local midnight, or the first instant after
/// a DST gap that skips it.
fn midnight(op: &str, tz: &TimeZone, date: Date) -> Result<i64> {
    let zoned = date.to_zoned_datetime(tz.clone()).map_err(|e| {
        Error::invalid_input(format!("{op}: day {date} has no start")).with_source(e)
    })?;
    Ok(zoned.timestamp().as_millisecond())
}

/// How many calls a windowed operation on a server-side engine makes at most: two suffice (the
/// server asks for the bounds of a new window once), more only while a concurrent `set_policy`
/// keeps changing the window between the calls.
pub const MAX_WINDOW_CALLS: usize = 4;

/// `Unavailable` for an operation that gave up after [`MAX_WINDOW_CALLS`] because the policy's
/// window kept changing under it; it applied nothing, so retrying is safe.
pub fn window_kept_changing(op: &str, budget: &str) -> Error {
    Error::unavailable(format!(
        "{op}: the policy window of budget {} kept changing; retry",
        show(budget)
    ))
}

/// The window an engine keeps next to a budget's counters: the policy's window spec when it was
/// stored, and the bounds `bounds_at` gave then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWindow {
    /// [`Window::spec`] of the window the bounds were computed for.
    pub spec: String,
    /// The bounds of the counters' window.
    pub bounds: WindowBounds,
}

/// Which counters an operation at `now` counts into (SEMANTICS §4.1, lazy rollover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// The policy has no window: lifetime counters.
    Lifetime,
    /// The stored window holds `now` (or lies ahead of a lagging clock): count into it.
    Current(WindowBounds),
    /// The counters' window has passed (or none is stored): the operation counts into `bounds`;
    /// the counters count as zero unless `keep_counters` (nothing says they are from a past window).
    Roll {
        /// The window containing `now`.
        bounds: WindowBounds,
        /// Whether the counters stay (no window was stored) or count as zero (theirs has passed).
        keep_counters: bool,
    },
}

impl WindowStep {
    /// The one rule: `Lifetime` without a window; `Current` while the stored window of the same
    /// spec has not passed; otherwise `Roll` to `bounds_at(now)`.
    pub fn at(window: Option<&Window>, stored: Option<&StoredWindow>, now: u64) -> Result<Self> {
        let Some(window) = window else {
            return Ok(WindowStep::Lifetime);
        };
        match stored {
            Some(s) if s.spec == window.spec() && !s.bounds.has_passed(now) => {
                Ok(WindowStep::Current(s.bounds))
            }
            _ => Ok(WindowStep::Roll {
                bounds: window.bounds_at(now)?,
                keep_counters: stored.is_none(),
            }),
        }
    }

    /// Whether the stored counters are the ones an operation at `now` counts into.
    pub fn keeps_counters(&self) -> bool {
        match self {
            WindowStep::Lifetime | WindowStep::Current(_) => true,
            WindowStep::Roll { keep_counters, .. } => *keep_counters,
        }
    }

    /// The bounds `usage` reports (`None` for lifetime counters).
    pub fn bounds(&self) -> Option<WindowBounds> {
        match self {
            WindowStep::Lifetime => None,
            WindowStep::Current(bounds) | WindowStep::Roll { bounds, .. } => Some(*bounds),
        }
    }
}

/// What `set_policy` (or `delete_policy`, with `new: None`) does to the counters and the stored
/// window: nothing when the window stays the same; otherwise the counters `usage` shows at `now`
/// stay (those of a passed window are gone) and become the usage of the new window (or lifetime
/// counters), whose bounds are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowChange {
    /// Same window (or none before and after): counters and stored window stay as they are.
    Unchanged,
    /// Store `stored` (`None`: remove the stored window); drop the counters unless `keep_counters`.
    Set {
        /// The new stored window, or none for lifetime counters.
        stored: Option<StoredWindow>,
        /// Whether the counters stay.
        keep_counters: bool,
    },
}

impl WindowChange {
    /// The change from the old policy's window (with what is stored) to `new`, at `now`.
    pub fn at(
        old: Option<&Window>,
        stored: Option<&StoredWindow>,
        new: Option<&Window>,
        now: u64,
    ) -> Result<Self> {
        if old.map(Window::spec) == new.map(Window::spec) {
            return Ok(WindowChange::Unchanged);
        }
        let keep_counters = WindowStep::at(old, stored, now)?.keeps_counters();
        let stored = match new {
            None => None,
            Some(window) => Some(StoredWindow {
                spec: window.spec(),
                bounds: window.bounds_at(now)?,
            }),
        };
        Ok(WindowChange::Set {
            stored,
            keep_counters,
        })
    }
}

/// 1971-01-01T00:00:00Z: from here on, every calendar window in every zone starts after the epoch.
const ALWAYS_COMPUTABLE_FROM_MS: u64 = 31_536_000_000;
/// 9998-01-01T00:00:00Z: before this, every zone's local year is at most 9998, so even the year
/// window's end (the next local new year) can be computed.
const ALWAYS_COMPUTABLE_UNTIL_MS: u64 = 253_339_228_800_000;

/// True when `bounds_at(now_ms)` cannot fail for any valid window, fixed or calendar, in any time
/// zone (1971-01-01 ≤ now < 9998-01-01, UTC; fixed windows never fail).
///
/// An engine that decides on the server whether a rolled window's counters still count (which
/// needs no bounds: they count as zero) may skip asking for the new bounds when this holds, and
/// must ask otherwise, so that it fails exactly where [`WindowStep::at`] fails (SEMANTICS §4.1: a
/// calendar window at a time outside years 1970–9999 is `InvalidInput`).
pub fn bounds_always_computable(now_ms: u64) -> bool {
    (ALWAYS_COMPUTABLE_FROM_MS..ALWAYS_COMPUTABLE_UNTIL_MS).contains(&now_ms)
}

#[cfg(test)]
mod tests {
    //! Expected bounds were computed independently (Python's `zoneinfo` over the system's tzdata
    //! 2025b, and by hand for fixed windows) and are written down as constants.
    use super::*;
    use crate::ErrorKind;

    fn bounds(start_ms: u64, end_ms: u64) -> WindowBounds {
        WindowBounds { start_ms, end_ms }
    }

    #[test]
    fn fixed_windows_follow_the_offset() {
        let w = Window::fixed(3_600_000, 900_000);
        // 1_700_000_000_000 = 2023-11-14T22:13:20Z; the hour windows start at :15, so 21:15-22:15.
        assert_eq!(
            w.bounds_at(1_700_000_000_000).unwrap(),
            bounds(1_699_996_500_000, 1_700_000_100_000)
        );
        assert_eq!(w.bounds_at(900_000).unwrap(), bounds(900_000, 4_500_000));
        // Before the first offset: the window [-2_700_000, 900_000) cut at 0.
        assert_eq!(w.bounds_at(0).unwrap(), bounds(0, 900_000));
        // The last window is cut at MAX_AMOUNT and holds it.
        let last = Window::fixed(10, 0).bounds_at(MAX_AMOUNT).unwrap();
        assert_eq!(last, bounds(9_223_372_036_854_775_800, MAX_AMOUNT));
        assert!(last.contains(MAX_AMOUNT) && !last.has_passed(MAX_AMOUNT));
        assert_eq!(
            Window::fixed(MAX_AMOUNT, 0).bounds_at(5).unwrap(),
            bounds(0, MAX_AMOUNT)
        );
    }

    #[test]
    fn bounds_contain_their_start_and_not_their_end() {
        let b = bounds(10, 20);
        assert!(!b.contains(9));
        assert!(b.contains(10) && b.contains(19));
        assert!(!b.contains(20));
        assert!(b.has_passed(20) && !b.has_passed(19) && !b.has_passed(3));
        let last = bounds(10, MAX_AMOUNT);
        assert!(!last.contains(9) && last.contains(MAX_AMOUNT));
    }

    #[test]
    fn a_berlin_month_spans_the_march_dst_change() {
        // 2026-03-29 12:00 CEST; March starts at 00:00 CET and ends at 00:00 CEST.
        assert_eq!(
            Window::month("Europe/Berlin")
                .bounds_at(1_774_778_400_000)
                .unwrap(),
            bounds(1_772_319_600_000, 1_774_994_400_000)
        );
    }

    #[test]
    fn new_york_days_last_23_and_25_hours() {
        let day = Window::day("America/New_York");
        let spring = day.bounds_at(1_772_985_600_000).unwrap(); // 2026-03-08 12:00 EDT
        assert_eq!(spring, bounds(1_772_946_000_000, 1_773_028_800_000));
        assert_eq!(spring.end_ms - spring.start_ms, 23 * 3_600_000);
        let autumn = day.bounds_at(1_793_592_000_000).unwrap(); // 2026-11-01 23:00 EST
        assert_eq!(autumn, bounds(1_793_505_600_000, 1_793_595_600_000));
        assert_eq!(autumn.end_ms - autumn.start_ms, 25 * 3_600_000);
    }

    #[test]
    fn iso_weeks_start_on_monday() {
        // Sunday 2026-11-29 18:00 UTC is in the week of Monday 2026-11-23.
        assert_eq!(
            Window::week("UTC").bounds_at(1_795_975_200_000).unwrap(),
            bounds(1_795_392_000_000, 1_795_996_800_000)
        );
    }

    #[test]
    fn a_leap_february_and_a_year() {
        assert_eq!(
            Window::month("UTC").bounds_at(1_835_438_400_000).unwrap(), // 2028-02-29 12:00
            bounds(1_832_976_000_000, 1_835_481_600_000)
        );
        assert_eq!(
            Window::year("UTC").bounds_at(1_782_864_000_000).unwrap(), // 2026-07-01
            bounds(1_767_225_600_000, 1_798_761_600_000)
        );
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_after_the_gap() {
        // Santiago skips 2026-09-06 00:00-01:00 local: the day starts at 01:00 -03 (04:00Z).
        let day = Window::day("America/Santiago");
        assert_eq!(
            day.bounds_at(1_788_667_200_000).unwrap(),
            bounds(1_788_667_200_000, 1_788_750_000_000)
        );
        assert_eq!(
            day.bounds_at(1_788_667_199_999).unwrap(),
            bounds(1_788_580_800_000, 1_788_667_200_000)
        );
    }

    #[test]
    fn invalid_windows_and_times_are_invalid_input() {
        for window in [
            Window::fixed(0, 0),
            Window::fixed(10, 10),
            Window::fixed(MAX_AMOUNT + 1, 0),
            Window::day("Mars/Olympus_Mons"),
            Window::day(""),
        ] {
            assert_eq!(
                window.bounds_at(1).unwrap_err().kind(),
                ErrorKind::InvalidInput,
                "{window}"
            );
            assert_eq!(
                window.validate("set_policy").unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
        // 1970-01-01 00:00Z is still 1969 in New York; year 10000 is out of range too.
        assert_eq!(
            Window::day("America/New_York")
                .bounds_at(0)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Window::day("UTC").bounds_at(MAX_AMOUNT).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(
            Window::day("UTC").bounds_at(0).unwrap(),
            bounds(0, 86_400_000)
        );
    }

    #[test]
    fn specs_round_trip_and_reject_anything_else() {
        for window in [
            Window::fixed(3_600_000, 5),
            Window::day("America/New_York"),
            Window::month("Europe/Berlin"),
            Window::week("UTC"),
            Window::year("America/Argentina/Buenos_Aires"),
        ] {
            assert_eq!(Window::from_spec("t", &window.spec()).unwrap(), window);
        }
        for bad in [
            "",
            "fixed:1",
            "fixed:01:0",
            "calendar:fortnight:UTC",
            "weekly",
        ] {
            assert_eq!(
                Window::from_spec("t", bad).unwrap_err().kind(),
                ErrorKind::Corruption,
                "{bad}"
            );
        }
    }

    fn stored(spec: &Window, start_ms: u64, end_ms: u64) -> StoredWindow {
        StoredWindow {
            spec: spec.spec(),
            bounds: bounds(start_ms, end_ms),
        }
    }

    #[test]
    fn steps_count_into_the_stored_window_until_it_passes() {
        let hour = Window::fixed(3_600, 0);
        assert_eq!(WindowStep::at(None, None, 5).unwrap(), WindowStep::Lifetime);
        let s = stored(&hour, 3_600, 7_200);
        assert_eq!(
            WindowStep::at(Some(&hour), Some(&s), 7_199).unwrap(),
            WindowStep::Current(bounds(3_600, 7_200))
        );
        // A lagging clock counts into the stored window.
        assert_eq!(
            WindowStep::at(Some(&hour), Some(&s), 10).unwrap(),
            WindowStep::Current(bounds(3_600, 7_200))
        );
        let rolled = WindowStep::at(Some(&hour), Some(&s), 7_200).unwrap();
        assert_eq!(
            rolled,
            WindowStep::Roll {
                bounds: bounds(7_200, 10_800),
                keep_counters: false
            }
        );
        assert!(!rolled.keeps_counters());
        // Many idle windows later: the window containing now.
        assert_eq!(
            WindowStep::at(Some(&hour), Some(&s), 360_000 + 5)
                .unwrap()
                .bounds(),
            Some(bounds(360_000, 363_600))
        );
        // Nothing stored: the counters stay and count into the window of now.
        assert_eq!(
            WindowStep::at(Some(&hour), None, 5).unwrap(),
            WindowStep::Roll {
                bounds: bounds(0, 3_600),
                keep_counters: true
            }
        );
        // The last window never passes.
        let last = stored(&hour, MAX_AMOUNT - 7, MAX_AMOUNT);
        assert!(WindowStep::at(Some(&hour), Some(&last), MAX_AMOUNT)
            .unwrap()
            .keeps_counters());
    }

    #[test]
    fn changes_keep_the_counters_usage_shows() {
        let hour = Window::fixed(3_600, 0);
        let day = Window::day("UTC");
        let s = stored(&hour, 0, 3_600);
        assert_eq!(
            WindowChange::at(Some(&hour), Some(&s), Some(&Window::fixed(3_600, 0)), 10).unwrap(),
            WindowChange::Unchanged
        );
        assert_eq!(
            WindowChange::at(None, None, None, 10).unwrap(),
            WindowChange::Unchanged
        );
        // Inside the stored window: the counters move to the new window.
        assert_eq!(
            WindowChange::at(Some(&hour), Some(&s), Some(&day), 10).unwrap(),
            WindowChange::Set {
                stored: Some(stored(&day, 0, 86_400_000)),
                keep_counters: true
            }
        );
        // The stored window has passed: its counters are zero and stay so.
        assert_eq!(
            WindowChange::at(Some(&hour), Some(&s), None, 3_600).unwrap(),
            WindowChange::Set {
                stored: None,
                keep_counters: false
            }
        );
        // Lifetime counters become the new window's usage.
        assert_eq!(
            WindowChange::at(None, None, Some(&hour), 4_000).unwrap(),
            WindowChange::Set {
                stored: Some(stored(&hour, 3_600, 7_200)),
                keep_counters: true
            }
        );
        assert_eq!(
            WindowChange::at(None, None, Some(&Window::day("Nowhere/Land")), 1)
                .unwrap_err()
                .kind(),
            ErrorKind::InvalidInput
        );
    }

    #[test]
    fn bounds_are_computable_wherever_they_are_said_to_be() {
        let zones = [
            "UTC",
            "Pacific/Kiritimati",
            "Etc/GMT+12",
            "Etc/GMT-14",
            "America/New_York",
            "Asia/Kathmandu",
        ];
        let units = [
            CalendarUnit::Day,
            CalendarUnit::Week,
            CalendarUnit::Month,
            CalendarUnit::Year,
        ];
        let edges = [
            ALWAYS_COMPUTABLE_FROM_MS,
            ALWAYS_COMPUTABLE_FROM_MS + 1,
            ALWAYS_COMPUTABLE_UNTIL_MS - 1,
        ];
        for zone in zones {
            for unit in units {
                let window = Window::Calendar {
                    unit,
                    time_zone: zone.to_owned(),
                };
                for now in edges {
                    assert!(super::bounds_always_computable(now));
                    assert!(window.bounds_at(now).is_ok(), "{zone} {unit:?} at {now}");
                }
            }
        }
        assert!(!super::bounds_always_computable(
            ALWAYS_COMPUTABLE_FROM_MS - 1
        ));
        assert!(!super::bounds_always_computable(ALWAYS_COMPUTABLE_UNTIL_MS));
        // Just outside, some zone fails: the range is not wider than it may be.
        let kiritimati = Window::Calendar {
            unit: CalendarUnit::Year,
            time_zone: "Pacific/Kiritimati".to_owned(),
        };
        assert!(kiritimati.bounds_at(253_402_300_800_000 - 1).is_err());
    }
}

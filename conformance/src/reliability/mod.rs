//! Reliability scenarios shared by every backend's tests: client crashes, server outages and
//! sustained load. Sizes come from the environment so CI runs them small and a long run big
//! (see RELIABILITY.md).

pub mod crash;
pub mod load;
pub mod outage;
pub mod reserve_crash;

/// Kept for compatibility: the knob reader now lives in `stowage_testkit::env`.
pub use stowage_testkit::env_number;

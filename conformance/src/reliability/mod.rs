//! Reliability scenarios shared by every backend's tests: client crashes, server outages and
//! sustained load. Sizes come from the environment so CI runs them small and a long run big
//! (see RELIABILITY.md).

pub mod crash;
pub mod load;
pub mod outage;

/// Reads a number from the environment, or `default`.
pub fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
        .unwrap_or(default)
}

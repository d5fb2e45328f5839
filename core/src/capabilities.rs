//! Honest facts about a backend; they never excuse it from the semantics.

use serde::{Deserialize, Serialize};

/// What a backend is, as opposed to what it does (which is the same everywhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capabilities {
    /// Data survives a restart of the process (and of the server, where there is one).
    pub durable: bool,
    /// Several processes may use one store at once.
    pub shared: bool,
    /// The store spreads over several servers.
    pub distributed: bool,
    /// The largest serialized record value accepted, in bytes.
    pub max_value_bytes: u64,
    /// `report_usage_all`, `reserve_all`, `commit_all` and `release_all` are one atomic step (all
    /// budgets in one store); false where they run budget by budget (SEMANTICS §4.3: a Valkey
    /// cluster). The answers are the same either way.
    pub atomic_multi_budget: bool,
}

impl Capabilities {
    /// The largest serialized value every stowage backend accepts: 1 MiB (SEMANTICS §2).
    pub const MAX_VALUE_BYTES: u64 = 1_048_576;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_advertised_value_limit_is_the_enforced_one() {
        assert_eq!(
            u64::try_from(crate::raw::validate::MAX_VALUE_BYTES).unwrap(),
            super::Capabilities::MAX_VALUE_BYTES
        );
    }
}

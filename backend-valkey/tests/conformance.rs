//! The conformance suite on Valkey: a standalone server and a 3-master cluster (throwaway, or from the environment).

mod common;

use stowage_conformance::servers::valkey;

mod standalone {
    stowage_conformance::conformance_tests!(
        "valkey",
        super::valkey::shared_url().map(super::common::valkey_harness)
    );
}

mod cluster {
    stowage_conformance::conformance_tests!(
        "valkey-cluster",
        super::valkey::shared_cluster_url().map(super::common::valkey_harness)
    );
}

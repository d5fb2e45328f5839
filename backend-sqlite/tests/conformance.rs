//! The conformance suite on SQLite: a shared file (several connections, namespaces) and `sqlite::memory:`.

mod common;

mod file {
    stowage_conformance::conformance_tests!(
        "sqlite",
        Ok(super::common::sqlite_harness(
            super::common::fresh_file_url("conformance")
        ))
    );
}

mod in_memory {
    stowage_conformance::conformance_tests!(
        "sqlite",
        Ok(super::common::sqlite_harness("sqlite::memory:".to_owned()))
    );
}

//! The conformance suite on PostgreSQL: a throwaway server (or `STOWAGE_POSTGRES_URL`).

mod common;

stowage_conformance::conformance_tests!("postgres", common::availability());

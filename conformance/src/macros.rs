//! How the cases are listed: each case module ends with `cases! { … }` naming its own cases,
//! and [`conformance_tests!`](crate::conformance_tests) chains the per-module test macros that
//! `cases!` defines, so no list of cases exists anywhere else.

/// Lists a case module's cases, next to their functions:
///
/// ```text
/// cases! {
///     __conformance_<module>;
///     <module>: [case_a, case_b, …]
/// }
/// ```
///
/// It defines the module's `pub fn cases() -> Vec<Case>` (named `<module>::<case>`, in the order
/// given) for [`all_cases`](crate::all_cases), and the exported, hidden macro
/// `__conformance_<module>!(backend)` that makes `mod <module> { #[test] fn <case>() … }` in a
/// backend's test file, for [`conformance_tests!`](crate::conformance_tests).
macro_rules! cases {
    ($tests:ident; $module:ident: [$($case:ident),* $(,)?]) => {
        cases!(@define ($) $tests; $module: [$($case),*]);
    };
    (@define ($d:tt) $tests:ident; $module:ident: [$($case:ident),*]) => {
        /// This module's cases, in suite order.
        pub fn cases() -> Vec<$crate::Case> {
            vec![$(
                $crate::Case {
                    name: concat!(stringify!($module), "::", stringify!($case)),
                    run: |ctx| Box::pin($case(ctx)),
                },
            )*]
        }

        /// One `#[test]` per case of this module, in `mod <module>` (used by `conformance_tests!`).
        #[doc(hidden)]
        #[macro_export]
        macro_rules! $tests {
            ($d backend:literal) => {
                mod $module {
                    $(
                        #[test]
                        fn $case() {
                            $crate::run_test(
                                $d backend,
                                super::__stowage_conformance_availability(),
                                concat!(stringify!($module), "::", stringify!($case)),
                            );
                        }
                    )*
                }
            };
        }
    };
}

/// Makes one `#[test]` per conformance case: `conformance_tests!("name", availability_expr);`.
///
/// `availability_expr` is evaluated once per test binary and must give an [`Availability`](crate::Availability).
/// The tests are named `<module>::<case>` (e.g. `dedup::retry_with_same_key_replays_without_applying`),
/// one `mod` per case module; each module's list of cases sits at the end of its file.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:literal, $availability:expr) => {
        fn __stowage_conformance_availability() -> &'static $crate::Availability {
            static AVAILABILITY: ::std::sync::OnceLock<$crate::Availability> =
                ::std::sync::OnceLock::new();
            AVAILABILITY.get_or_init(|| $availability)
        }
        // The case modules, in suite order (the same order as `all_cases`).
        $crate::__conformance_records!($backend);
        $crate::__conformance_budget!($backend);
        $crate::__conformance_dedup!($backend);
        $crate::__conformance_names!($backend);
        $crate::__conformance_numbers!($backend);
        $crate::__conformance_lifecycle!($backend);
        $crate::__conformance_races!($backend);
        $crate::__conformance_windows!($backend);
        $crate::__conformance_reservations!($backend);
        $crate::__conformance_several!($backend);
        $crate::__conformance_batch!($backend);
        $crate::__conformance_dump!($backend);
        $crate::__conformance_differential!($backend);
    };
}

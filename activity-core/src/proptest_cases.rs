//! How many cases the core's property tests run: what each test asks for natively, and a
//! handful under Miri (`cargo +nightly miri test -p activity-core --lib`), where a case costs
//! about a thousand times more and the file system is isolated.

use proptest::test_runner::Config;

/// `native` as it is, or under Miri 4 cases and no failure persistence (proptest's failure
/// files need the current directory, which Miri's isolation refuses).
pub(crate) fn config(native: Config) -> Config {
    if cfg!(miri) {
        Config {
            cases: 4,
            failure_persistence: None,
            ..native
        }
    } else {
        native
    }
}

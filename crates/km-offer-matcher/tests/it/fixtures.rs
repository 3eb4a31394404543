//! One test per fixture file under `tests/fixtures/` (see `fixture.rs` for the format), and a
//! guard that no fixture file is left without its test.

use crate::fixture::{all_names, check};

macro_rules! fixtures {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*

        #[test]
        fn every_fixture_file_has_a_test() {
            let listed: Vec<&str> = vec![$(stringify!($name)),*];
            for name in all_names() {
                assert!(listed.contains(&name.as_str()), "fixture {name}.txt has no test in fixtures.rs");
            }
        }
    };
}

fixtures! {
    affinity,
    binpack,
    binpack_constrained,
    binpack_overload,
    demand,
    demand_limits,
    executor_mismatch,
    executor_once,
    executor_pays,
    executor_side_by_side,
    fixed_point,
    maintenance,
    merged_offers,
    never_fits,
    no_offers,
    node_name,
    node_selector,
    order,
    packing,
    ports_duplicate,
    ports_fixed,
    ports_fixed_default,
    ports_taken,
    ports_wildcard,
    ports_wildcard_reserved,
    public_agents,
    roles,
    roles_allocation,
    spread,
    spread_rack,
}

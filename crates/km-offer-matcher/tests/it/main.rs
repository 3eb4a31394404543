//! Integration tests of km-offer-matcher: data-driven fixtures (`fixtures.rs`, files under
//! `tests/fixtures/`), property tests (`props.rs`) and pod-conversion tests (`demand.rs`).

mod demand;
mod fixture;
mod fixtures;
mod props;

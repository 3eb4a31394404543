//! Tests of the scheduler core: scenarios (inputs at times → effects) and a deterministic
#![allow(unreachable_pub)]
//! simulation of a Mesos master and an API server for property tests.

mod harness;
mod props;
mod scenarios;
mod sim;

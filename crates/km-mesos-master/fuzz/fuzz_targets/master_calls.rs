//! The master's scheduler, agent and operator call decoding and its event loop, driven
//! by a script of calls, stream closes, ticks, allocations and restarts
//! (`km_mesos_master::fuzzing::run`; the format is documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| km_mesos_master::fuzzing::run(data));

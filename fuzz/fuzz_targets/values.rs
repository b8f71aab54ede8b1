//! Values file bytes → parse → validate → round-trips → merge per queue → render.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clearml_agent_core::fuzzing::values(data));

//! Two or three `---`-separated pod templates → raw and typed merge properties.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clearml_agent_core::fuzzing::merge(data));

//! A ClearML reply body → envelope → task and queue document decoders.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clearml_agent::fuzzing::clearml_reply(data));

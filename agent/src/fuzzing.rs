//! Fuzz entry point of the agent (feature `fuzzing`): the body of the `clearml_reply` cargo-fuzz
//! target in `fuzz/`, replayed on stable by `tests/e2e/tests/fuzz_corpus.rs`. Not an API.

/// Bytes as a ClearML reply body (HTTP 200): the envelope, then the task and queue document
/// decoders as the client runs them. Nothing may panic, and a task without a readable status is
/// always reported unreadable (the agent must never act on a status it did not read).
pub fn clearml_reply(data: &[u8]) {
    crate::clearml::decode_reply_for_fuzzing(200, data);
}

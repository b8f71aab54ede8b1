//! Replays the kept fuzz inputs through the fuzz targets' bodies on stable, so CI checks that no
//! input the fuzzer kept panics: the minimised corpus (`fuzz/corpus/<target>/`) and the named
//! inputs of past crashes (`fuzz/regressions/<target>/`, kept apart so `cargo fuzz cmin` cannot
//! drop them).

use std::{
    panic,
    path::{Path, PathBuf},
};

/// Fewest corpus files each target must have: a missing or emptied corpus fails the test instead
/// of passing without replaying anything.
const MIN_CORPUS_FILES: usize = 100;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let fuzz = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut inputs = files(&fuzz.join("corpus").join(target));
    assert!(
        inputs.len() >= MIN_CORPUS_FILES,
        "fuzz/corpus/{target}: {} files, expected at least {MIN_CORPUS_FILES}",
        inputs.len()
    );
    let regressions = fuzz.join("regressions").join(target);
    if regressions.exists() {
        inputs.extend(files(&regressions));
    }
    let failed: Vec<String> = inputs
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("read fuzz input");
            panic::catch_unwind(|| run(&data))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panic: {failed:#?}",
        failed.len(),
        inputs.len()
    );
}

#[test]
fn values_corpus_and_regressions_replay_without_panic() {
    replay("values", clearml_agent_core::fuzzing::values);
}

#[test]
fn merge_corpus_and_regressions_replay_without_panic() {
    replay("merge", clearml_agent_core::fuzzing::merge);
}

#[test]
fn clearml_reply_corpus_replays_without_panic() {
    replay("clearml_reply", clearml_agent::fuzzing::clearml_reply);
}

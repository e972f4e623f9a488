//! Replays the committed fuzz corpora on stable: every file of `fuzz/corpus/<target>/`
//! goes through `netmon::fuzzing::<target>`, the function its `cargo fuzz` target calls,
//! so an input that once crashed a parser (and was added to the corpus) stays fixed.
//! The long runs that grew these corpora are in docs/measurements.md ("Fuzzing").

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use netmon::fuzzing::TARGETS;

#[test]
fn every_corpus_file_parses_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut failures = Vec::new();
    for (target, run) in TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target needs a corpus)", dir.display()));
        let mut files = 0;
        for entry in entries {
            let path = entry.expect("reading the corpus directory").path();
            let data =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            files += 1;
            if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
                failures.push(path.display().to_string());
            }
        }
        assert!(files > 0, "{}: empty corpus", dir.display());
    }
    assert!(failures.is_empty(), "parsers panicked on: {failures:#?}");
}

/// The fuzz project has one target per entry of `TARGETS` and nothing else, so a new
/// parser cannot get a fuzz target without CI replaying its corpus (or the reverse).
#[test]
fn fuzz_targets_match_the_replayed_list() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("reading fuzz_targets").path())
        .filter_map(|p| Some(p.file_stem()?.to_str()?.to_owned()))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = TARGETS.iter().map(|(t, _)| (*t).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

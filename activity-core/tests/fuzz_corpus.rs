//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same bodies the
//! cargo-fuzz targets run (`activity_core::fuzzing`), on the stable toolchain.
//!
//! A finding becomes a regression test by adding its input file to the target's corpus
//! directory: every file there must pass.

use std::fs;
use std::path::{Path, PathBuf};

use activity_core::fuzzing;

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus directory {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    files
}

/// Runs `body` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, body: fn(&[u8])) {
    for path in corpus_files(target) {
        let data = fs::read(&path).expect("a readable corpus file");
        if let Err(panic) = std::panic::catch_unwind(|| body(&data)) {
            eprintln!("{target}: {} fails", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

#[test]
fn mqtt_decode_corpus() {
    replay("mqtt_decode", fuzzing::mqtt_decode);
}

#[test]
fn envelope_corpus() {
    replay("envelope", fuzzing::envelope);
}

#[test]
fn event_encode_corpus() {
    replay("event_encode", fuzzing::event_encode);
}

#[test]
fn tracker_corpus() {
    replay("tracker", fuzzing::tracker);
}

#[test]
fn server_corpus() {
    replay("server", fuzzing::server);
}

#[test]
fn relay_corpus() {
    replay("relay", fuzzing::relay);
}

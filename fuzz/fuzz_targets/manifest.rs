//! Manifests: any file content is a list of tiles or an error naming a row.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let m = dir.path().join("manifest.csv");
    std::fs::write(&m, data).expect("write the manifest");
    let _ = chunkcube::ingest::read_manifest(&m);
});

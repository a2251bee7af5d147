//! Cube metadata other tools (or an attacker) wrote: any group `zarr.json` and band
//! `zarr.json` are a cube or an error, never a panic, a loop or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (group, band) = data.split_at(data.len() / 2);
    std::fs::write(dir.path().join("zarr.json"), group).expect("write");
    std::fs::create_dir_all(dir.path().join("red")).expect("mkdir");
    std::fs::write(dir.path().join("red/zarr.json"), band).expect("write");
    if let Some(url) = dir.path().to_str() {
        let _ = chunkcube::Cube::open(url);
    }
});

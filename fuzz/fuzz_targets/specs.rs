//! The small parsers of the command line: chunk specs, byte sizes, `--isel`, times.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = chunkcube::ChunkSpec::parse(s);
        let _ = chunkcube::store::parse_bytes(s);
        let _ = chunkcube::Query::new().isel_spec(s);
        let _ = chunkcube::geo::parse_time(s);
        let _ = chunkcube::geo::parse_time_range(s);
        let _ = chunkcube::geo::CfUnits::parse(s);
        let _ = chunkcube::store::Location::parse(s);
    }
});

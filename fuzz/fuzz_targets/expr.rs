//! The `--expr` language: any bytes are an assignment or an error, never a panic or abort.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = chunkcube::graph::parse_assignment(s);
        let _ = chunkcube::graph::parse_expr(s);
    }
});

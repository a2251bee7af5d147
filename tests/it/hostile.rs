//! Hostile input (issue 16): whatever a user or a crafted file throws at the command line is a
//! one-line error naming the culprit, with exit 1 — never a panic, an abort or a silent
//! misreading.

use crate::common::output::run_one_error;
use crate::common::{fixture_cube_64, s};

fn calc_err(exprs: &[&str]) -> String {
    let cube = fixture_cube_64("hostile-");
    let mut args = vec!["calc", s(cube)];
    for e in exprs {
        args.extend(["--expr", e]);
    }
    args.extend(["--isel", "time=0:1,y=0:4,x=0:4", "--print"]);
    run_one_error(&args)
}

#[test]
fn deep_and_long_expressions_are_errors_not_stack_overflows() {
    let sum = format!("v={}", vec!["nir"; 2000].join("+"));
    let parens = format!("v={}nir{}", "(".repeat(5000), ")".repeat(5000));
    let minus = format!("v={}nir", "-".repeat(5000));
    for e in [&sum, &parens, &minus] {
        let msg = calc_err(&[e]);
        assert!(
            msg.contains("deep") || msg.contains("nests") || msg.contains("bytes long"),
            "{msg}"
        );
        assert!(
            msg.len() < 400,
            "the message quotes a bounded part: {} bytes",
            msg.len()
        );
    }
    // Chained results, each within bounds, that nest past the graph's depth ...
    let deep: Vec<String> = std::iter::once(format!("r0={}", vec!["nir"; 200].join("+")))
        .chain((1..8).map(|i| format!("r{i}=r{}+{}", i - 1, vec!["red"; 199].join("+"))))
        .collect();
    let msg = calc_err(&deep.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("operations deep"), "{msg}");
    // ... or that use each other so often that the graph explodes when walked as a tree.
    let wide: Vec<String> = std::iter::once("r0=nir+red".to_string())
        .chain((1..8).map(|i| format!("r{i}={}", vec![format!("r{}", i - 1); 100].join("+"))))
        .collect();
    let msg = calc_err(&wide.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(msg.contains("expands to"), "{msg}");
}

#[test]
fn a_repeated_result_name_is_refused() {
    let msg = calc_err(&["a=nir", "a=red"]);
    assert!(msg.contains("'a' is already defined by 'a=nir'"), "{msg}");
}

#[test]
fn non_ascii_in_an_expression_is_named_whole() {
    let msg = calc_err(&["v=nir×red"]);
    assert!(msg.contains("'×' (U+00D7)"), "{msg}");
}

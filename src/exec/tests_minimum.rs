//! Property tests of the stated minimum: over random graphs and median-sized cases, the
//! minimum a refusal states is a threshold (accepted at it and above, refused below with the
//! same figure), whatever limit was refused.

use super::plan::{plan_tasks, Demand};
use super::testing::Synthetic;
use super::tests::{case, cases, graph, Case, Kind};
use super::ExecError;
use crate::graph::{Node, Op, ReduceOp};
use crate::store::DType;
use proptest::prelude::*;

/// A case with `y` and `x` (shape, chunks, window and query) `k` times larger: the planner
/// reads no chunk, so large cases cost nothing, and their encoder contexts and stacks reach
/// the sizes where a median's path changes with the limit.
fn scaled((c, k): (Case, u64)) -> Case {
    let mut c = c;
    for i in 1..3 {
        c.shape[i] *= k;
        c.chunks_a[i] *= k;
        c.chunks_b[i] *= k;
        c.query[i] *= k;
        c.window[i] = c.window[i].start * k..c.window[i].end * k;
    }
    c
}

/// A median over a few time steps of chunks from a few kB to a few MB written whole (stored
/// and query chunks alike, edges included): the sizes at which whole stacks fitting a share of
/// the limit need more than spilled ones (the encoder's context outweighs the stacks).
fn median_case() -> impl Strategy<Value = Case> {
    (
        2u64..=6,
        8u64..=11,
        8u64..=11,
        any::<[u64; 4]>(),
        1usize..=3,
        any::<bool>(),
    )
        .prop_map(|(t, ly, lx, r, threads, streams)| {
            let (cy, cx) = ((1 << ly) + r[0] % (1 << ly), (1 << lx) + r[1] % (1 << lx));
            let shape = [t, cy + r[2] % (2 * cy), cx + r[3] % (2 * cx)];
            let chunks = [1, cy, cx];
            Case {
                shape,
                chunks_a: chunks,
                chunks_b: chunks,
                window: shape.map(|n| 0..n),
                query: chunks,
                dtype: DType::U16,
                kind: Kind::MedianOfBand,
                threads,
                headroom: 100,
                streams,
            }
        })
}

/// The case that made the stated minimum lie: a median over two time steps of 200 x 240
/// chunks written to a cube was accepted under 2.8 MiB, refused under 3 MiB (its stacks fit a
/// limit's eighth there, and whole stacks need more than spilled ones), and each refusal
/// stated another minimum.
#[test]
fn a_median_accepted_under_a_limit_is_accepted_under_every_larger_one() {
    let a = Synthetic::new("a", [2, 200, 240], [1, 200, 240], DType::U16, 1, false);
    let node = Node::new(
        Op::Reduce {
            op: ReduceOp::Median,
            axis: 0,
            input: a.node(),
            offset: [0; 3],
        },
        [1, 200, 240],
        [false, true, true],
        DType::F32,
    );
    let d = Demand {
        writing: true,
        strips: true,
        ..Demand::default()
    };
    let plan = |l: u64| plan_tasks(&[&node], [1, 200, 240], l, 2, d);
    let Err(ExecError::MemoryLimit { minimum, .. }) = plan(1 << 20) else {
        panic!("accepted under 1 MiB")
    };
    for l in (minimum..16 << 20).step_by(16 << 10) {
        assert!(
            plan(l).is_ok(),
            "refused at {l} above the minimum {minimum}"
        );
    }
    for l in (64 << 10..minimum).step_by(64 << 10) {
        match plan(l) {
            Err(ExecError::MemoryLimit { minimum: m, .. }) => assert_eq!(m, minimum),
            other => panic!("at {l}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(160), ..ProptestConfig::default() })]

    /// The stated minimum is a threshold, the same whatever limit was refused: the plan is
    /// accepted at it and at every larger limit, refused just below it and at any smaller
    /// limit stating the same figure, and the figure as printed, given back as a limit, is
    /// accepted (medians are drawn half the time: their path depends on the limit).
    #[test]
    fn the_stated_minimum_is_a_threshold(
        c in prop_oneof![
            case(),
            case().prop_flat_map(|c| (Just(c), 2u64..=8)).prop_map(scaled),
            median_case(),
        ],
        median in any::<bool>(),
        flags in any::<[bool; 4]>(),
        below in 0.0f64..1.0,
        above in 0u64..400,
    ) {
        let mut c = c;
        if median {
            c.kind = if flags[3] { Kind::MedianOfBand } else { Kind::Reduce(ReduceOp::Median, 0) };
        }
        let (node, _, _) = graph(&c);
        let nodes = [&node];
        let [writing, remote, held, _] = flags;
        let hold = if held && !writing {
            node.shape.iter().product::<u64>() * node.dtype.size() as u64
        } else {
            0
        };
        let d = Demand { writing, remote: remote && writing, hold, strips: true, ..Demand::default() };
        let threads = c.threads as u64;
        let refusal = |limit: u64| match plan_tasks(&nodes, c.query, limit, threads, d) {
            Ok(p) => Ok(p),
            Err(ExecError::MemoryLimit { minimum, needed, .. }) => Err((minimum, needed)),
            Err(e) => panic!("planner error {e}"),
        };
        let (min, needed) = match refusal(1) {
            Err(r) => r,
            Ok(p) => return Err(TestCaseError::fail(format!("accepted under 1 byte: {p:?}"))),
        };
        prop_assert!(refusal(min).is_ok(), "refused at its own minimum {min}");
        for l in [min + 1, min + min * above / 100, min * 2, min * 16] {
            prop_assert!(refusal(l).is_ok(), "refused at {l} >= minimum {min}");
        }
        for l in [min - 1, ((min as f64) * below) as u64] {
            match refusal(l.max(1)) {
                Ok(p) => prop_assert!(false, "accepted at {l} < minimum {min}: {p:?}"),
                Err((m, text)) => {
                    prop_assert_eq!(m, min, "at {}", l);
                    prop_assert_eq!(&text, &needed);
                }
            }
        }
        // The printed figure ("2.49 MB ..."), given back, is at least the minimum.
        let figure: Vec<&str> = needed.split(' ').take(2).collect();
        let printed = crate::store::parse_bytes(&figure.join(" "));
        prop_assert!(printed.is_some_and(|b| b >= min), "{needed} below {min}");
        prop_assert!(refusal(printed.unwrap()).is_ok());
    }
}

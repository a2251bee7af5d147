//! Band math as users write it (`--expr 'ndvi=(nir-red)/(nir+red)'`): the syntax tree of
//! [`crate::graph::parse_assignment`] built into lazy [`DataArray`]s over a dataset's bands,
//! and [`Calc`], a whole `calc` run planned before anything is computed.

use super::{CubeError, DataArray, Dataset};
use crate::exec::ExecError;
use crate::graph::{parse_assignment, Ast, BinaryOp, ParseError, ReduceOp, UnaryOp};
use crate::store::{DType, DIMS};
use std::collections::HashMap;

/// Build the lazy array of `ast` over the named arrays `env` (bands and earlier results).
pub fn build(
    src: &str,
    ast: &Ast,
    env: &HashMap<String, DataArray>,
) -> Result<DataArray, ParseError> {
    let err = |col: usize, msg: String| ParseError {
        expr: src.into(),
        col: col + 1,
        msg,
    };
    let any = env
        .values()
        .next()
        .ok_or_else(|| err(0, "no bands to compute with".into()))?;
    Ok(match ast {
        Ast::Num(v) => any.scalar(*v),
        Ast::Name(n, at) => env.get(n).cloned().ok_or_else(|| {
            let mut names: Vec<&String> = env.keys().collect();
            names.sort();
            err(
                *at,
                format!(
                    "unknown band '{n}'; available: {}",
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
        Ast::Unary(op, a) => {
            let a = build(src, a, env)?;
            match op {
                UnaryOp::Neg => -&a,
                _ => unary(&a, *op),
            }
        }
        Ast::Binary(op, a, b) => match (&**a, &**b) {
            (x, Ast::Num(v)) => build(src, x, env)?.apply_scalar(*op, *v),
            (Ast::Num(v), y) => {
                let y = build(src, y, env)?;
                y.scalar(*v).apply(*op, &y)
            }
            (x, y) => build(src, x, env)?.apply(*op, &build(src, y, env)?),
        },
        Ast::Call(f, args, at) => {
            let n = args.len();
            let want = |k: usize| {
                if n == k {
                    Ok(())
                } else {
                    Err(err(*at, format!("{f}() takes {k} argument(s), got {n}")))
                }
            };
            let num = |a: &Ast| match a {
                Ast::Num(v) => Ok(*v),
                Ast::Unary(UnaryOp::Neg, b) => match **b {
                    Ast::Num(v) => Ok(-v),
                    _ => Err(err(*at, format!("{f}() needs a number here"))),
                },
                _ => Err(err(*at, format!("{f}() needs a number here"))),
            };
            match f.as_str() {
                "sqrt" | "abs" | "log" | "exp" | "isnull" | "notnull" => {
                    want(1)?;
                    let a = build(src, &args[0], env)?;
                    let op = match f.as_str() {
                        "sqrt" => UnaryOp::Sqrt,
                        "abs" => UnaryOp::Abs,
                        "log" => UnaryOp::Log,
                        "exp" => UnaryOp::Exp,
                        "isnull" => UnaryOp::IsNull,
                        _ => UnaryOp::NotNull,
                    };
                    unary(&a, op)
                }
                "where" => {
                    want(3)?;
                    let c = build(src, &args[0], env)?;
                    let a = build(src, &args[1], env)?;
                    let b = build(src, &args[2], env)?;
                    a.where_(&c, &b)
                }
                "clip" => {
                    want(3)?;
                    build(src, &args[0], env)?.clip(num(&args[1])?, num(&args[2])?)
                }
                "fillna" => {
                    want(2)?;
                    build(src, &args[0], env)?.fillna(num(&args[1])?)
                }
                "minimum" | "maximum" => {
                    want(2)?;
                    let op = if f == "minimum" {
                        BinaryOp::Min
                    } else {
                        BinaryOp::Max
                    };
                    build(src, &args[0], env)?.apply(op, &build(src, &args[1], env)?)
                }
                "float32" => {
                    want(1)?;
                    build(src, &args[0], env)?.astype(DType::F32)
                }
                // Everything computed from it is computed in double precision.
                "float64" => {
                    want(1)?;
                    build(src, &args[0], env)?.astype(DType::F64)
                }
                r => match ReduceOp::parse(r) {
                    Some(op) => {
                        want(2)?;
                        let Ast::Name(dim, dat) = &args[1] else {
                            return Err(err(*at, format!("{r}(x, DIM): DIM must be time, y or x")));
                        };
                        let Some(i) = crate::store::dim_index(dim) else {
                            return Err(err(
                                *dat,
                                format!(
                                    "unknown dimension '{dim}' (dimensions are {})",
                                    crate::store::DIM_NAMES
                                ),
                            ));
                        };
                        build(src, &args[0], env)?.reduce(op, DIMS[i])
                    }
                    None => {
                        return Err(err(
                            *at,
                            format!(
                                "unknown function '{f}'; functions are {}",
                                crate::graph::FUNCTIONS
                            ),
                        ))
                    }
                },
            }
        }
    })
}

fn unary(a: &DataArray, op: UnaryOp) -> DataArray {
    match op {
        UnaryOp::Abs => a.abs(),
        UnaryOp::Sqrt => a.sqrt(),
        UnaryOp::IsNull => a.isnull(),
        _ => a.unary_op(op),
    }
}

/// One `NAME=EXPRESSION` of a calc.
#[derive(Debug, Clone)]
struct Assignment {
    name: String,
    ast: Ast,
    src: String,
}

/// Where a calc's results go, for the memory check made before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalcOutput {
    /// Written to a cube chunk by chunk.
    Cube,
    /// Computed into memory, one result at a time (`--print`).
    Memory,
    /// Only the tasks, nothing held or written (what `--explain` and `--graph` describe).
    Tasks,
}

/// A `calc` run: assignments evaluated in order (later ones may use earlier names), and an
/// optional reduction applied to every result. A result that a later expression reads is
/// computed once and persisted (in memory within the limit, spilled past it).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use chunkcube::cube::Calc;
/// let calc = Calc::parse(&["ndvi=(nir-red)/(nir+red)", "hi=ndvi>0.5"], Some("mean:time"))?;
/// assert_eq!(calc.names(), vec!["ndvi", "hi"]);
/// assert_eq!(calc.reused(), vec![true, false]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Calc {
    assignments: Vec<Assignment>,
    reduce: Option<(ReduceOp, &'static str)>,
}

impl Calc {
    /// Parse `NAME=EXPRESSION`s and an optional `OP:DIM` reduction (`mean:time`).
    pub fn parse<S: AsRef<str>>(exprs: &[S], reduce: Option<&str>) -> Result<Calc, CubeError> {
        let assignments = exprs
            .iter()
            .map(|e| {
                let src = e.as_ref();
                parse_assignment(src).map(|(name, ast)| Assignment {
                    name,
                    ast,
                    src: src.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in assignments.iter().enumerate() {
            if let Some(first) = assignments[..i].iter().find(|b| b.name == a.name) {
                return Err(CubeError::BadArg {
                    what: "--expr".into(),
                    value: a.src.clone(),
                    msg: format!(
                        "'{}' is already defined by '{}'; give each result its own name",
                        a.name, first.src
                    ),
                });
            }
        }
        if assignments.is_empty() {
            return Err(CubeError::BadArg {
                what: "--expr".into(),
                value: String::new(),
                msg: "give at least one NAME=EXPRESSION".into(),
            });
        }
        let reduce = reduce.map(parse_reduce).transpose()?;
        Ok(Calc {
            assignments,
            reduce,
        })
    }

    /// The result names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.assignments.iter().map(|a| a.name.as_str()).collect()
    }

    /// For each result, whether a later expression reads it (then it is computed once).
    pub fn reused(&self) -> Vec<bool> {
        let a = &self.assignments;
        (0..a.len())
            .map(|i| a[i + 1..].iter().any(|l| l.ast.mentions(&a[i].name)))
            .collect()
    }

    /// The reduction applied to every result, if any.
    pub fn reduction(&self) -> Option<(ReduceOp, &'static str)> {
        self.reduce
    }

    /// The results as lazy arrays over the variables of `ds`, nothing computed or persisted
    /// (what `--explain` and `--graph` describe). An expression that cannot be applied (an
    /// unknown band, mismatched grids) is an error naming it.
    pub fn lazy(&self, ds: &Dataset) -> Result<Dataset, CubeError> {
        self.results(ds, false)
    }

    /// Check, before anything runs, that every result fits the session's memory limit as it
    /// will be computed (see [`CalcOutput`]); the error states the smallest limit that works.
    pub fn check_memory(&self, ds: &Dataset, output: CalcOutput) -> Result<(), CubeError> {
        let lazy = self.lazy(ds)?;
        let Some(first) = lazy.vars().next() else {
            return Ok(());
        };
        let nodes: Vec<_> = lazy.vars().map(|d| d.node()).collect();
        // Printed results are computed into memory one at a time.
        let hold = match output {
            CalcOutput::Tasks | CalcOutput::Cube => 0,
            CalcOutput::Memory => nodes
                .iter()
                .map(|n| n.shape.iter().product::<u64>() * n.dtype.size() as u64)
                .max()
                .unwrap_or(0),
        };
        // A persisted result holds memory beside the tasks: plan room for it.
        let persisting = self.reused().into_iter().any(|r| r);
        first.session().check_memory(
            &nodes,
            first.chunks3(),
            // Described runs are planned as they would be written.
            output != CalcOutput::Memory,
            persisting,
            hold,
        )?;
        Ok(())
    }

    /// The results over `ds`, those reused by later expressions computed once and persisted.
    pub fn run(&self, ds: &Dataset) -> Result<Dataset, CubeError> {
        self.results(ds, true)
    }

    fn results(&self, ds: &Dataset, persist: bool) -> Result<Dataset, CubeError> {
        let mut env: HashMap<String, DataArray> = ds
            .vars()
            .map(|d| (d.name().to_string(), d.clone()))
            .collect();
        let reused = self.reused();
        let mut out = Dataset::new();
        for (a, reused) in self.assignments.iter().zip(reused) {
            let mut da = build(&a.src, &a.ast, &env)?.rename(&a.name);
            // Earlier results are inlined (unless persisted): the whole chain must stay
            // shallow enough for the recursive planner and evaluator.
            let (depth, size) = (da.node().depth(), da.node().expanded_size());
            if size > MAX_GRAPH_SIZE {
                return Err(CubeError::BadArg {
                    what: "--expr".into(),
                    value: a.src.clone(),
                    msg: format!(
                        "with the results it uses, '{}' expands to {size} operations (at most {MAX_GRAPH_SIZE}); use each result fewer times",
                        a.name
                    ),
                });
            }
            if depth > MAX_GRAPH_DEPTH {
                return Err(CubeError::BadArg {
                    what: "--expr".into(),
                    value: a.src.clone(),
                    msg: format!(
                        "with the results it uses, '{}' is {depth} operations deep (at most {MAX_GRAPH_DEPTH})",
                        a.name
                    ),
                });
            }
            if let Some(m) = da.node().first_error() {
                return Err(ExecError::Invalid(m).into());
            }
            if reused && persist {
                da.persist()?;
            }
            env.insert(a.name.clone(), da.clone());
            out.insert(&a.name, da);
        }
        if let Some((op, dim)) = self.reduce {
            let mut reduced = Dataset::new();
            for d in out.vars() {
                let r = d.reduce(op, dim);
                if let Some(m) = r.node().first_error() {
                    return Err(ExecError::Invalid(m).into());
                }
                reduced.insert(d.name(), r);
            }
            out = reduced;
        }
        Ok(out)
    }
}

/// The deepest graph `calc` builds from its expressions (results reusing earlier ones nest).
pub(crate) const MAX_GRAPH_DEPTH: usize = 1024;

/// The most operations a `calc` graph may expand to, shared sub-graphs counted at every use:
/// planning and describing a graph walk it as a tree.
pub(crate) const MAX_GRAPH_SIZE: u64 = 100_000;

/// Parse `OP:DIM` (`mean:time`).
fn parse_reduce(r: &str) -> Result<(ReduceOp, &'static str), CubeError> {
    let bad = |msg: String| CubeError::BadArg {
        what: "--reduce".into(),
        value: r.to_string(),
        msg,
    };
    let (op, dim) = r
        .split_once(':')
        .ok_or_else(|| bad("expected OP:DIM, e.g. mean:time".into()))?;
    let op = ReduceOp::parse(op).ok_or_else(|| {
        bad(format!(
            "unknown operation '{op}' (mean, median, min, max, sum, count, std)"
        ))
    })?;
    let dim = crate::store::dim_index(dim)
        .map(|i| &DIMS[i])
        .ok_or_else(|| {
            bad(format!(
                "unknown dimension '{dim}' ({})",
                crate::store::DIM_NAMES
            ))
        })?;
    Ok((op, dim))
}

//! The lazy graph: expression [`Node`]s, the expression parser of `--expr`, the mapping of
//! output chunks to the stored chunks they read, and Graphviz pictures of the task graph.

mod dot;
mod node;
mod parse;
mod plan;

pub use dot::to_dot;
pub use node::{BinaryOp, Node, Op, ReduceOp, UnaryOp};
pub use parse::{build, parse_assignment, parse_expr, Ast, ParseError};
pub use plan::{count_tasks, input_region, layers, source_chunks, Layer};

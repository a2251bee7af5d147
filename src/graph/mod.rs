//! The lazy graph: expression [`Node`]s, the expression parser of `--expr`, the mapping of
//! output chunks to the stored chunks they read, and Graphviz pictures of the task graph.

mod dot;
mod node;
mod parse;
mod plan;
mod source;

pub use dot::to_dot;
pub use node::{BinaryOp, Node, Op, ReduceOp, UnaryOp};
pub use parse::{
    parse_assignment, parse_expr, Ast, ParseError, DEFAULT_NAME, FUNCTIONS, MAX_DEPTH,
    MAX_EXPR_LEN, MAX_NESTING, OPERATORS,
};
pub use plan::{
    count_tasks, group_by_source, input_region, layers, regions, source_chunks, ChunksBySource,
    Layer,
};
pub use source::{
    chunk_bytes, chunk_pieces, next_uid, BoxError, ChunkPiece, ChunkSource, ReadCost, ReadError,
};

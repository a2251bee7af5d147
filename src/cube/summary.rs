//! The chunk table of a lazy array, as Dask shows it: bytes, shape, count, type.

use super::DataArray;
use crate::store::{format_bytes, grid_shape};

/// The numbers of the chunk table.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChunkSummary {
    /// Dimension names.
    pub dims: Vec<String>,
    /// Array shape.
    pub shape: Vec<u64>,
    /// Chunk shape.
    pub chunk_shape: Vec<u64>,
    /// Bytes of the whole array.
    pub bytes: u64,
    /// Bytes of one (full) chunk.
    pub chunk_bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Number of tasks in the graph.
    pub tasks: u64,
    /// Element type.
    pub dtype: String,
}

impl ChunkSummary {
    /// The table of an array.
    pub fn of(da: &DataArray) -> ChunkSummary {
        let s3 = da.shape3();
        let c3 = da.chunks3();
        let present: Vec<usize> = (0..3).filter(|i| da.node().present[*i]).collect();
        let elem = da.dtype().size() as u64;
        let g = grid_shape(s3, c3);
        let chunks = g.iter().product::<u64>();
        ChunkSummary {
            dims: present
                .iter()
                .map(|i| crate::store::DIMS[*i].to_string())
                .collect(),
            shape: present.iter().map(|i| s3[*i]).collect(),
            chunk_shape: present.iter().map(|i| c3[*i]).collect(),
            bytes: s3.iter().product::<u64>() * elem,
            chunk_bytes: c3.iter().product::<u64>() * elem,
            chunks,
            tasks: crate::graph::count_tasks(da.node(), c3),
            dtype: da.dtype().to_string(),
        }
    }
}

impl std::fmt::Display for ChunkSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tup = |v: &[u64]| {
            format!(
                "({})",
                v.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        writeln!(f, "{:<8} {:>22} {:>22}", "", "Array", "Chunk")?;
        writeln!(
            f,
            "{:<8} {:>22} {:>22}",
            "Bytes",
            format_bytes(self.bytes),
            format_bytes(self.chunk_bytes)
        )?;
        writeln!(
            f,
            "{:<8} {:>22} {:>22}",
            "Shape",
            tup(&self.shape),
            tup(&self.chunk_shape)
        )?;
        writeln!(
            f,
            "{:<8} {:>22} {:>22}",
            "Count",
            format!("{} Tasks", self.tasks),
            format!("{} Chunks", self.chunks)
        )?;
        writeln!(f, "{:<8} {:>22} {:>22}", "Type", self.dtype, "ndarray")
    }
}

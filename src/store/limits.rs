//! Caps on sizes read from untrusted metadata (a crafted `zarr.json` must not make the tool
//! allocate gigabytes or loop over an absurd chunk grid).

/// Largest decoded chunk accepted from metadata: reading one allocates it whole.
pub const MAX_CHUNK_BYTES: u64 = 2 << 30;
/// Largest array accepted from metadata (elements): beyond any Earth-observation cube, and
/// far from overflowing the index arithmetic.
pub const MAX_ARRAY_ELEMENTS: u64 = 1 << 52;
/// Longest coordinate accepted from metadata (it is read whole at open).
pub const MAX_COORD_LEN: u64 = 1 << 31;
/// Longest CRS WKT accepted (real ones are a few kB).
pub const MAX_WKT_BYTES: usize = 1 << 16;

/// Caps on sizes read from untrusted metadata, so a crafted `zarr.json` cannot make the
/// tool allocate gigabytes or loop over an absurd chunk grid.
pub(crate) fn check_sizes(shape: &[u64], chunks: &[u64], item: u64) -> Result<(), String> {
    shape
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_ARRAY_ELEMENTS)
        .ok_or_else(|| format!("shape {shape:?} is larger than {MAX_ARRAY_ELEMENTS} elements"))?;
    chunks
        .iter()
        .try_fold(item, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_CHUNK_BYTES)
        .ok_or_else(|| {
            format!(
                "chunk_shape {chunks:?} decodes to more than {} GiB per chunk",
                MAX_CHUNK_BYTES >> 30
            )
        })?;
    let grid: Vec<u64> = shape
        .iter()
        .zip(chunks)
        .map(|(s, c)| s.div_ceil(*c))
        .collect();
    grid.iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= super::manifest::MAX_GRID_CHUNKS)
        .ok_or_else(|| {
            format!(
                "a chunk grid of {grid:?} is more than {} chunks",
                super::manifest::MAX_GRID_CHUNKS
            )
        })?;
    Ok(())
}

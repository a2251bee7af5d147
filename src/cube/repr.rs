//! Values as text with their coordinates, the way xarray prints a `DataArray`: one table per
//! time step, x coordinates across, y coordinates down. Large arrays are summarised as numpy
//! does (more than [`THRESHOLD`] values: the first and last [`EDGE_ITEMS`] along each long
//! axis, `...` between), and only the values shown are computed.

use super::{CubeError, DataArray};
use crate::store::{DType, Element, Values, DIMS};
use std::io::Write;
use std::ops::Range;

/// Arrays with more values than this are summarised (numpy's `threshold`).
pub const THRESHOLD: u64 = 1000;
/// Values shown at each end of a summarised axis (numpy's `edgeitems`).
pub const EDGE_ITEMS: u64 = 3;

/// One axis as printed: the index ranges shown (a gap between two of them is `...`).
fn shown(n: u64, summarise: bool) -> Vec<Range<u64>> {
    if summarise && n > 2 * EDGE_ITEMS {
        vec![0..EDGE_ITEMS, n - EDGE_ITEMS..n]
    } else {
        std::iter::once(0..n).collect()
    }
}

/// A printed axis position: an index, or the `...` of a summarised gap.
#[derive(Clone, Copy)]
enum Pos {
    At(u64),
    Gap,
}

fn positions(parts: &[Range<u64>]) -> Vec<Pos> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(Pos::Gap);
        }
        out.extend(p.clone().map(Pos::At));
    }
    out
}

/// A number as printed, exactly: the shortest text that reads back as the same value of the
/// array's type (float32 values as float32), NaN as `nan`.
fn num(v: f64, dtype: DType) -> String {
    if v.is_nan() {
        "nan".into()
    } else if dtype == DType::F32 {
        format!("{}", v as f32)
    } else {
        format!("{v}")
    }
}

/// A coordinate as printed (shortest exact form).
fn coord(v: f64) -> String {
    format!("{v}")
}

impl DataArray {
    /// Write this array's values with coordinates to `out`, summarised when it has more than
    /// [`THRESHOLD`] values unless `all`. Only the values shown are computed (a summarised
    /// print of a whole cube reads the chunks at its corners).
    pub fn print_values(&self, out: &mut dyn Write, all: bool) -> Result<(), CubeError> {
        let shape = self.shape3();
        let summarise = !all && shape.iter().product::<u64>() > THRESHOLD;
        let parts: [Vec<Range<u64>>; 3] = std::array::from_fn(|i| shown(shape[i], summarise));
        // The shown values, gathered block by block into a dense [t][y][x] grid of f64.
        let dims: [usize; 3] =
            std::array::from_fn(|i| parts[i].iter().map(|r| (r.end - r.start) as usize).sum());
        let mut grid = vec![0f64; dims[0] * dims[1] * dims[2]];
        let offsets = |i: usize| -> Vec<usize> {
            let mut acc = 0;
            parts[i]
                .iter()
                .map(|r| {
                    let o = acc;
                    acc += (r.end - r.start) as usize;
                    o
                })
                .collect()
        };
        let off: [Vec<usize>; 3] = std::array::from_fn(offsets);
        for (ti, tr) in parts[0].iter().enumerate() {
            for (yi, yr) in parts[1].iter().enumerate() {
                for (xi, xr) in parts[2].iter().enumerate() {
                    let ranges = [tr.clone(), yr.clone(), xr.clone()];
                    let sel: Vec<(&str, Range<u64>)> = (0..3)
                        .filter(|i| self.node.present[*i] && ranges[*i] != (0..shape[*i]))
                        .map(|i| (DIMS[i], ranges[i].clone()))
                        .collect();
                    let v = if sel.is_empty() {
                        self.compute()?
                    } else {
                        self.isel(&sel)?.compute()?
                    };
                    let block = to_f64(&v);
                    let (bt, by, bx) = (
                        (tr.end - tr.start) as usize,
                        (yr.end - yr.start) as usize,
                        (xr.end - xr.start) as usize,
                    );
                    for t in 0..bt {
                        for y in 0..by {
                            for x in 0..bx {
                                let at = ((off[0][ti] + t) * dims[1] + off[1][yi] + y) * dims[2]
                                    + off[2][xi]
                                    + x;
                                grid[at] = block[(t * by + y) * bx + x];
                            }
                        }
                    }
                }
            }
        }
        self.write_grid(out, &parts, &grid, dims)
            .map_err(CubeError::Output)
    }

    fn write_grid(
        &self,
        out: &mut dyn Write,
        parts: &[Vec<Range<u64>>; 3],
        grid: &[f64],
        dims: [usize; 3],
    ) -> std::io::Result<()> {
        let header: Vec<String> = self
            .dims()
            .iter()
            .zip(self.shape())
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        let nodata = match self.nodata() {
            Some(v) => format!(", nodata {}", num(v, self.dtype())),
            None => String::new(),
        };
        writeln!(
            out,
            "<chunkcube.DataArray '{}' ({})> {}{nodata}",
            self.name(),
            header.join(", "),
            self.dtype()
        )?;
        let dtype = self.dtype();
        let xs = self.geobox.x_coords();
        let ys = self.geobox.y_coords();
        let (tpos, ypos, xpos) = (
            positions(&parts[0]),
            positions(&parts[1]),
            positions(&parts[2]),
        );
        // Dense indices of printed positions.
        let dense = |pos: &[Pos]| -> Vec<Option<usize>> {
            let mut k = 0;
            pos.iter()
                .map(|p| match p {
                    Pos::At(_) => {
                        k += 1;
                        Some(k - 1)
                    }
                    Pos::Gap => None,
                })
                .collect()
        };
        let (td, yd, xd) = (dense(&tpos), dense(&ypos), dense(&xpos));
        // One column width for the whole array, as numpy does.
        let mut cells: Vec<String> = grid.iter().map(|v| num(*v, dtype)).collect();
        cells.extend(xpos.iter().filter_map(|p| match p {
            Pos::At(i) => xs.get(*i as usize).map(|c| coord(*c)),
            Pos::Gap => None,
        }));
        let w = cells.iter().map(|c| c.len()).max().unwrap_or(1).max(3);
        let ylabels: Vec<String> = ypos
            .iter()
            .map(|p| match p {
                Pos::At(i) => ys.get(*i as usize).map(|c| coord(*c)).unwrap_or_default(),
                Pos::Gap => "...".into(),
            })
            .collect();
        let yw = ylabels
            .iter()
            .map(|l| l.len())
            .max()
            .unwrap_or(0)
            .max("y \\ x".len());
        for (tp, t) in tpos.iter().zip(&td) {
            let Some(t) = t else {
                writeln!(out, "...")?;
                continue;
            };
            if let Pos::At(ti) = tp {
                match self.times.get(*ti as usize) {
                    Some(t) => writeln!(out, "time = {t}")?,
                    None if !self.node.present[0] => match self.time_span {
                        Some([a, b]) => writeln!(out, "time reduced (from {a} to {b})")?,
                        None => writeln!(out, "time reduced")?,
                    },
                    None => {}
                }
            }
            let mut line = format!("{:>yw$}", "y \\ x");
            for p in &xpos {
                line.push_str("  ");
                match p {
                    Pos::At(i) => {
                        let c = xs.get(*i as usize).map(|c| coord(*c)).unwrap_or_default();
                        line.push_str(&format!("{c:>w$}"));
                    }
                    Pos::Gap => line.push_str(&format!("{:>w$}", "...")),
                }
            }
            writeln!(out, "{line}")?;
            for (label, y) in ylabels.iter().zip(&yd) {
                let mut line = format!("{label:>yw$}");
                for x in &xd {
                    line.push_str("  ");
                    match (y, x) {
                        (Some(y), Some(x)) => {
                            let v = grid[(t * dims[1] + y) * dims[2] + x];
                            line.push_str(&format!("{:>w$}", num(v, dtype)));
                        }
                        _ => line.push_str(&format!("{:>w$}", "...")),
                    }
                }
                writeln!(out, "{}", line.trim_end())?;
            }
        }
        Ok(())
    }
}

/// Values as a flat f64 vector in row-major order (raw values: nodata stays as stored).
fn to_f64(v: &Values) -> Vec<f64> {
    crate::on_values!(v, a => a.iter().map(|x| Element::to_f64(*x)).collect())
}

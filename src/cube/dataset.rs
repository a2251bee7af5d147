//! [`Dataset`]: named variables on one grid, as an xarray Dataset; written as a new cube chunk
//! by chunk.

use super::{CubeError, DataArray};
use crate::exec::job::WriteReport;
use crate::geo::Time;
use crate::graph::Node;
use crate::store::job::Shard;
use std::sync::Arc;

/// Named variables on one grid, as an xarray Dataset.
#[derive(Clone, Default)]
pub struct Dataset {
    vars: Vec<(String, DataArray)>,
}

impl Dataset {
    /// Empty dataset.
    pub fn new() -> Dataset {
        Dataset::default()
    }
    /// Add or replace a variable.
    pub fn insert(&mut self, name: &str, da: DataArray) {
        let da = da.rename(name);
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = da,
            None => self.vars.push((name.to_string(), da)),
        }
    }
    /// A variable.
    pub fn get(&self, name: &str) -> Option<&DataArray> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }
    /// A variable, mutably.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut DataArray> {
        self.vars
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d)
    }
    /// Variable names in order.
    pub fn names(&self) -> Vec<String> {
        self.vars.iter().map(|(n, _)| n.clone()).collect()
    }
    /// Variables in order.
    pub fn vars(&self) -> impl Iterator<Item = &DataArray> {
        self.vars.iter().map(|(_, d)| d)
    }
    /// Load every variable (`Dataset.load()`).
    pub fn load(&mut self) -> Result<(), CubeError> {
        for (_, d) in &mut self.vars {
            d.load()?;
        }
        Ok(())
    }
    /// Check, before anything runs, that writing this dataset (to a local cube, in its
    /// chunks) fits the session's memory limit: the same plan `calc --out` checks, so a copy
    /// is refused up front, with the smallest limit that works, rather than mid-write.
    pub fn check_write_memory(&self) -> Result<(), CubeError> {
        let Some((_, first)) = self.vars.first() else {
            return Ok(());
        };
        let nodes: Vec<&Arc<Node>> = self.vars().map(|d| d.node()).collect();
        first
            .session()
            .check_memory(&nodes, first.chunks3(), true, false, 0)?;
        Ok(())
    }

    /// Write all variables as a new cube, chunk by chunk.
    pub fn to_zarr(&self, url: &str, overwrite: bool) -> Result<(), CubeError> {
        self.write(url, overwrite, None).map(|_| ())
    }

    /// Write one shard of this dataset's cube: the part of worker `shard.index` of
    /// `shard.count` workers that each run this same computation against `url` (any
    /// process, any machine). Output chunks are split deterministically and balanced by
    /// bytes; a re-run keeps the chunks an earlier run of the shard wrote whole. The cube
    /// opens only after [`crate::commit`] (`chunkcube commit`) once every shard finished;
    /// workers of a different computation are refused.
    pub fn to_zarr_shard(&self, url: &str, shard: Shard) -> Result<WriteReport, CubeError> {
        self.write(url, false, Some(shard))
    }

    /// What writing this dataset as a job of `count` workers (`to_zarr_shard`) will do, per
    /// shard and in total, without reading a chunk (`chunkcube plan calc … --shards N`).
    pub fn plan_job(&self, count: u32) -> Result<crate::store::jobplan::JobPlan, CubeError> {
        let (outs, _, _, first) = self.outputs()?;
        Ok(first.session.plan_job(&outs, first.chunks3(), count))
    }

    /// The fingerprint of writing this dataset (what every worker of one job shares).
    pub fn plan_fingerprint(&self) -> Result<String, CubeError> {
        let (outs, times, _, first) = self.outputs()?;
        Ok(crate::exec::job::plan_fingerprint(
            &outs,
            first.chunks3(),
            &times,
            &first.geobox,
        ))
    }

    /// The outputs, the time steps and their CF bounds (steps that stand for a reduced range).
    #[allow(clippy::type_complexity)]
    fn outputs(
        &self,
    ) -> Result<
        (
            Vec<(String, Arc<Node>)>,
            Vec<Time>,
            Option<Vec<[Time; 2]>>,
            &DataArray,
        ),
        CubeError,
    > {
        let Some((_, first)) = self.vars.first() else {
            return Err(CubeError::Selection {
                what: "to_zarr".into(),
                msg: "the dataset is empty".into(),
            });
        };
        let outs: Vec<(String, Arc<Node>)> = self
            .vars
            .iter()
            .map(|(n, d)| (n.clone(), d.node.clone()))
            .collect();
        // A reduced time axis is one step labelled with its first date, its CF bounds the
        // range reduced; steps read with bounds (from a reduced cube) keep theirs.
        let (times, bounds) = match (first.times.is_empty(), first.time_span) {
            (false, _) => (first.times.clone(), first.time_bounds.clone()),
            (true, Some(span)) => (vec![span[0]], Some(vec![span])),
            (true, None) => (vec![Time::EPOCH], None),
        };
        Ok((outs, times, bounds, first))
    }

    fn write(
        &self,
        url: &str,
        overwrite: bool,
        shard: Option<Shard>,
    ) -> Result<WriteReport, CubeError> {
        let (outs, times, bounds, first) = self.outputs()?;
        Ok(first.session.write_cube_shard(
            &outs,
            first.chunks3(),
            &times,
            bounds.as_deref(),
            &first.geobox,
            url,
            overwrite,
            shard,
        )?)
    }
}

impl std::ops::Index<&str> for Dataset {
    type Output = DataArray;
    fn index(&self, name: &str) -> &DataArray {
        match self.get(name) {
            Some(d) => d,
            None => panic!(
                "no variable '{name}' in the dataset; it has {:?}",
                self.names()
            ),
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some((_, first)) = self.vars.first() else {
            return writeln!(f, "<chunkcube.Dataset> (empty)");
        };
        let dims: Vec<String> = first
            .dims()
            .iter()
            .zip(first.shape())
            .map(|(d, n)| format!("{d}: {n}"))
            .collect();
        writeln!(f, "<chunkcube.Dataset>\nDimensions:  ({})", dims.join(", "))?;
        writeln!(f, "Data variables:")?;
        for (n, d) in &self.vars {
            let state = if d.is_lazy() {
                let c = d.chunks3();
                format!("lazy<chunksize=({}, {}, {})>", c[0], c[1], c[2])
            } else {
                "loaded".to_string()
            };
            writeln!(
                f,
                "    {n:<8} ({}) {} {state}",
                d.dims().join(", "),
                d.dtype()
            )?;
        }
        writeln!(
            f,
            "Attributes:\n    crs: {}",
            first
                .geobox
                .epsg
                .map(|e| format!("EPSG:{e}"))
                .unwrap_or_default()
        )
    }
}

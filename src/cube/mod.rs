//! The lazy cube: [`Cube::open`] reads metadata only; a [`Query`] (measurements, lon/lat or
//! native box, index ranges, time range, chunks) gives a [`Dataset`] of [`DataArray`]s — eager
//! without chunks, lazy with them, as `dc.load(..., dask_chunks=...)`.

mod band;
mod dataarray;
mod dataset;
mod expr;
mod info;
mod query;
mod repr;
mod summary;

pub use band::{BandReader, ChunkBytes};
pub use dataarray::DataArray;
pub use dataset::Dataset;
pub use expr::{build, Calc, CalcOutput};
pub use info::{BandInfo, CubeInfo};
pub use query::Query;
pub use repr::{EDGE_ITEMS, THRESHOLD};
pub use summary::ChunkSummary;

use crate::exec::{ExecConfig, ExecError, Session};
use crate::store::layout::{read_cube_meta, CubeMeta};
use crate::store::replace::Generation;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Errors of opening and querying cubes.
#[derive(Debug, thiserror::Error)]
pub enum CubeError {
    /// Store or metadata problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A measurement the cube does not have.
    #[error("unknown measurement '{name}'; the cube has: {available}")]
    UnknownBand {
        /// Requested name.
        name: String,
        /// Comma-separated bands.
        available: String,
    },
    /// A selection that selects nothing or is malformed.
    #[error("invalid selection {what}: {msg}")]
    Selection {
        /// The flag or argument (`--lon`, `isel y=…`).
        what: String,
        /// Why.
        msg: String,
    },
    /// A bad argument (`--reduce`, `--expr`).
    #[error("invalid {what} '{value}': {msg}")]
    BadArg {
        /// The flag.
        what: String,
        /// The value given.
        value: String,
        /// What is wrong.
        msg: String,
    },
    /// An expression that does not parse or does not apply to the bands.
    #[error(transparent)]
    Expr(#[from] crate::graph::ParseError),
    /// A problem while computing (a chunk that cannot be read, a memory limit too small…).
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// The cube was overwritten while it was being read: what was read may mix two cubes.
    #[error("{0} was replaced while reading (its write_id changed); re-run")]
    Replaced(String),
    /// Writing printed values failed (a closed pipe: the reader went away).
    #[error("writing the output: {0}")]
    Output(#[source] std::io::Error),
}

/// An open cube: metadata, coordinates and one reader per band.
#[derive(Clone)]
pub struct Cube {
    store: Store,
    meta: Arc<CubeMeta>,
    bands: BTreeMap<String, Arc<BandReader>>,
    session: Arc<Session>,
    generation: Arc<Generation>,
}

impl std::fmt::Debug for Cube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Cube({}, bands {:?})",
            self.store.url(),
            self.meta.band_names()
        )
    }
}

impl Cube {
    /// Open a cube (local path or `s3://bucket/prefix`), reading only metadata and
    /// coordinates, with a default execution session.
    pub fn open(url: &str) -> Result<Cube, CubeError> {
        Cube::open_with(url, ExecConfig::default())
    }

    /// Open with an execution configuration (threads, memory limit, …).
    pub fn open_with(url: &str, config: ExecConfig) -> Result<Cube, CubeError> {
        let session = Session::new(config)?;
        Cube::open_in(url, session)
    }

    /// Open within an existing session (sharing its cache, budget and stats). An open racing
    /// a replacement of the cube (another run's `--overwrite`) is retried, so the metadata,
    /// coordinates and band readers all come from one commit.
    pub fn open_in(url: &str, session: Arc<Session>) -> Result<Cube, CubeError> {
        for attempt in 0..5 {
            let store = match Store::open_with(url, false, &session.config().store) {
                // A remote root switched to a new data prefix while the old one was removed.
                Err(StoreError::NotACube(_)) if attempt < 4 => continue,
                r => r?,
            };
            let before = store.opened_identity()?;
            let generation = Generation::new(&store, before.clone());
            let opened = Cube::read(store, generation.clone(), session.clone());
            if !generation.check()? {
                return opened;
            }
        }
        Err(CubeError::Replaced(url.to_string()))
    }

    fn read(
        store: Store,
        generation: Arc<Generation>,
        session: Arc<Session>,
    ) -> Result<Cube, CubeError> {
        let meta = read_cube_meta(&store)?;
        let mut bands = BTreeMap::new();
        for b in &meta.bands {
            bands.insert(
                b.name.clone(),
                BandReader::open_as_of(&store, b.clone(), generation.clone())?,
            );
        }
        Ok(Cube {
            store,
            meta: Arc::new(meta),
            bands,
            session,
            generation,
        })
    }

    /// The cube's metadata.
    pub fn meta(&self) -> &CubeMeta {
        &self.meta
    }
    /// Check that the cube is still the one opened: its commit (root metadata's `write_id`
    /// and data prefix) unchanged. Call after reading: a replacement of this cube racing the
    /// read (locally the directory is exchanged) could otherwise hand back chunks of two cubes.
    pub fn check_unchanged(&self) -> Result<(), CubeError> {
        if self.generation.check()? {
            return Err(CubeError::Replaced(self.generation.url().to_string()));
        }
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// The execution session.
    pub fn session(&self) -> &Arc<Session> {
        &self.session
    }
    /// Band names.
    pub fn band_names(&self) -> Vec<String> {
        self.meta.band_names()
    }
    /// A band's reader.
    pub fn band(&self, name: &str) -> Result<&Arc<BandReader>, CubeError> {
        self.bands.get(name).ok_or_else(|| {
            let mut available = self.band_names().join(", ");
            // An array the cube skipped: say why it is not a band.
            if let Some((_, dims)) = self.meta.skipped.iter().find(|(n, _)| n == name) {
                available += &format!(
                    " ('{name}' has dimensions ({}); chunkcube reads {} in a cube of them)",
                    dims.join(", "),
                    crate::store::layout::SUPPORTED_DIMS
                );
            }
            CubeError::UnknownBand {
                name: name.to_string(),
                available,
            }
        })
    }

    /// Refuse to write a result at `out` when that would overwrite or nest inside this cube
    /// (or this cube inside it): checked before anything is computed or written.
    pub fn check_output(&self, out: &str) -> Result<(), CubeError> {
        let target = crate::store::Location::parse(out)?;
        if target.overlaps(self.store.location()) {
            return Err(CubeError::BadArg {
                what: "--out".into(),
                value: out.to_string(),
                msg: format!(
                    "is, contains or lies inside the input cube {}; write the result somewhere else",
                    self.store.url()
                ),
            });
        }
        Ok(())
    }

    /// Run a query: lazy when it has chunks, else loaded at once.
    pub fn load(&self, q: &Query) -> Result<Dataset, CubeError> {
        query::run(self, q)
    }
}

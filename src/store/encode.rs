//! Writing one chunk as a stream of rows, encoded as it arrives (bytes → zstd → crc32c, the
//! layout every result array has). A task that produces its output chunk strip by strip never
//! holds the whole chunk, decoded or encoded: local cubes receive the compressed bytes in a
//! temporary file renamed into place at the end; object stores receive one PUT of the
//! compressed bytes.

use super::layout::Codecs;
use super::{Element, Location, Store, StoreError};
use std::io::Write;
use std::path::PathBuf;
use zstd::zstd_safe::{CCtx, CParameter, InBuffer, OutBuffer};

/// The bytes a [`ChunkWriter`] holds for a chunk of `chunk_bytes` decoded bytes, besides the
/// encoded value itself when the store is not local: the encoder's context (see
/// [`encoder_bytes`]) and the output buffer.
pub fn writer_bytes(chunk_bytes: u64) -> u64 {
    encoder_bytes(chunk_bytes) + CCtx::out_size() as u64
}

/// What a zstd encoder at the results' level (3) holds for a chunk of `chunk_bytes`: its
/// window, match tables and buffers, measured once per size class from a real context (zstd
/// sizes them from the level and the pledged size alone).
pub fn encoder_bytes(chunk_bytes: u64) -> u64 {
    static MEASURED: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());
    // zstd's parameters change at powers of two of the source size.
    let class = chunk_bytes.max(1).next_power_of_two();
    if let Some(&(_, b)) = MEASURED
        .lock()
        .ok()
        .and_then(|m| m.iter().find(|(c, _)| *c == class).copied())
        .as_ref()
    {
        return b;
    }
    let mut c = CCtx::create();
    let mut out = vec![0u8; CCtx::out_size()];
    let measured = c
        .set_parameter(CParameter::CompressionLevel(
            Codecs::default().zstd_level.unwrap_or(3),
        ))
        .and_then(|_| c.set_pledged_src_size(Some(class)))
        .and_then(|_| {
            let mut input = InBuffer::around(&[0u8; 1][..]);
            let mut o = OutBuffer::around(&mut out[..]);
            c.compress_stream(&mut o, &mut input)
        })
        .map(|_| c.sizeof() as u64)
        // A generous bound if zstd refused (it does not at level 3).
        .unwrap_or(class.min(8 << 20) + (2 << 20));
    if let Ok(mut m) = MEASURED.lock() {
        m.push((class, measured));
    }
    measured
}

/// Where the encoded bytes go.
enum Sink {
    /// A temporary file beside the chunk's path, renamed onto it when complete.
    File {
        file: std::fs::File,
        tmp: PathBuf,
        path: PathBuf,
        deferred: bool,
    },
    /// Collected for one write through the store (object stores, durable local stores).
    Mem(Vec<u8>),
}

/// Encodes one whole chunk from rows pushed in C order (edge chunks are padded with the fill
/// value to the full chunk shape, as Zarr stores them) and writes it under its key. A chunk
/// that is all fill value is not stored (and any older value under its key is removed), as
/// zarrs does.
pub struct ChunkWriter<'s> {
    store: &'s Store,
    key: String,
    zstd: Option<CCtx<'static>>,
    crc: Option<u32>,
    out: Vec<u8>,
    sink: Option<Sink>,
    elem: usize,
    chunk: [usize; 3],
    region: [usize; 3],
    /// Rows pushed in the current plane, and planes completed.
    row: usize,
    plane: usize,
    /// One chunk row of fill bytes (padding).
    fill_row: Vec<u8>,
    all_fill: bool,
    written: u64,
}

impl<'s> ChunkWriter<'s> {
    /// A writer for the chunk at `key` of an array with `codecs`, of `chunk` shape, of which
    /// `region` (a corner-aligned part of the chunk) holds data; `fill` is the array's fill value.
    pub fn new<T: Element + bytemuck::Pod>(
        store: &'s Store,
        key: &str,
        codecs: Codecs,
        chunk: [u64; 3],
        region: [u64; 3],
        fill: T,
    ) -> Result<ChunkWriter<'s>, StoreError> {
        let err = |msg: String| StoreError::Io {
            url: store.url().to_string(),
            key: key.to_string(),
            msg,
        };
        let chunk: [usize; 3] = chunk.map(|v| v as usize);
        let region: [usize; 3] = region.map(|v| v as usize);
        if (0..3).any(|i| region[i] > chunk[i]) {
            return Err(err(format!("region {region:?} exceeds chunk {chunk:?}")));
        }
        let elem = std::mem::size_of::<T>();
        let zstd = match codecs.zstd_level {
            Some(level) => {
                let mut c = CCtx::create();
                let total = (chunk.iter().product::<usize>() * elem) as u64;
                c.set_parameter(CParameter::CompressionLevel(level))
                    .and_then(|_| c.set_pledged_src_size(Some(total)))
                    .map_err(|code| {
                        err(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
                    })?;
                Some(c)
            }
            None => None,
        };
        let sink = match store.location() {
            Location::Local(root) if store.deferred => {
                let path = root.join(key);
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(|e| err(e.to_string()))?;
                }
                let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
                let file = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
                Sink::File {
                    file,
                    tmp,
                    path,
                    deferred: store.deferred,
                }
            }
            _ => Sink::Mem(Vec::new()),
        };
        Ok(ChunkWriter {
            store,
            key: key.to_string(),
            zstd,
            crc: codecs.crc32c.then_some(0),
            out: vec![0u8; CCtx::out_size()],
            sink: Some(sink),
            elem,
            chunk,
            region,
            row: 0,
            plane: 0,
            fill_row: bytemuck::cast_slice(&vec![fill; chunk[2]]).to_vec(),
            all_fill: true,
            written: 0,
        })
    }

    fn err(&self, msg: String) -> StoreError {
        StoreError::Io {
            url: self.store.url().to_string(),
            key: self.key.clone(),
            msg,
        }
    }

    /// Push whole rows of the region (a multiple of its width), in C order.
    pub fn push_rows<T: Element + bytemuck::Pod>(
        &mut self,
        rows: &[T],
        fill: T,
    ) -> Result<(), StoreError> {
        let w = self.region[2].max(1);
        if std::mem::size_of::<T>() != self.elem || !rows.len().is_multiple_of(w) {
            return Err(self.err(format!(
                "{} values of {} bytes are not whole rows of {w}",
                rows.len(),
                std::mem::size_of::<T>()
            )));
        }
        if self.all_fill {
            self.all_fill = rows.iter().all(|v| v.is_missing(Some(fill)));
        }
        let pad = (self.chunk[2] - self.region[2]) * self.elem;
        if pad == 0 {
            self.encode(bytemuck::cast_slice(rows))?;
            for _ in 0..rows.len() / w {
                self.next_row()?;
            }
            return Ok(());
        }
        for r in rows.chunks_exact(w) {
            self.encode(bytemuck::cast_slice(r))?;
            let fill = std::mem::take(&mut self.fill_row);
            let res = self.encode(&fill[..pad]);
            self.fill_row = fill;
            res?;
            self.next_row()?;
        }
        Ok(())
    }

    /// After a region row: at the end of a plane, pad it to the chunk's height.
    fn next_row(&mut self) -> Result<(), StoreError> {
        self.row += 1;
        if self.row == self.region[1].max(1) {
            if self.plane >= self.region[0].max(1) {
                return Err(self.err("more rows than the region holds".into()));
            }
            self.fill_rows(self.chunk[1] - self.region[1])?;
            self.row = 0;
            self.plane += 1;
        }
        Ok(())
    }

    fn fill_rows(&mut self, n: usize) -> Result<(), StoreError> {
        let fill = std::mem::take(&mut self.fill_row);
        let res = (0..n).try_for_each(|_| self.encode(&fill));
        self.fill_row = fill;
        res
    }

    /// Feed decoded bytes to the codec chain.
    fn encode(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(mut c) = self.zstd.take() else {
            return self.emit(bytes.len(), Some(bytes));
        };
        let mut input = InBuffer::around(bytes);
        let mut res = Ok(());
        while res.is_ok() && input.pos() < bytes.len() {
            let mut out = OutBuffer::around(&mut self.out[..]);
            let r = c.compress_stream(&mut out, &mut input);
            let n = out.pos();
            res = match r {
                Ok(_) => self.emit(n, None),
                Err(code) => {
                    Err(self.err(format!("zstd: {}", zstd::zstd_safe::get_error_name(code))))
                }
            };
        }
        self.zstd = Some(c);
        res
    }

    /// Pass encoded bytes (`bytes`, or the first `n` of the output buffer) to the checksum and
    /// the sink.
    fn emit(&mut self, n: usize, bytes: Option<&[u8]>) -> Result<(), StoreError> {
        // Not `unwrap_or`: it would slice the output buffer even when `bytes` is given.
        let b = match bytes {
            Some(b) => b,
            None => &self.out[..n],
        };
        if b.is_empty() {
            return Ok(());
        }
        if let Some(crc) = self.crc.as_mut() {
            *crc = crc32c::crc32c_append(*crc, b);
        }
        let res = match self.sink.as_mut() {
            Some(Sink::File { file, .. }) => file.write_all(b).map_err(|e| e.to_string()),
            Some(Sink::Mem(v)) => {
                v.extend_from_slice(b);
                Ok(())
            }
            None => Err("chunk already finished".to_string()),
        };
        self.written += b.len() as u64;
        res.map_err(|m| self.err(m))
    }

    /// Pad what is missing, finish the encoding and store the chunk. Returns whether a value was
    /// stored (false for an all-fill chunk).
    pub fn finish(mut self) -> Result<bool, StoreError> {
        if self.row != 0 {
            return Err(self.err("the last plane is incomplete".into()));
        }
        if self.all_fill {
            self.discard();
            self.store.erase(&self.key)?;
            return Ok(false);
        }
        for _ in self.plane..self.chunk[0] {
            self.fill_rows(self.chunk[1])?;
        }
        if let Some(mut c) = self.zstd.take() {
            loop {
                let mut out = OutBuffer::around(&mut self.out[..]);
                let r = c.end_stream(&mut out);
                let n = out.pos();
                let left = r.map_err(|code| {
                    self.err(format!("zstd: {}", zstd::zstd_safe::get_error_name(code)))
                })?;
                self.emit(n, None)?;
                if left == 0 {
                    break;
                }
            }
        }
        if let Some(crc) = self.crc.take() {
            self.emit(4, Some(&crc.to_le_bytes()))?;
        }
        match self.sink.take() {
            Some(Sink::File {
                file,
                tmp,
                path,
                deferred,
            }) => {
                // The cube is synced once before its commit point.
                if deferred {
                    super::local::start_writeback(&file);
                }
                drop(file);
                if let Err(e) = std::fs::rename(&tmp, &path) {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(self.err(e.to_string()));
                }
                self.store.counters().record_put(&self.key, self.written);
            }
            Some(Sink::Mem(v)) => self.store.set(&self.key, bytes::Bytes::from(v))?,
            None => return Err(self.err("chunk already finished".into())),
        }
        Ok(true)
    }

    fn discard(&mut self) {
        if let Some(Sink::File { tmp, .. }) = self.sink.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for ChunkWriter<'_> {
    /// An unfinished chunk (an error, a cancelled task) leaves no temporary file behind.
    fn drop(&mut self) {
        self.discard();
    }
}

#[cfg(target_endian = "big")]
compile_error!("ChunkWriter writes little-endian chunks by reinterpreting memory");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DType, StoreOptions};
    use ndarray::ArrayD;

    /// Write the chunks of a 1×5×7 float32 array in 4×4 chunks through `ChunkWriter` and read
    /// them back with zarrs: edge chunks padded, an all-missing chunk not stored.
    fn round_trip(deferred: bool) {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("c.zarr").display().to_string();
        let opts = StoreOptions {
            deferred_sync: deferred,
            ..StoreOptions::default()
        };
        let store = Store::open_with(&url, true, &opts).unwrap();
        let codecs = Codecs::default();
        let b = crate::store::layout::band_builder(
            DType::F32,
            Some(f64::NAN),
            [1, 5, 7],
            [1, 4, 4],
            None,
            codecs,
            &serde_json::Map::new(),
            true,
        );
        let arr = b.build(store.storage(), "/v").unwrap();
        arr.store_metadata().unwrap();
        let value = |y: usize, x: usize| (y * 7 + x) as f32 * 0.5;
        for (cy, cx) in [(0u64, 0u64), (0, 1), (1, 0)] {
            let (h, w) = ((5 - cy * 4).min(4), (7 - cx * 4).min(4));
            let key = arr.chunk_key(&[0, cy, cx]).to_string();
            let mut wr =
                ChunkWriter::new(&store, &key, codecs, [1, 4, 4], [1, h, w], f32::NAN).unwrap();
            // Two pushes: the first row, then the rest.
            let rows: Vec<f32> = (0..h as usize)
                .flat_map(|y| {
                    (0..w as usize).map(move |x| value(cy as usize * 4 + y, cx as usize * 4 + x))
                })
                .collect();
            wr.push_rows(&rows[..w as usize], f32::NAN).unwrap();
            wr.push_rows(&rows[w as usize..], f32::NAN).unwrap();
            assert!(wr.finish().unwrap(), "chunk {cy},{cx} has data");
        }
        // The last chunk is all missing: nothing stored.
        let key = arr.chunk_key(&[0, 1, 1]).to_string();
        let mut wr =
            ChunkWriter::new(&store, &key, codecs, [1, 4, 4], [1, 1, 3], f32::NAN).unwrap();
        wr.push_rows(&[f32::NAN; 3], f32::NAN).unwrap();
        assert!(!wr.finish().unwrap());
        assert!(
            store.get(&key).unwrap().is_none(),
            "an all-missing chunk is not stored"
        );

        for (cy, cx) in [(0u64, 0u64), (0, 1), (1, 0)] {
            let got: ArrayD<f32> = arr.retrieve_chunk(&[0, cy, cx]).unwrap();
            for y in 0..4 {
                for x in 0..4 {
                    let (gy, gx) = (cy as usize * 4 + y, cx as usize * 4 + x);
                    let v = got[[0, y, x]];
                    if gy < 5 && gx < 7 {
                        assert_eq!(v, value(gy, gx), "chunk {cy},{cx} at {y},{x}");
                    } else {
                        assert!(v.is_nan(), "padding of chunk {cy},{cx} at {y},{x}: {v}");
                    }
                }
            }
        }
        let names: Vec<String> = std::fs::read_dir(dir.path().join("c.zarr/v/c/0/0"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with(".tmp")),
            "no temporary file is left: {names:?}"
        );
        assert_eq!(store.counters().snapshot().chunk_puts, 3);
    }

    #[test]
    fn streamed_chunks_read_back_padded_through_a_file() {
        round_trip(true);
    }

    #[test]
    fn streamed_chunks_read_back_padded_through_a_put() {
        round_trip(false);
    }

    #[test]
    fn rows_beyond_the_region_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("c.zarr").display().to_string();
        let store = Store::open(&url, true).unwrap();
        let mut wr = ChunkWriter::new(
            &store,
            "v/c/0/0/0",
            Codecs::default(),
            [1, 2, 2],
            [1, 1, 2],
            0u16,
        )
        .unwrap();
        assert!(wr.push_rows(&[1u16, 2, 3], 0).is_err(), "not whole rows");
        wr.push_rows(&[1u16, 2], 0).unwrap();
        assert!(wr.push_rows(&[1u16, 2], 0).is_err(), "past the region");
    }
}

//! Reading one stored chunk as a stream of rows: crc32c → zstd → bytes, the reverse of
//! [`super::ChunkWriter`]. The bytes codec is C order, so a chunk decodes front to back, a few
//! rows at a time, never whole in memory, decoded or (for local cubes) encoded. The checksum
//! covers the whole encoded chunk, so it is verified at [`RowRead::finish`], which a task calls
//! before it commits anything computed from the rows.

use super::layout::Codecs;
use super::{Location, Store, StoreError};
use std::io::Read;
use zstd::zstd_safe::{DCtx, DParameter, InBuffer, OutBuffer};

/// Encoded bytes read from a file at a time.
const READ_BUF: usize = 128 << 10;
/// zstd's largest block: the decoder keeps two of them beside its window, and an input block.
const ZSTD_BLOCK: u64 = 128 << 10;
/// A decoder context's own tables, before any window (measured once).
fn dctx_base() -> u64 {
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| DCtx::create().sizeof() as u64)
}

/// The read buffer of a chunk of `chunk_bytes` (never more than the chunk's encoded bound).
fn read_buf(chunk_bytes: u64) -> usize {
    READ_BUF.min((chunk_bytes + chunk_bytes / 128 + 1024) as usize)
}

/// A chunk read front to back, as raw little-endian bytes of its dtype in C order.
pub trait RowRead: Send {
    /// Fill `dst` with the next decoded bytes of the chunk.
    fn read(&mut self, dst: &mut [u8]) -> Result<(), StoreError>;
    /// Decode what is left and verify the chunk (its length and checksum).
    fn finish(self: Box<Self>) -> Result<(), StoreError>;
    /// The bytes this reader holds (decoder window and tables, read buffer).
    fn memory(&self) -> u64;
}

/// zstd's window log for `level` on inputs over 256 KiB (zstd's own parameter table, rounded
/// up): what a frame written at that level asks its decoder to keep.
pub fn window_log(level: i32) -> u32 {
    match level {
        i32::MIN..=1 => 19,
        2 => 20,
        3..=7 => 21,
        8..=16 => 22,
        17..=19 => 23,
        20 => 25,
        21 => 26,
        _ => 27,
    }
}

/// What one [`ChunkRows`] of a chunk of `chunk_bytes` decoded bytes, written with `codecs`,
/// holds at most (the planner's figure; [`ChunkRows::open`] refuses frames that would ask more).
pub fn rows_bytes(codecs: Codecs, chunk_bytes: u64) -> u64 {
    let read = read_buf(chunk_bytes) as u64;
    match codecs.zstd_level {
        None => read,
        Some(level) => {
            let window = chunk_bytes.min(1 << window_log(level));
            window + 3 * ZSTD_BLOCK.min(window.max(1)) + dctx_base() + read
        }
    }
}

enum Input {
    File(std::fs::File),
    Mem(bytes::Bytes, usize),
}

impl Input {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Input::File(f) => f.read(buf),
            Input::Mem(b, pos) => {
                let n = buf.len().min(b.len() - *pos);
                buf[..n].copy_from_slice(&b[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
        }
    }
}

/// A stored chunk decoded as a stream (see the module docs). An absent chunk reads as its
/// fill value.
pub struct ChunkRows {
    url: String,
    key: String,
    /// `None`: the chunk is not stored; every byte is the fill value.
    input: Option<Input>,
    /// Encoded bytes before the checksum not read yet.
    left: u64,
    crc: Option<u32>,
    zstd: Option<DCtx<'static>>,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Decoded bytes the chunk holds, and those handed out so far.
    total: u64,
    done: u64,
    /// The frame ended (zstd said so).
    ended: bool,
    fill: Vec<u8>,
}

impl ChunkRows {
    /// Open chunk `key` of `store`, written with `codecs`, of `total` decoded bytes whose
    /// elements read as `fill` (little-endian bytes of one element) when absent.
    pub fn open(
        store: &Store,
        key: &str,
        codecs: Codecs,
        total: u64,
        fill: &[u8],
    ) -> Result<ChunkRows, StoreError> {
        let err = |msg: String| StoreError::Io {
            url: store.url().to_string(),
            key: key.to_string(),
            msg,
        };
        let input = match store.location() {
            Location::Local(root) if !store.is_remote() => {
                match std::fs::File::open(root.join(key)) {
                    Ok(f) => {
                        let n = f.metadata().map_err(|e| err(e.to_string()))?.len();
                        Some((Input::File(f), n))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(err(e.to_string())),
                }
            }
            _ => store.get(key)?.map(|b| {
                let n = b.len() as u64;
                (Input::Mem(b, 0), n)
            }),
        };
        let Some((input, size)) = input else {
            return Ok(ChunkRows {
                url: store.url().to_string(),
                key: key.to_string(),
                input: None,
                left: 0,
                crc: None,
                zstd: None,
                buf: Vec::new(),
                pos: 0,
                len: 0,
                total,
                done: 0,
                ended: true,
                fill: fill.to_vec(),
            });
        };
        if matches!(input, Input::File(_)) {
            store.counters().record_read(key, size);
        }
        let check = if codecs.crc32c { 4 } else { 0 };
        if size < check {
            return Err(err(format!(
                "{size} bytes cannot hold the chunk's checksum (truncated)"
            )));
        }
        let zstd = match codecs.zstd_level {
            Some(level) => {
                let mut d = DCtx::create();
                // A frame asking for a larger window than its level gives is refused here,
                // rather than holding more than the planner counted.
                let wlog = window_log(level).max(10);
                d.set_parameter(DParameter::WindowLogMax(wlog))
                    .map_err(|c| err(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
                Some(d)
            }
            None => None,
        };
        let inline = match &input {
            Input::File(_) => read_buf(total).min(size as usize),
            Input::Mem(..) => 0,
        };
        Ok(ChunkRows {
            url: store.url().to_string(),
            key: key.to_string(),
            input: Some(input),
            left: size - check,
            crc: codecs.crc32c.then_some(0),
            zstd,
            buf: vec![0; inline],
            pos: 0,
            len: 0,
            total,
            done: 0,
            ended: codecs.zstd_level.is_none(),
            fill: fill.to_vec(),
        })
    }

    fn err(&self, msg: impl Into<String>) -> StoreError {
        StoreError::Io {
            url: self.url.clone(),
            key: self.key.clone(),
            msg: msg.into(),
        }
    }

    /// Encoded bytes available: `(slice start, slice end)` of the buffer (or of the in-memory
    /// value), refilled and checksummed as needed. Empty only at the end of the payload.
    fn refill(&mut self) -> Result<(), StoreError> {
        if self.pos < self.len || self.left == 0 {
            return Ok(());
        }
        let Some(input) = self.input.as_mut() else {
            return Ok(());
        };
        let n = match input {
            Input::Mem(b, p) => {
                // Served in place: the buffer is the value itself.
                let n = (self.left as usize).min(b.len() - *p);
                if let Some(c) = self.crc.as_mut() {
                    *c = crc32c::crc32c_append(*c, &b[*p..*p + n]);
                }
                self.pos = *p;
                self.len = *p + n;
                *p += n;
                self.left -= n as u64;
                return Ok(());
            }
            Input::File(_) => {
                let want = (self.left as usize).min(self.buf.len());
                let mut got = 0;
                while got < want {
                    let n = input
                        .read(&mut self.buf[got..want])
                        .map_err(|e| StoreError::Io {
                            url: self.url.clone(),
                            key: self.key.clone(),
                            msg: e.to_string(),
                        })?;
                    if n == 0 {
                        break;
                    }
                    got += n;
                }
                got
            }
        };
        if n == 0 {
            return Err(self.err("the chunk ends early (truncated)"));
        }
        if let Some(c) = self.crc.as_mut() {
            *c = crc32c::crc32c_append(*c, &self.buf[..n]);
        }
        self.pos = 0;
        self.len = n;
        self.left -= n as u64;
        Ok(())
    }

    fn encoded(&self) -> &[u8] {
        match &self.input {
            Some(Input::Mem(b, _)) => &b[self.pos..self.len],
            _ => &self.buf[self.pos..self.len],
        }
    }

    fn decode(&mut self, dst: &mut [u8]) -> Result<(), StoreError> {
        let mut filled = 0;
        while filled < dst.len() {
            self.refill()?;
            if self.pos == self.len && (self.ended || self.zstd.is_none()) {
                return Err(self.err(format!(
                    "the chunk holds {} decoded bytes, its shape {} (truncated or corrupt)",
                    self.done + filled as u64,
                    self.total
                )));
            }
            let Some(mut z) = self.zstd.take() else {
                let src = self.encoded();
                let n = src.len().min(dst.len() - filled);
                dst[filled..filled + n].copy_from_slice(&src[..n]);
                self.pos += n;
                filled += n;
                continue;
            };
            let (consumed, produced, r) = {
                let src = self.encoded();
                let mut input = InBuffer::around(src);
                let mut out = OutBuffer::around(&mut dst[filled..]);
                let r = z.decompress_stream(&mut out, &mut input);
                (input.pos(), out.pos(), r)
            };
            self.zstd = Some(z);
            let hint =
                r.map_err(|c| self.err(format!("zstd: {}", zstd::zstd_safe::get_error_name(c))))?;
            self.pos += consumed;
            filled += produced;
            if hint == 0 {
                self.ended = true;
                if filled < dst.len() {
                    return Err(self.err(format!(
                        "the chunk holds {} decoded bytes, its shape {} (corrupt)",
                        self.done + filled as u64,
                        self.total
                    )));
                }
            }
            if consumed == 0 && produced == 0 && self.pos == self.len && self.left == 0 {
                return Err(self.err("the chunk ends early (truncated)"));
            }
        }
        Ok(())
    }
}

impl RowRead for ChunkRows {
    fn read(&mut self, dst: &mut [u8]) -> Result<(), StoreError> {
        if self.done + dst.len() as u64 > self.total {
            return Err(self.err("read past the end of the chunk"));
        }
        if self.input.is_none() {
            let e = self.fill.len().max(1);
            for (i, b) in dst.iter_mut().enumerate() {
                *b = self.fill[(self.done as usize + i) % e];
            }
        } else {
            self.decode(dst)?;
        }
        self.done += dst.len() as u64;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), StoreError> {
        if self.input.is_none() {
            return Ok(());
        }
        let mut scratch = vec![0u8; (64usize << 10).min((self.total - self.done) as usize)];
        while self.done < self.total {
            let n = scratch.len().min((self.total - self.done) as usize);
            self.read(&mut scratch[..n])?;
        }
        // Past the last decoded byte: the frame's end (and zstd's own checksum, if any).
        if let Some(mut z) = self.zstd.take() {
            while !self.ended {
                self.refill()?;
                let (consumed, r) = {
                    let mut input = InBuffer::around(self.encoded());
                    let mut none: [u8; 0] = [];
                    let mut out = OutBuffer::around(&mut none[..]);
                    let r = z.decompress_stream(&mut out, &mut input);
                    (input.pos(), r)
                };
                let hint = r.map_err(|c| {
                    self.err(format!("zstd: {}", zstd::zstd_safe::get_error_name(c)))
                })?;
                self.pos += consumed;
                if hint == 0 {
                    self.ended = true;
                } else if consumed == 0 && self.pos == self.len && self.left == 0 {
                    return Err(self.err("the chunk ends early (truncated)"));
                }
            }
        }
        if self.pos < self.len || self.left > 0 {
            return Err(self.err("bytes after the end of the chunk's data (corrupt)"));
        }
        if let Some(crc) = self.crc {
            let mut stored = [0u8; 4];
            let input = self.input.as_mut().expect("stored chunk");
            let mut got = 0;
            while got < 4 {
                let n = input.read(&mut stored[got..]).map_err(|e| StoreError::Io {
                    url: self.url.clone(),
                    key: self.key.clone(),
                    msg: e.to_string(),
                })?;
                if n == 0 {
                    return Err(self.err("the chunk ends before its checksum (truncated)"));
                }
                got += n;
            }
            if u32::from_le_bytes(stored) != crc {
                return Err(self.err(
                    "crc32c checksum mismatch (the chunk is corrupt; re-ingest or restore it)",
                ));
            }
        }
        Ok(())
    }

    fn memory(&self) -> u64 {
        self.zstd.as_ref().map(|z| z.sizeof() as u64).unwrap_or(0) + self.buf.capacity() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ChunkWriter, DType, StoreOptions};

    fn write(store: &Store, key: &str, codecs: Codecs, vals: &[u16], shape: [u64; 3]) {
        let mut w = ChunkWriter::new(store, key, codecs, shape, shape, 0u16).unwrap();
        w.push_rows(vals, 0).unwrap();
        w.finish().unwrap();
    }

    fn values(n: usize) -> Vec<u16> {
        (0..n).map(|i| (1 + (i * 7919) % 5000) as u16).collect()
    }

    /// Streamed in strips of any size, a chunk gives back what was written, for every codec
    /// chain results and ingest use; the decoder holds what `rows_bytes` says at most.
    #[test]
    fn strips_read_back_what_was_written() {
        let dir = tempfile::tempdir().unwrap();
        for deferred in [true, false] {
            let url = dir
                .path()
                .join(format!("c{deferred}"))
                .display()
                .to_string();
            let opts = StoreOptions {
                deferred_sync: deferred,
                ..StoreOptions::default()
            };
            let store = Store::open_with(&url, true, &opts).unwrap();
            for (i, codecs) in [
                Codecs::default(),
                Codecs {
                    zstd_level: Some(-3),
                    crc32c: true,
                },
                Codecs {
                    zstd_level: Some(19),
                    crc32c: false,
                },
                Codecs {
                    zstd_level: None,
                    crc32c: true,
                },
                Codecs {
                    zstd_level: None,
                    crc32c: false,
                },
            ]
            .into_iter()
            .enumerate()
            {
                let shape = [1u64, 300, 700];
                let vals = values(300 * 700);
                let key = format!("b/c/0/0/{i}");
                write(&store, &key, codecs, &vals, shape);
                let total = (vals.len() * 2) as u64;
                for strip in [1usize, 12, 300] {
                    let mut r: Box<dyn RowRead> =
                        Box::new(ChunkRows::open(&store, &key, codecs, total, &[0, 0]).unwrap());
                    let mut got = Vec::new();
                    let mut buf = vec![0u8; strip * 700 * 2];
                    for _ in 0..300 / strip {
                        r.read(&mut buf).unwrap();
                        got.extend(
                            buf.chunks_exact(2)
                                .map(|b| u16::from_le_bytes([b[0], b[1]])),
                        );
                        assert!(r.memory() <= rows_bytes(codecs, total), "{codecs:?}");
                    }
                    r.finish().unwrap();
                    assert!(got == vals, "{codecs:?} in strips of {strip}");
                }
            }
        }
    }

    /// The decoder of a large chunk holds its window, not the chunk.
    #[test]
    fn a_large_chunk_decodes_within_its_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().display().to_string(), true).unwrap();
        let shape = [1u64, 2048, 2048];
        let vals = values(2048 * 2048);
        write(&store, "b/c/0/0/0", Codecs::default(), &vals, shape);
        let total = (vals.len() * 2) as u64;
        let mut r =
            ChunkRows::open(&store, "b/c/0/0/0", Codecs::default(), total, &[0, 0]).unwrap();
        let mut buf = vec![0u8; 2048 * 2];
        let mut most = 0;
        for _ in 0..2048 {
            r.read(&mut buf).unwrap();
            most = most.max(r.memory());
        }
        assert!(most <= rows_bytes(Codecs::default(), total));
        assert!(most < 3 << 20, "decoder holds {most}");
        Box::new(r).finish().unwrap();
    }

    /// A flipped bit, a truncated chunk, or a chunk shorter than its shape is an error naming
    /// the key, at the latest by `finish`; an absent chunk reads as its fill.
    #[test]
    fn corrupt_chunks_are_errors_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = Store::open(&root.display().to_string(), true).unwrap();
        let shape = [1u64, 50, 60];
        let vals = values(50 * 60);
        let total = (vals.len() * 2) as u64;
        let codecs = Codecs::default();
        let read_all = |key: &str, total: u64| -> Result<(), StoreError> {
            let mut r: Box<dyn RowRead> =
                Box::new(ChunkRows::open(&store, key, codecs, total, &[0, 0])?);
            let mut buf = vec![0u8; total as usize];
            r.read(&mut buf)?;
            r.finish()
        };
        write(&store, "b/c/0/0/0", codecs, &vals, shape);
        let path = root.join("b/c/0/0/0");
        let good = std::fs::read(&path).unwrap();
        // Flip a bit in the middle of the compressed data.
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let e = read_all("b/c/0/0/0", total).unwrap_err().to_string();
        assert!(e.contains("b/c/0/0/0"), "{e}");
        // Only the checksum differs.
        let mut bad = good.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let e = read_all("b/c/0/0/0", total).unwrap_err().to_string();
        assert!(e.contains("checksum") && e.contains("b/c/0/0/0"), "{e}");
        // Truncated.
        std::fs::write(&path, &good[..good.len() / 3]).unwrap();
        let e = read_all("b/c/0/0/0", total).unwrap_err().to_string();
        assert!(e.contains("b/c/0/0/0"), "{e}");
        // A chunk smaller than the shape read.
        std::fs::write(&path, &good).unwrap();
        assert!(read_all("b/c/0/0/0", total + 2).is_err());
        read_all("b/c/0/0/0", total).unwrap();
        // Absent: the fill value.
        let mut r = ChunkRows::open(&store, "b/c/9/9/9", codecs, 8, &7u16.to_le_bytes()).unwrap();
        let mut buf = [0u8; 8];
        r.read(&mut buf).unwrap();
        assert_eq!(buf, [7, 0, 7, 0, 7, 0, 7, 0]);
        let _ = DType::U16;
    }
}

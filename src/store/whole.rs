//! Decoding one whole stored chunk of the chain chunkcube writes (bytes little-endian → zstd →
//! optional crc32c) straight into its values.
//!
//! What the profiles taught (perf, `window_latency --profile chunkcube_full` and
//! `s3_throughput`): zarrs decodes such a chunk into a fresh byte vector and then copies it
//! into a second, typed vector (`pod_collect_to_vec`), each allocation a chunk in size. That
//! copy was 3% of a local full-band read and 10% of the client's CPU reading from S3 (its
//! fresh pages faulting in there). Here zstd writes into the typed vector itself, with a
//! decoder context kept per thread instead of one created per chunk.

use super::layout::Codecs;
use std::cell::RefCell;
use zstd::zstd_safe::{DCtx, WriteBuf};

thread_local! {
    static DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// The unfilled capacity of a typed vector, as zstd's output buffer.
struct Spare<'a, T> {
    v: &'a mut Vec<T>,
    filled: usize,
}

// SAFETY: `as_mut_ptr`/`capacity` describe the vector's allocation in bytes; zstd writes at
// most `capacity` bytes there and reports how many through `filled_until`; `as_slice` only
// exposes those. Every bit pattern is a valid `T` (Pod).
unsafe impl<T: bytemuck::Pod> WriteBuf for Spare<'_, T> {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: the first `filled` bytes were written by zstd.
        unsafe { std::slice::from_raw_parts(self.v.as_ptr() as *const u8, self.filled) }
    }
    fn capacity(&self) -> usize {
        self.v.capacity() * std::mem::size_of::<T>()
    }
    fn as_mut_ptr(&mut self) -> *mut u8 {
        self.v.as_mut_ptr() as *mut u8
    }
    unsafe fn filled_until(&mut self, n: usize) {
        self.filled = n;
    }
}

/// Whether [`decode`] handles chunks written with `codecs` on this machine (zstd-compressed;
/// the stored bytes are little-endian).
pub fn handles(codecs: Codecs) -> bool {
    codecs.zstd_level.is_some() && cfg!(target_endian = "little")
}

/// Decode the stored object `encoded` of a chunk of `n` values written with `codecs`
/// (see [`handles`]). The error says what is wrong with the object.
pub fn decode<T: bytemuck::Pod>(
    encoded: &[u8],
    codecs: Codecs,
    n: usize,
) -> Result<Vec<T>, String> {
    let body = if codecs.crc32c {
        let Some(split) = encoded.len().checked_sub(4) else {
            return Err("the chunk ends before its checksum (truncated)".into());
        };
        let (body, sum) = encoded.split_at(split);
        let stored = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(
                "crc32c checksum mismatch (the chunk is corrupt; re-ingest or restore it)".into(),
            );
        }
        body
    } else {
        encoded
    };
    let want = n * std::mem::size_of::<T>();
    let mut v: Vec<T> = Vec::with_capacity(n);
    let got = DCTX.with(|cell| {
        let mut cell = cell.borrow_mut();
        let ctx = cell.get_or_insert_with(DCtx::create);
        let mut out = Spare {
            v: &mut v,
            filled: 0,
        };
        ctx.decompress(&mut out, body)
            .map(|_| out.filled)
            .map_err(|code| {
                format!(
                    "cannot be decoded (zstd: {}; the chunk is corrupt)",
                    zstd::zstd_safe::get_error_name(code)
                )
            })
    })?;
    if got != want {
        return Err(format!(
            "decodes to {got} bytes, {want} expected (the chunk is corrupt)"
        ));
    }
    // SAFETY: zstd wrote all `n` values (`got == want` bytes).
    unsafe { v.set_len(n) };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &[u16], crc: bool) -> Vec<u8> {
        let mut e = zstd::bulk::compress(bytemuck::cast_slice(v), 3).unwrap();
        if crc {
            let c = crc32c::crc32c(&e);
            e.extend_from_slice(&c.to_le_bytes());
        }
        e
    }

    const ZSTD_CRC: Codecs = Codecs {
        zstd_level: Some(3),
        crc32c: true,
    };

    #[test]
    fn decodes_what_zstd_encoded_and_refuses_damage() {
        let v: Vec<u16> = (0..70_000u32).map(|i| (i * 7 % 65_521) as u16).collect();
        let e = encode(&v, true);
        assert_eq!(decode::<u16>(&e, ZSTD_CRC, v.len()).unwrap(), v);
        let plain = Codecs {
            crc32c: false,
            ..ZSTD_CRC
        };
        assert_eq!(
            decode::<u16>(&encode(&v, false), plain, v.len()).unwrap(),
            v
        );
        // A flipped bit, a truncation, a wrong size: errors, and the next decode still works.
        let mut bad = e.clone();
        bad[10] ^= 1;
        assert!(decode::<u16>(&bad, ZSTD_CRC, v.len())
            .unwrap_err()
            .contains("crc32c"));
        assert!(decode::<u16>(&e[..3], ZSTD_CRC, v.len()).is_err());
        assert!(decode::<u16>(&e, ZSTD_CRC, v.len() - 1).is_err());
        assert!(decode::<u16>(&e, ZSTD_CRC, v.len() + 1)
            .unwrap_err()
            .contains("expected"));
        let mut garbled = encode(&v, false);
        garbled[20] ^= 0xff;
        let _ = decode::<u16>(&garbled, plain, v.len());
        assert_eq!(decode::<u16>(&e, ZSTD_CRC, v.len()).unwrap(), v);
    }
}

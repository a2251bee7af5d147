//! Chunk specifications as users write them: `time=1,y=1024,x=1024` (as Dask's
//! `dask_chunks`; `-1` or a missing dimension means the whole dimension), or a byte size
//! (`64MiB`) / `auto` for query chunks aligned to the stored chunks.

/// The dimensions of every band, in order.
pub const DIMS: [&str; 3] = ["time", "y", "x"];

/// The dimensions as selections and reductions name them, for error messages.
pub const DIM_NAMES: &str = "time, y (or lat, latitude), x (or lon, longitude)";

/// The index of dimension `name` in [`DIMS`]; `lat`/`latitude` and `lon`/`longitude` name
/// y and x, as in the geographic stores xarray and odc-stac write (chunkcube reads them so).
pub fn dim_index(name: &str) -> Option<usize> {
    match name {
        "lat" | "latitude" => Some(1),
        "lon" | "longitude" => Some(2),
        _ => DIMS.iter().position(|d| *d == name),
    }
}

/// A bad chunk specification.
#[derive(Debug, thiserror::Error)]
#[error("invalid chunks '{spec}': {reason}")]
pub struct ChunkSpecError {
    /// The spec as given.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

/// A parsed chunk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkSpec {
    /// Per dimension: `Some(n)` pixels, `None` = the whole dimension.
    Dims([Option<u64>; 3]),
    /// A target number of bytes per chunk, aligned to the stored chunks.
    Bytes(u64),
    /// A default byte target (128 MiB, as Dask's `auto`).
    Auto,
}

/// Parse a size such as `64MiB`, `1GB`, `512k`, `1048576`.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

/// Human-readable bytes with decimal units, as Dask prints them (`518.86 MB`).
pub fn format_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

impl ChunkSpec {
    /// Parse `time=1,y=512,x=512`, `y=-1`, `64MiB` or `auto`.
    pub fn parse(spec: &str) -> Result<ChunkSpec, ChunkSpecError> {
        let err = |reason: String| ChunkSpecError {
            spec: spec.to_string(),
            reason,
        };
        let s = spec.trim();
        if s == "auto" {
            return Ok(ChunkSpec::Auto);
        }
        if !s.contains('=') {
            return parse_bytes(s).map(ChunkSpec::Bytes).ok_or_else(|| {
                err("expected DIM=N[,DIM=N...] with DIM in time,y,x, a byte size such as 64MiB, or auto".into())
            });
        }
        let mut dims = [None; 3];
        let mut seen = [false; 3];
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| err(format!("'{part}' is not DIM=N")))?;
            let k = k.trim();
            let i = dim_index(k).ok_or_else(|| {
                err(format!(
                    "unknown dimension '{k}' (dimensions are {DIM_NAMES})"
                ))
            })?;
            if seen[i] {
                return Err(err(format!("dimension '{k}' given twice")));
            }
            seen[i] = true;
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| err(format!("'{v}' for '{k}' is not a whole number")))?;
            dims[i] = match n {
                -1 => None,
                n if n >= 1 => Some(n as u64),
                _ => {
                    return Err(err(format!(
                        "'{k}={n}': sizes must be positive or -1 (whole dimension)"
                    )))
                }
            };
        }
        Ok(ChunkSpec::Dims(dims))
    }

    /// Resolve to a concrete chunk shape for an array of `shape`, whose stored (decode)
    /// chunks are `stored` and elements `elem_bytes` wide. Byte targets pick whole multiples
    /// of the stored chunks, growing x, then y, then time, never straddling stored chunks.
    pub fn resolve(&self, shape: [u64; 3], stored: [u64; 3], elem_bytes: u64) -> [u64; 3] {
        match self {
            ChunkSpec::Dims(d) => {
                let mut out = [0; 3];
                for i in 0..3 {
                    out[i] = d[i].unwrap_or(shape[i]).min(shape[i]).max(1);
                }
                out
            }
            ChunkSpec::Bytes(b) => aligned(shape, stored, elem_bytes, *b),
            ChunkSpec::Auto => aligned(shape, stored, elem_bytes, 128 * 1024 * 1024),
        }
    }
}

fn aligned(shape: [u64; 3], stored: [u64; 3], elem: u64, target: u64) -> [u64; 3] {
    let mut c = [
        stored[0].min(shape[0]).max(1),
        stored[1].min(shape[1]).max(1),
        stored[2].min(shape[2]).max(1),
    ];
    let bytes = |c: &[u64; 3]| c[0] * c[1] * c[2] * elem;
    for axis in [2usize, 1, 0] {
        loop {
            if c[axis] >= shape[axis] {
                break;
            }
            let mut next = c;
            next[axis] = (c[axis] + stored[axis]).min(shape[axis]);
            if bytes(&next) > target {
                break;
            }
            c = next;
        }
    }
    c
}

/// Number of chunks along each dimension.
pub fn grid_shape(shape: [u64; 3], chunks: [u64; 3]) -> [u64; 3] {
    [
        shape[0].div_ceil(chunks[0].max(1)),
        shape[1].div_ceil(chunks[1].max(1)),
        shape[2].div_ceil(chunks[2].max(1)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_dask_style_specs() {
        assert_eq!(
            ChunkSpec::parse("time=1,y=512,x=512").unwrap(),
            ChunkSpec::Dims([Some(1), Some(512), Some(512)])
        );
        assert_eq!(
            ChunkSpec::parse("y=-1").unwrap(),
            ChunkSpec::Dims([None, None, None])
        );
        assert_eq!(
            ChunkSpec::parse("64MiB").unwrap(),
            ChunkSpec::Bytes(64 << 20)
        );
        assert!(ChunkSpec::parse("x=0").is_err());
        assert!(ChunkSpec::parse("band=3").is_err());
        assert!(ChunkSpec::parse("x=abc").is_err());
        assert!(ChunkSpec::parse("garbage").is_err());
    }
    #[test]
    fn byte_targets_align_to_stored_chunks() {
        let c = ChunkSpec::Bytes(8 << 20).resolve([4, 8192, 8192], [1, 1024, 1024], 2);
        assert_eq!(c, [1, 1024, 4096]); // x grows first, then y, then time
        for (i, v) in c.iter().enumerate() {
            assert_eq!(v % [1, 1024, 1024][i], 0);
        }
    }

    proptest::proptest! {
        /// Any text is a spec or an error (never a panic), and any size text a size or None.
        #[test]
        fn parsers_never_panic(s in "\\PC{0,40}") {
            let _ = ChunkSpec::parse(&s);
            let _ = parse_bytes(&s);
        }

        /// Well-formed specs read back.
        #[test]
        fn dims_round_trip(t in 1u64..100, y in -1i64..5000, x in 1u64..5000) {
            let spec = format!("time={t},y={y},x={x}");
            let y_want = (y > 0).then_some(y as u64);
            match ChunkSpec::parse(&spec) {
                Ok(ChunkSpec::Dims(d)) => proptest::prop_assert_eq!(d, [Some(t), y_want, Some(x)]),
                other => proptest::prop_assert!(y == 0, "{spec}: {other:?}"),
            }
        }
    }
}

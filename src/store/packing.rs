//! CF packing of bands other tools wrote: `scale_factor` / `add_offset` on stored integers
//! (Landsat Collection 2 surface reflectance: uint16 × 2.75e-05 − 0.2, `_FillValue` 0).
//! xarray decodes them on read; chunkcube does the same, so what it computes with and
//! prints are the values xarray gives, never the raw integers. chunkcube's own ingest never
//! packs, so its cubes never take this path.

use super::{DType, Element, Values};
use ndarray::ArrayD;
use serde_json::{Map, Value};

/// How a packed band's stored values become its values: `raw * scale + offset`, in float64,
/// with the raw values that mean missing becoming NaN.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Packing {
    /// `scale_factor` (1 when absent).
    pub scale: f64,
    /// `add_offset` (0 when absent).
    pub offset: f64,
    /// Whether `scale_factor` / `add_offset` were given (xarray applies only those given).
    pub given: [bool; 2],
    /// Raw values that mean missing (`_FillValue`, `missing_value`); NaN pads the unused
    /// slots (never equal to anything), so the test is four compares, no loop.
    missing: [f64; 4],
}

impl Packing {
    /// The dtype a packed band decodes to. xarray's `_choose_float_dtype` picks the type of
    /// `scale_factor`/`add_offset`; Zarr attributes are JSON, which xarray reads as Python
    /// floats (float64) or ints, and every such combination yields float64 (checked with
    /// xarray 2026.9: a uint16 band × 2.75e-05 − 0.2 opens as float64).
    pub const DTYPE: DType = DType::F64;

    /// The packing `attributes` state, if any. `nodata` is the raw fill value already read
    /// from `_FillValue` (or Zarr's fill_value); `missing_value` adds its values. `Err`
    /// names the attribute that is not a number.
    pub fn of(
        attributes: &Map<String, Value>,
        nodata: Option<f64>,
    ) -> Result<Option<Packing>, String> {
        let num = |k: &str| -> Result<Option<f64>, String> {
            let v = match attributes.get(k) {
                None | Some(Value::Null) => return Ok(None),
                // xarray takes a one-element array's item (netCDF habits).
                Some(Value::Array(a)) if a.len() == 1 => &a[0],
                Some(v) => v,
            };
            v.as_f64()
                .map(Some)
                .ok_or_else(|| format!("attribute '{k}' must be a number, got {v}"))
        };
        let scale = num("scale_factor")?;
        let offset = num("add_offset")?;
        if scale.is_none() && offset.is_none() {
            return Ok(None);
        }
        let mut missing = [f64::NAN; 4];
        let mut n = 0;
        let mut add = |v: f64| -> Result<(), String> {
            if v.is_nan() || missing[..n].contains(&v) {
                return Ok(());
            }
            if n == missing.len() {
                return Err(
                    "more than 4 distinct missing values (_FillValue, missing_value)".into(),
                );
            }
            missing[n] = v;
            n += 1;
            Ok(())
        };
        if let Some(v) = nodata {
            add(v)?;
        }
        match attributes.get("missing_value") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) => {
                for v in a {
                    add(v
                        .as_f64()
                        .ok_or("attribute 'missing_value' must be numbers")?)?;
                }
            }
            Some(v) => add(v
                .as_f64()
                .ok_or("attribute 'missing_value' must be a number")?)?,
        }
        Ok(Some(Packing {
            scale: scale.unwrap_or(1.0),
            offset: offset.unwrap_or(0.0),
            given: [scale.is_some(), offset.is_some()],
            missing,
        }))
    }

    /// Decode one chunk of raw values: float64, missing → NaN. One pass of branch-free
    /// compares and a multiply-add per element (vectorises); `raw * scale` then `+ offset`,
    /// rounded as xarray does (two operations, not a fused one), so values match bit for bit.
    pub fn decode(&self, raw: &Values) -> Values {
        fn dec<T: Element>(a: &ArrayD<T>, p: &Packing) -> ArrayD<f64> {
            let (s, o) = (p.scale, p.offset);
            let [m0, m1, m2, m3] = p.missing;
            a.mapv(|v| {
                let x = v.to_f64();
                let miss = (x == m0) | (x == m1) | (x == m2) | (x == m3);
                let y = x * s + o;
                if miss {
                    f64::NAN
                } else {
                    y
                }
            })
        }
        Values::F64(crate::on_values!(raw, a => dec(a, self)))
    }

    /// How `info` shows it: `×0.0000275 + -0.2 → float64`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if self.given[0] {
            s.push_str(&format!("×{}", self.scale));
        }
        if self.given[1] {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("+ {}", self.offset));
        }
        format!("{s} → {}", Self::DTYPE)
    }
}

/// Attributes that hold for the raw values of a packed band only: written with decoded
/// values they would be applied again (packing) or compare against the wrong numbers (CF
/// states valid ranges, flags and missing values in the packed type).
pub const RAW_DOMAIN: [&str; 9] = [
    "scale_factor",
    "add_offset",
    "missing_value",
    "valid_min",
    "valid_max",
    "valid_range",
    "flag_values",
    "flag_masks",
    "flag_meanings",
];

/// Whether `attributes` pack their band (so chunkcube reads it decoded).
pub fn is_packed(attributes: &Map<String, Value>) -> bool {
    ["scale_factor", "add_offset"]
        .iter()
        .any(|k| attributes.get(*k).is_some_and(|v| !v.is_null()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_as_xarray_does() {
        let attrs = json!({"scale_factor": 2.75e-05, "add_offset": -0.2, "missing_value": 65535});
        let p = Packing::of(attrs.as_object().unwrap(), Some(0.0))
            .unwrap()
            .unwrap();
        let raw = Values::from(ndarray::arr1(&[0u16, 1000, 20000, 65535]).into_dyn());
        let Values::F64(d) = p.decode(&raw) else {
            panic!()
        };
        assert!(d[0].is_nan() && d[3].is_nan());
        assert_eq!(d[1], 1000.0 * 2.75e-05 + -0.2);
        assert_eq!(d[2], 20000.0 * 2.75e-05 + -0.2);
        assert_eq!(p.describe(), "×0.0000275 + -0.2 → float64");
    }

    #[test]
    fn unpacked_and_bad_attributes() {
        let none = json!({"long_name": "red"});
        assert_eq!(Packing::of(none.as_object().unwrap(), Some(0.0)), Ok(None));
        let bad = json!({"scale_factor": "0.1"});
        let e = Packing::of(bad.as_object().unwrap(), None).unwrap_err();
        assert!(e.contains("scale_factor"), "{e}");
    }
}

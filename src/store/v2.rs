//! Zarr v2 input: stores xarray writes with `zarr_format=2` (most existing xarray and ODC
//! cubes), consolidated or not. Their `.zgroup`, `.zarray` and `.zattrs` documents are read as
//! the v3 documents `layout` parses (through zarrs' own v2 → v3 conversion, the one it reads
//! their chunks with), `_ARRAY_DIMENSIONS` becoming `dimension_names`. Cubes are only ever
//! written as v3.

use super::{Store, StoreError};
use serde_json::{json, Map, Value};
use zarrs::metadata::v2::ArrayMetadataV2;

fn bad(store: &Store, key: &str, msg: String) -> StoreError {
    StoreError::Metadata {
        url: store.url().to_string(),
        key: key.to_string(),
        msg,
    }
}

fn json_at(store: &Store, key: &str) -> Result<Option<Value>, StoreError> {
    match store.get(key)? {
        None => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| bad(store, key, format!("invalid JSON: {e}"))),
    }
}

/// The root group of a v2 store as a v3-style group document (`.zgroup` + `.zattrs`), or
/// `None` when there is no `.zgroup`.
pub(super) fn group_doc(store: &Store) -> Result<Option<Value>, StoreError> {
    let Some(g) = json_at(store, ".zgroup")? else {
        return Ok(None);
    };
    if g.get("zarr_format").and_then(Value::as_u64) != Some(2) {
        return Err(bad(store, ".zgroup", "zarr_format is not 2".into()));
    }
    let attrs = match json_at(store, ".zattrs")? {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(bad(store, ".zattrs", "not a JSON object".into())),
        None => Map::new(),
    };
    Ok(Some(
        json!({ "zarr_format": 2, "node_type": "group", "attributes": attrs }),
    ))
}

/// Array `name` of a v2 store as a v3 array document, or `None` when it has no `.zarray`.
pub(super) fn array_doc(store: &Store, name: &str) -> Result<Option<Value>, StoreError> {
    let key = format!("{name}/.zarray");
    let Some(bytes) = store.get(&key)? else {
        return Ok(None);
    };
    let mut meta: ArrayMetadataV2 = serde_json::from_slice(&bytes)
        .map_err(|e| bad(store, &key, format!("not Zarr v2 array metadata: {e}")))?;
    let akey = format!("{name}/.zattrs");
    match json_at(store, &akey)? {
        Some(Value::Object(m)) => meta.attributes = m,
        Some(_) => return Err(bad(store, &akey, "not a JSON object".into())),
        None => {}
    }
    let v3 = zarrs::convert::array_metadata_v2_to_v3(&meta)
        .map_err(|e| bad(store, &key, format!("unsupported Zarr v2 array: {e}")))?;
    let mut doc = serde_json::to_value(&v3).map_err(|e| bad(store, &key, e.to_string()))?;
    if let Some(dims) = meta.attributes.get("_ARRAY_DIMENSIONS") {
        doc["dimension_names"] = dims.clone();
    }
    doc["node_type"] = json!("array");
    // A v2 `fill_value: null` says there is no fill (and so no nodata) at all.
    if meta.attributes.get("_FillValue").is_none()
        && serde_json::to_value(&meta.fill_value).ok() == Some(Value::Null)
    {
        doc["fill_value"] = Value::Null;
    }
    Ok(Some(doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 array as xarray writes it (blosc, `.` separator, dimensions in `.zattrs`) reads as
    /// the v3 document of the same array.
    #[test]
    fn xarray_v2_array_reads_as_v3() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), true).unwrap();
        store
            .set(".zgroup", br#"{"zarr_format": 2}"#.to_vec().into())
            .unwrap();
        store.set("red/.zarray", br#"{"shape":[2,3,4],"chunks":[1,3,4],"dtype":"<u2","fill_value":0,"order":"C","filters":null,"dimension_separator":".","compressor":{"id":"blosc","cname":"lz4","clevel":5,"shuffle":1,"blocksize":0},"zarr_format":2}"#.to_vec().into()).unwrap();
        store
            .set(
                "red/.zattrs",
                br#"{"_ARRAY_DIMENSIONS":["time","y","x"],"grid_mapping":"spatial_ref"}"#
                    .to_vec()
                    .into(),
            )
            .unwrap();
        let g = group_doc(&store).unwrap().unwrap();
        assert_eq!(g["node_type"], "group");
        let d = array_doc(&store, "red").unwrap().unwrap();
        assert_eq!(d["dimension_names"], json!(["time", "y", "x"]));
        assert_eq!(d["data_type"], "uint16");
        assert_eq!(d["fill_value"], 0);
        assert_eq!(d["shape"], json!([2, 3, 4]));
        assert_eq!(d["attributes"]["grid_mapping"], "spatial_ref");
        assert!(array_doc(&store, "nir").unwrap().is_none());
        store.set("bad/.zarray", b"{}".to_vec().into()).unwrap();
        let e = array_doc(&store, "bad").unwrap_err().to_string();
        assert!(e.contains("bad/.zarray"), "{e}");
    }
}

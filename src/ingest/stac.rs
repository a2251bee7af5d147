//! A STAC ItemCollection (`--stac items.json`) as a source of tiles, since Digital Earth
//! Africa publishes its products as STAC: every item is one tile at one time (its `datetime`,
//! or `start_datetime` for items that only give a range), every raster asset one band named
//! by its key. Asset hrefs may be local (relative to the JSON file), `http(s)://` or `s3://`.

use super::scan::TileSource;
use super::IngestError;
use crate::geo::parse_time;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Roles of assets that are not bands (previews and sidecar documents).
const NOT_BANDS: [&str; 4] = ["thumbnail", "overview", "metadata", "visual"];

/// Whether an asset is a band: not a preview or sidecar by its roles, and a TIFF (or of no
/// declared type). An asset declared as data that GDAL cannot read is reported by the scan.
fn is_band(asset: &Value) -> bool {
    let roles: Vec<&str> = asset
        .get("roles")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if roles.contains(&"data") {
        return true;
    }
    if roles.iter().any(|r| NOT_BANDS.contains(r)) {
        return false;
    }
    match asset.get("type").and_then(Value::as_str) {
        None => true,
        Some(t) => t.to_ascii_lowercase().contains("tiff"),
    }
}

/// The tiles of a STAC ItemCollection (or a single Item) file.
pub fn read_stac(file: &Path) -> Result<Vec<TileSource>, IngestError> {
    let name = file.display().to_string();
    let whole = |msg: String| IngestError::Tile {
        file: name.clone(),
        msg,
    };
    let text = std::fs::read_to_string(file)
        .map_err(|e| whole(format!("cannot read the STAC file: {e}")))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| whole(format!("not JSON: {e}")))?;
    let features: Vec<&Value> =
        match doc.get("type").and_then(Value::as_str) {
            Some("FeatureCollection") => doc
                .get("features")
                .and_then(Value::as_array)
                .ok_or_else(|| whole("a FeatureCollection without a 'features' list".into()))?
                .iter()
                .collect(),
            Some("Feature") => vec![&doc],
            _ => return Err(whole(
                "not a STAC ItemCollection (expected \"type\": \"FeatureCollection\" with items)"
                    .into(),
            )),
        };
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (i, item) in features.iter().enumerate() {
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("#{i}"));
        let bad = |msg: String| IngestError::Stac {
            file: name.clone(),
            item: id.clone(),
            msg,
        };
        let props = item
            .get("properties")
            .ok_or_else(|| bad("no 'properties'".into()))?;
        let when = ["datetime", "start_datetime"]
            .iter()
            .find_map(|k| props.get(*k).and_then(Value::as_str))
            .ok_or_else(|| bad("no 'datetime' (nor 'start_datetime') in its properties".into()))?;
        let time = parse_time(when).map_err(|e| bad(format!("datetime: {e}")))?;
        let assets = item
            .get("assets")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no 'assets'".into()))?;
        let mut bands = 0;
        for (key, asset) in assets {
            if !is_band(asset) {
                continue;
            }
            let href = asset
                .get("href")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("asset '{key}' has no href")))?;
            crate::store::layout::validate_band_name(key)
                .map_err(|m| bad(format!("asset '{key}': {m}")))?;
            let origin = format!("{name} item '{id}' asset '{key}'");
            let href = href.strip_prefix("file://").unwrap_or(href);
            let path = match super::remote::gdal_path(href)
                .map_err(|m| bad(format!("asset '{key}': {m}")))?
            {
                Some(p) => p,
                None => {
                    let p = if Path::new(href).is_absolute() {
                        PathBuf::from(href)
                    } else {
                        base.join(href)
                    };
                    let p = std::fs::canonicalize(&p).unwrap_or(p);
                    std::path::absolute(&p).unwrap_or(p)
                }
            };
            out.push(TileSource {
                path,
                band: key.clone(),
                time,
                origin,
            });
            bands += 1;
        }
        if bands == 0 {
            return Err(bad("no raster assets (GeoTIFF, or role 'data')".into()));
        }
    }
    if out.is_empty() {
        return Err(IngestError::NoTiles(name));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, doc: &Value) -> PathBuf {
        let p = dir.join("items.json");
        std::fs::write(&p, serde_json::to_vec(doc).unwrap()).unwrap();
        p
    }

    #[test]
    fn items_assets_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let doc = serde_json::json!({"type": "FeatureCollection", "features": [
            {"type": "Feature", "id": "x1y2_2019", "properties": {"datetime": "2019-01-01T00:00:00Z"},
             "assets": {
                "red": {"href": "s3://b/red.tif", "type": "image/tiff; application=geotiff; profile=cloud-optimized", "roles": ["data"]},
                "nir": {"href": "tiles/nir.tif"},
                "thumbnail": {"href": "thumb.png", "type": "image/png", "roles": ["thumbnail"]},
                "info": {"href": "meta.json", "type": "application/json"}}},
            {"type": "Feature", "id": "x1y2_2020", "properties": {"datetime": null, "start_datetime": "2020-01-01T00:00:00Z"},
             "assets": {"red": {"href": "https://h/r.tif"}}}]});
        let got = read_stac(&write(tmp.path(), &doc)).unwrap();
        let names: Vec<(String, String)> = got
            .iter()
            .map(|t| (t.band.clone(), t.path.display().to_string()))
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0].1, "/vsis3/b/red.tif");
        assert!(names[1].1.ends_with("tiles/nir.tif") && names[1].1.starts_with('/'));
        assert_eq!(names[2].1, "/vsicurl/https://h/r.tif");
        assert_eq!(got[2].time, parse_time("2020").unwrap());
        assert!(got[0].origin.contains("item 'x1y2_2019' asset 'red'"));

        let no_time = serde_json::json!({"type": "FeatureCollection", "features": [
            {"id": "t9", "properties": {}, "assets": {"red": {"href": "r.tif"}}}]});
        let e = read_stac(&write(tmp.path(), &no_time))
            .unwrap_err()
            .to_string();
        assert!(e.contains("item 't9'") && e.contains("datetime"), "{e}");
        let no_raster = serde_json::json!({"type": "FeatureCollection", "features": [
            {"id": "t8", "properties": {"datetime": "2019"}, "assets": {"m": {"href": "m.json", "type": "application/json"}}}]});
        let e = read_stac(&write(tmp.path(), &no_raster))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("item 't8'") && e.contains("no raster assets"),
            "{e}"
        );
        let e = read_stac(&write(tmp.path(), &serde_json::json!([1])))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("items.json") && e.contains("ItemCollection"),
            "{e}"
        );
    }
}

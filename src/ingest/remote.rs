//! Tiles read where they live: `s3://…` and `http(s)://…` GeoTIFFs (COGs) through GDAL's
//! `/vsis3/` and `/vsicurl/`, configured from the same AWS_* environment chunkcube's S3 stores
//! use, so tiles and cube can sit behind one endpoint. Secrets stay in the environment: GDAL
//! reads the credentials itself and nothing here formats them.

use crate::store::redact::clean;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

/// GDAL's path for a tile spelled `spec`: `Ok(None)` for a local path, the `/vsis3/` or
/// `/vsicurl/` path for a URL, or why the URL cannot be read.
pub(crate) fn gdal_path(spec: &str) -> Result<Option<PathBuf>, String> {
    let lower = spec.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("s3://").map(|_| &spec[5..]) {
        if rest.split('/').next().is_none_or(str::is_empty) || !rest.contains('/') {
            return Err(format!("{}: expected s3://bucket/key.tif", clean(spec)));
        }
        return Ok(Some(PathBuf::from(format!("/vsis3/{rest}"))));
    }
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Some(PathBuf::from(format!("/vsicurl/{spec}"))));
    }
    if lower.starts_with("/vsis3/") || lower.starts_with("/vsicurl/") {
        return Ok(Some(PathBuf::from(spec)));
    }
    if ["gs://", "az://", "abfs://", "/vsi", "ftp://", "file://"]
        .iter()
        .any(|s| lower.starts_with(s))
    {
        return Err(format!(
            "{}: only local paths, http(s):// and s3:// tiles are supported",
            clean(spec)
        ));
    }
    Ok(None)
}

/// Whether `path` is a tile read through GDAL's network file systems.
pub(crate) fn is_remote_path(path: &Path) -> bool {
    path.to_str()
        .is_some_and(|p| p.starts_with("/vsis3/") || p.starts_with("/vsicurl/"))
}

/// A tile's name as the user wrote it (`s3://…`, `https://…`, or the local path), secrets
/// (URL user info, presigned query parameters) redacted: what messages show.
pub fn display_name(path: &Path) -> String {
    let p = path.display().to_string();
    if let Some(rest) = p.strip_prefix("/vsis3/") {
        clean(&format!("s3://{rest}"))
    } else if let Some(rest) = p.strip_prefix("/vsicurl/") {
        clean(rest)
    } else {
        p
    }
}

/// Point GDAL's network file systems at what the AWS_* environment says, once per process:
/// `AWS_ENDPOINT_URL` becomes `AWS_S3_ENDPOINT` (host and port), `AWS_HTTPS` (from its scheme)
/// and path-style requests (`AWS_VIRTUAL_HOSTING=FALSE`, as object_store sends them to custom
/// endpoints). Credentials, `AWS_REGION` and `AWS_NO_SIGN_REQUEST` GDAL reads from the
/// environment itself. Directory listings on open are off (each tile is one object), and
/// timeouts and retries follow chunkcube's S3 tuning. A GDAL option set in the environment wins.
pub(crate) fn configure_gdal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let set = |k: &str, v: &str| {
            if std::env::var_os(k).is_none() {
                let _ = gdal::config::set_config_option(k, v);
            }
        };
        if let Ok(ep) = std::env::var("AWS_ENDPOINT_URL") {
            let ep = ep.trim().trim_end_matches('/');
            if !ep.is_empty() {
                let (scheme, rest) = ep.split_once("://").unwrap_or(("https", ep));
                let rest = rest.rsplit('@').next().unwrap_or(rest);
                set("AWS_S3_ENDPOINT", rest);
                let https = if scheme.eq_ignore_ascii_case("http") {
                    "NO"
                } else {
                    "YES"
                };
                set("AWS_HTTPS", https);
                set("AWS_VIRTUAL_HOSTING", "FALSE");
            }
        }
        let t = crate::store::tuning();
        set("GDAL_DISABLE_READDIR_ON_OPEN", "EMPTY_DIR");
        set(
            "GDAL_HTTP_CONNECTTIMEOUT",
            &t.connect_timeout.as_secs().to_string(),
        );
        set(
            "GDAL_HTTP_TIMEOUT",
            &t.request_timeout.as_secs().to_string(),
        );
        set("GDAL_HTTP_MAX_RETRY", &t.max_retries.to_string());
        set("GDAL_HTTP_RETRY_DELAY", "0.5");
    });
}

/// Size and modification time GDAL reports for a remote tile (`None`: not there or not
/// reachable).
pub(crate) fn stat(path: &Path) -> Option<(u64, i64)> {
    stat_with(path, 0)
}

/// GDAL's `VSI_STAT_CACHE_ONLY` (cpl_vsi.h, GDAL >= 3.4; not in gdal-sys' bindings).
const VSI_STAT_CACHE_ONLY: i32 = 0x10;

/// Size and modification time of a remote tile from what GDAL already knows, never a
/// request: after the tile was opened, the size and `Last-Modified` of the open's HEAD
/// (`/vsicurl/`) or first ranged GET (`/vsis3/`). `None` when GDAL has forgotten them.
pub(crate) fn cached_stat(path: &Path) -> Option<(u64, i64)> {
    stat_with(path, VSI_STAT_CACHE_ONLY)
}

fn stat_with(path: &Path, flags: i32) -> Option<(u64, i64)> {
    let c = CString::new(path.to_str()?).ok()?;
    // SAFETY: GDAL's VSIStatBufL is the C library's `struct stat64` (opaque in gdal-sys, so
    // libc's definition is the buffer); a zeroed one is valid, `c` outlives the call.
    unsafe {
        let mut st: libc::stat64 = std::mem::zeroed();
        let buf = (&mut st as *mut libc::stat64).cast::<gdal_sys::VSIStatBufL>();
        if gdal_sys::VSIStatExL(c.as_ptr(), buf, flags) != 0 {
            return None;
        }
        Some((st.st_size as u64, st.st_mtime))
    }
}

/// The HTTP headers GDAL saw for a remote tile that tell one version of an object from
/// another (`ETag`, `Last-Modified`, `Content-Length`), as `name=value` in a stable order.
fn version_headers(path: &Path) -> Vec<String> {
    let (Some(p), Ok(domain)) = (path.to_str(), CString::new("HEADERS")) else {
        return Vec::new();
    };
    let Ok(c) = CString::new(p) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // SAFETY: GDAL returns a NULL-terminated list of C strings we own and free with CSLDestroy.
    unsafe {
        let list = gdal_sys::VSIGetFileMetadata(c.as_ptr(), domain.as_ptr(), std::ptr::null_mut());
        if list.is_null() {
            return out;
        }
        let mut i = 0;
        loop {
            let item = *list.add(i);
            if item.is_null() {
                break;
            }
            let s = CStr::from_ptr(item).to_string_lossy().into_owned();
            let name = s.split('=').next().unwrap_or("").to_ascii_lowercase();
            if matches!(name.as_str(), "etag" | "last-modified" | "content-length") {
                out.push(format!("{name}={}", s.split_once('=').map_or("", |x| x.1)));
            }
            i += 1;
        }
        gdal_sys::CSLDestroy(list);
    }
    out.sort();
    out
}

/// What makes a remote tile the same input to a resumed ingest: its URL, size and
/// modification time, and its ETag (a content hash on S3) when the server sends one.
pub(crate) fn identity(path: &Path) -> String {
    let (len, mtime) = stat(path).unwrap_or((0, 0));
    format!(
        "{}:{len}:{mtime}:{}",
        path.display(),
        version_headers(path).join(";")
    )
}

// GDAL's VSI error state (cpl_vsi_error.h), not in gdal-sys' bindings; libgdal exports both.
extern "C" {
    fn VSIGetLastErrorMsg() -> *const std::ffi::c_char;
    fn VSIErrorReset();
}

/// Open the remote object as a file, asking GDAL to say why when it cannot (GDALOpen alone
/// only says "does not exist"): `Err` with the network file system's reason (HTTP 404,
/// no such key or bucket, connection refused).
pub(crate) fn probe(path: &Path) -> Result<(), String> {
    let Some(c) = path.to_str().and_then(|p| CString::new(p).ok()) else {
        return Err("not a valid URL".into());
    };
    // SAFETY: plain C calls with valid NUL-terminated strings; the handle is closed here.
    unsafe {
        VSIErrorReset();
        let f = gdal_sys::VSIFOpenExL(c.as_ptr(), c"rb".as_ptr(), 1);
        if !f.is_null() {
            gdal_sys::VSIFCloseL(f);
            return Ok(());
        }
        let msg = VSIGetLastErrorMsg();
        let msg = if msg.is_null() {
            String::new()
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        VSIErrorReset();
        Err(if msg.is_empty() {
            "cannot be opened".into()
        } else {
            msg
        })
    }
}

/// `msg`, with where the tile was declared when that is not the URL itself.
pub(crate) fn with_origin(msg: String, origin: &str, url: &str) -> String {
    if origin == url {
        msg
    } else {
        format!("{msg} (from {origin})")
    }
}

/// A clearer reason than GDAL's for a remote tile that did not open.
pub(crate) fn why_not_opened(gdal_says: &str) -> String {
    let s = clean(gdal_says);
    let l = s.to_ascii_lowercase();
    if l.contains("404")
        || l.contains("does not exist")
        || l.contains("no such file")
        || l.contains("cannot be opened")
    {
        format!("not found at its URL (HTTP 404): {s}")
    } else if l.contains("403") || l.contains("access denied") || l.contains("forbidden") {
        format!("access denied (HTTP 403; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or AWS_NO_SIGN_REQUEST=YES for a public bucket): {s}")
    } else if l.contains("connect")
        || l.contains("resolve")
        || l.contains("timed out")
        || l.contains("timeout")
    {
        format!("cannot be reached: {s}")
    } else {
        format!("not a raster GDAL can read: {s}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_map_to_gdal_paths_and_back() {
        let p = gdal_path("s3://bucket/a/b_final_red.tif").unwrap().unwrap();
        assert_eq!(p, PathBuf::from("/vsis3/bucket/a/b_final_red.tif"));
        assert_eq!(display_name(&p), "s3://bucket/a/b_final_red.tif");
        let p = gdal_path("http://127.0.0.1:8/x.tif").unwrap().unwrap();
        assert_eq!(p, PathBuf::from("/vsicurl/http://127.0.0.1:8/x.tif"));
        assert_eq!(display_name(&p), "http://127.0.0.1:8/x.tif");
        assert!(is_remote_path(&p));
        assert_eq!(gdal_path("tiles/x.tif").unwrap(), None);
        assert!(gdal_path("gs://b/x.tif")
            .unwrap_err()
            .contains("gs://b/x.tif"));
        assert!(gdal_path("s3://bucket").is_err());
        // Credentials in a URL never reach a message.
        let p = gdal_path("https://user:pw1234@h/x.tif").unwrap().unwrap();
        assert!(!display_name(&p).contains("pw1234"));
    }
}

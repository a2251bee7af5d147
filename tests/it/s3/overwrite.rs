//! Isolated overwrites on S3: the scenarios of `crate::overwrite` against moto. A replacement
//! is written as a whole Zarr group under `<out>/v-<id>/`, the root `zarr.json` switched to
//! name it with a conditional put, and the old objects deleted after; then its objects are
//! copied to the standard paths (for other tools), the root switched to the plain group and
//! the prefix removed.

use super::{bucket_store, endpoint, ingest_to_s3, make_bucket, Env};
use crate::overwrite::{self, Target};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

/// Keys under `prefix/` (relative), and the data prefix the root `zarr.json` names.
fn keys(store: &dyn ObjectStore, prefix: &str) -> (Vec<String>, Option<String>) {
    super::block_on(async {
        let p = ObjectPath::from(prefix);
        let mut out: Vec<String> = store
            .list(Some(&p))
            .map(|m| m.unwrap().location.as_ref()[prefix.len() + 1..].to_string())
            .collect()
            .await;
        out.sort();
        let root = match store
            .get(&ObjectPath::from(format!("{prefix}/zarr.json")))
            .await
        {
            Ok(g) => Some(g.bytes().await.unwrap()),
            Err(_) => None,
        };
        let data = root.and_then(|b| chunkcube::store::replace::data_prefix_of(&b));
        (out, data)
    })
}

fn on_s3(tag: &str, f: &dyn Fn(&Target, &std::path::Path)) {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, tag);
    let env = Env::new(&ep);
    let input = ingest_to_s3(&env, &bucket);
    let store = bucket_store(&ep, &bucket);
    let cmd = |args: &[&str]| env.command(args);
    let staged = || {
        let (k, data) = keys(store.as_ref(), "res");
        k.iter()
            .any(|k| k.starts_with("v-") && Some(k.split('/').next().unwrap()) != data.as_deref())
    };
    // Data prefixes other than the one the root names (after a finished overwrite: any).
    let leftovers = || {
        let (k, data) = keys(store.as_ref(), "res");
        let data = data.map(|d| format!("{d}/"));
        k.into_iter()
            .filter(|k| k.starts_with("v-") && data.as_ref().is_none_or(|d| !k.starts_with(d)))
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    f(
        &Target {
            input,
            out: format!("s3://{bucket}/res"),
            cmd: &cmd,
            staged: &staged,
            leftovers: &leftovers,
        },
        dir.path(),
    );
    // The replaced cube: an ordinary Zarr group at the root again (its arrays at the
    // standard paths and in its consolidated metadata, as other tools open it), no data
    // prefix named and none left.
    let (k, data) = keys(store.as_ref(), "res");
    assert_eq!(data, None, "the overwrite ends with the plain root");
    assert!(!k.iter().any(|k| k.starts_with("v-")), "{k:?}");
    let b = super::block_on(async {
        let g = store.get(&ObjectPath::from("res/zarr.json")).await.unwrap();
        g.bytes().await.unwrap()
    });
    let root: serde_json::Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(root["node_type"], "group");
    assert_eq!(root["zarr_format"], 3);
    assert!(
        root["consolidated_metadata"]["metadata"]["v"].is_object(),
        "{root}"
    );
    assert!(k.contains(&"v/zarr.json".to_string()), "{k:?}");
    let info = env.ok(&["info", &format!("s3://{bucket}/res")]);
    assert!(!info.contains("data group"), "{info}");
}

#[test]
fn a_held_overwrite_on_s3_leaves_the_old_cube_whole_until_switched_in() {
    on_s3("ow-held-writer", &|t, dir| {
        overwrite::held_writer_keeps_the_old_cube_readable(t, dir)
    });
}

#[test]
fn a_reader_held_across_an_overwrite_on_s3_fails_replaced() {
    // The first write is a cube at the root (flat); the reader held on it, its replacement
    // moves the data under a prefix and deletes the flat arrays.
    on_s3("ow-held-reader", &|t, dir| {
        overwrite::held_reader_fails_replaced(t, dir)
    });
}

#[test]
fn readers_racing_overwrites_on_s3_never_see_holes() {
    on_s3("ow-race", &|t, _| {
        overwrite::readers_racing_overwrites_never_see_holes(t, 6)
    });
}

//! Cubes on S3, against a real S3-compatible server on loopback (moto, started by
//! `scripts/test.sh`, which exports `CHUNKCUBE_TEST_S3_ENDPOINT`). Without the variable the
//! tests are skipped with a note, unless `CHUNKCUBE_REQUIRE_S3=1`, which makes them fail.
//!
//! Every test uses its own bucket and runs the `chunkcube` binary with its own environment
//! (credentials, endpoint, retry settings), so tests never share state through the process
//! environment. Two fault injectors:
//! - [`FaultProxy`]: an HTTP proxy on loopback between the binary and moto that logs every
//!   request and answers chosen ones with 503 SlowDown, 500, 403, a stall (timeout) or a body
//!   cut mid-stream. Faults at this level meet object_store's HTTP client and its retry policy
//!   (`chunkcube::store::RemoteTuning::retry_config`, the one place retries are configured), so this is
//!   where "retried and succeed", "bounded" and "4xx not retried" are proven.
//! - [`FaultStore`]: a wrapper over the `object_store::ObjectStore` trait that counts GETs per
//!   path and injects errors above the HTTP client (which no layer of ours retries again), used
//!   in-process through `Store::from_object_store`: exact GET counts with prefetching, errors
//!   naming the key, truncated objects never decoding to wrong data.

use crate::common;

use chunkcube::cube::BandReader;
use chunkcube::store::layout::read_cube_meta;
use chunkcube::store::{Store, StoreOptions};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{
    CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret access key every child process gets: distinctive, so a leak is unmistakable.
const SECRET: &str = "zzSECRETkey/ShouldNeverBePrinted+42";
const ACCESS_KEY: &str = "AKIATESTCHUNKCUBE";
/// A session token, as distinctive.
const TOKEN: &str = "FwoGZXIvYXdzTOKENShouldNeverAppear0123456789";

// ---------------------------------------------------------------------------
// The S3 server

/// The moto endpoint, or `None` (skip) when not configured; panics under `CHUNKCUBE_REQUIRE_S3=1`.
pub(crate) fn endpoint() -> Option<String> {
    match std::env::var("CHUNKCUBE_TEST_S3_ENDPOINT") {
        Ok(e) if !e.trim().is_empty() => Some(e.trim().trim_end_matches('/').to_string()),
        _ => {
            if std::env::var("CHUNKCUBE_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("CHUNKCUBE_REQUIRE_S3=1 but CHUNKCUBE_TEST_S3_ENDPOINT is not set");
            }
            eprintln!(
                "note: skipping S3 test: set CHUNKCUBE_TEST_S3_ENDPOINT (scripts/test.sh starts moto)"
            );
            None
        }
    }
}

macro_rules! require_s3 {
    () => {
        match endpoint() {
            Some(e) => e,
            None => return,
        }
    };
}

fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    rest.split('/').next().unwrap().to_string()
}

/// A raw HTTP/1.1 request; returns (status, body). moto does not check signatures.
fn http(endpoint: &str, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let hp = host_port(endpoint);
    let mut s = TcpStream::connect(&hp).expect("connect to the S3 server");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hp}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let (h, b) = split_head(&resp).expect("an HTTP response");
    let status = String::from_utf8_lossy(h)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, b.to_vec())
}

static BUCKETS: AtomicU64 = AtomicU64::new(0);

/// A fresh bucket for one test.
pub(crate) fn make_bucket(endpoint: &str, tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = BUCKETS.fetch_add(1, Ordering::SeqCst);
    let name = format!("cc-{tag}-{}-{n}-{nanos:x}", std::process::id());
    let (st, body) = http(endpoint, "PUT", &format!("/{name}"), b"");
    assert_eq!(
        st,
        200,
        "create bucket {name}: {}",
        String::from_utf8_lossy(&body)
    );
    name
}

/// The bucket as an object store, in this process (listing and comparing objects).
pub(crate) fn bucket_store(endpoint: &str, bucket: &str) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_bucket_name(bucket)
            .with_region("us-east-1")
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET)
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    chunkcube::store::runtime().block_on(f)
}

/// Every object under `prefix/` of a bucket, keyed relative to the prefix.
pub(crate) fn s3_tree(endpoint: &str, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let store = bucket_store(endpoint, bucket);
    block_on(async {
        let p = ObjectPath::from(prefix);
        let metas: Vec<ObjectMeta> = store.list(Some(&p)).map(|m| m.unwrap()).collect().await;
        let mut out = BTreeMap::new();
        for m in metas {
            let b = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            let rel = m.location.as_ref()[prefix.len() + 1..].to_string();
            out.insert(rel, b.to_vec());
        }
        out
    })
}

/// Objects compared byte for byte, the root `zarr.json` up to its `write_id` (fresh per commit).
pub(crate) fn assert_same_objects(
    what: &str,
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Vec<u8>>,
) {
    let gk: Vec<&String> = got.keys().collect();
    let wk: Vec<&String> = want.keys().collect();
    assert_eq!(gk, wk, "{what}: the same objects");
    let mut chunks = 0;
    for (k, w) in want {
        let g = &got[k];
        if k == "zarr.json" {
            let strip = |b: &[u8]| {
                let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
                if let Some(c) = v.pointer_mut("/attributes/chunkcube") {
                    c.as_object_mut().unwrap().remove("write_id");
                }
                // A job's fingerprint names its input's location (local path vs s3:// URL).
                if let Some(a) = v.pointer_mut("/attributes") {
                    a.as_object_mut().unwrap().remove("job_fingerprint");
                }
                v
            };
            assert_eq!(strip(g), strip(w), "{what}: root zarr.json");
        } else {
            assert!(
                g == w,
                "{what}: object '{k}' differs ({} vs {} bytes)",
                g.len(),
                w.len()
            );
            if k.contains("/c/") {
                chunks += 1;
            }
        }
    }
    assert!(chunks > 0, "{what}: no chunk objects compared");
}

// ---------------------------------------------------------------------------
// The binary, with its own environment

pub(crate) struct Env {
    endpoint: String,
    extra: Vec<(String, String)>,
}

impl Env {
    pub(crate) fn new(endpoint: &str) -> Env {
        Env {
            endpoint: endpoint.to_string(),
            extra: Vec::new(),
        }
    }
    pub(crate) fn with(mut self, k: &str, v: &str) -> Env {
        self.extra.push((k.into(), v.into()));
        self
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_chunkcube"));
        c.args(args);
        for v in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_DEFAULT_REGION",
            "AWS_CONFIG_FILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "CHUNKCUBE_S3_MAX_RETRIES",
            "CHUNKCUBE_S3_TIMEOUT_S",
            "CHUNKCUBE_S3_RETRY_TIMEOUT_S",
        ] {
            c.env_remove(v);
        }
        c.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_SESSION_TOKEN", TOKEN)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
            .env("AWS_ALLOW_HTTP", "true");
        for (k, v) in &self.extra {
            c.env(k, v);
        }
        c
    }

    /// Run; returns (success, stdout, stderr), asserting no secret in either stream.
    pub(crate) fn run(&self, args: &[&str]) -> (bool, String, String) {
        let o = self.command(args).output().expect("run chunkcube");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_no_secret(&format!("chunkcube {}", args.join(" ")), &out);
        assert_no_secret(&format!("chunkcube {}", args.join(" ")), &err);
        (o.status.success(), out, err)
    }

    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args);
        assert!(
            ok,
            "expected success: chunkcube {}\n--- stdout\n{out}\n--- stderr\n{err}",
            args.join(" ")
        );
        out
    }

    /// Require the error contract (exit 1, one `error: ` line naming every culprit); returns it.
    pub(crate) fn err(&self, args: &[&str], culprits: &[&str]) -> String {
        let o = self.command(args).output().expect("run chunkcube");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let ctx = format!(
            "chunkcube {}\nstatus {}\n--- stdout\n{out}\n--- stderr\n{err}",
            args.join(" "),
            o.status
        );
        assert_no_secret(&ctx, &out);
        assert_no_secret(&ctx, &err);
        assert_eq!(o.status.code(), Some(1), "expected exit status 1\n{ctx}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "expected exactly one stderr line\n{ctx}");
        assert!(lines[0].starts_with("error: "), "{ctx}");
        let lower = lines[0].to_lowercase();
        for c in culprits {
            assert!(
                lower.contains(&c.to_lowercase()),
                "the error must name {c:?}\n{ctx}"
            );
        }
        eprintln!("[error line] {}", lines[0]);
        lines[0].to_string()
    }
}

fn assert_no_secret(ctx: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "the secret key leaked in the output of {ctx}:\n{text}"
    );
    assert!(
        !text.contains("ShouldNeverBePrinted"),
        "part of the secret key leaked in {ctx}:\n{text}"
    );
    assert!(
        !text.contains("TOKENShouldNeverAppear"),
        "the session token leaked in {ctx}:\n{text}"
    );
}

pub(crate) fn ingest_args(out: &str, extra: &[&str]) -> Vec<String> {
    common::ingest_fixtures_args(Path::new(out), extra)
}

pub(crate) fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Ingest the fixtures (64×64 chunks) to `s3://bucket/fx`.
fn ingest_to_s3(env: &Env, bucket: &str) -> String {
    let url = format!("s3://{bucket}/fx");
    let a = ingest_args(&url, &["--chunks", "time=1,y=64,x=64"]);
    env.ok(&strs(&a));
    url
}

fn stats(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap();
    assert_no_secret("--stats", &text);
    serde_json::from_str(&text).unwrap()
}

// ---------------------------------------------------------------------------
// The fault proxy

#[derive(Clone, Debug)]
enum Fault {
    /// Answer with this status and S3 error code.
    Status(u16, &'static str),
    /// Read the request, answer nothing for this long, close.
    Stall(Duration),
    /// Forward, but send only half of the response body, then close.
    CutBody,
}

struct Rule {
    method: &'static str,
    path_contains: String,
    /// The fault for the n-th matching request of each path; later requests are forwarded.
    first: Vec<Fault>,
    /// A fault for every matching request.
    always: Option<Fault>,
}

#[derive(Clone, Debug)]
struct Logged {
    method: String,
    /// Path without the query string (`/bucket/prefix/key`).
    path: String,
    /// The status sent (0 for a stall, the upstream status for a cut body).
    status: u16,
    ranged: bool,
    /// The `Range` header's value (`bytes=A-B`, `bytes=-N`).
    range: Option<String>,
    fault: bool,
}

#[derive(Default)]
struct ProxyState {
    rules: Mutex<Vec<Rule>>,
    log: Mutex<Vec<Logged>>,
    per_path: Mutex<HashMap<(String, String), usize>>,
}

/// An HTTP proxy on loopback in front of the S3 server (one request per connection).
struct FaultProxy {
    url: String,
    state: Arc<ProxyState>,
}

fn split_head(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (&buf[..i + 4], &buf[i + 4..]))
}

impl FaultProxy {
    fn start(upstream: &str) -> FaultProxy {
        let upstream = host_port(upstream);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let state = Arc::new(ProxyState::default());
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                let up = upstream.clone();
                std::thread::spawn(move || {
                    let _ = serve(conn, &up, &st);
                });
            }
        });
        FaultProxy {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn rule(
        &self,
        method: &'static str,
        path_contains: &str,
        first: Vec<Fault>,
        always: Option<Fault>,
    ) {
        self.state.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            first,
            always,
        });
    }

    fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
        self.state.log.lock().unwrap().clear();
        self.state.per_path.lock().unwrap().clear();
    }

    fn log(&self) -> Vec<Logged> {
        self.state.log.lock().unwrap().clone()
    }

    /// GETs of chunk objects (keys with `/c/`) per path.
    fn chunk_gets(&self) -> BTreeMap<String, Vec<u16>> {
        let mut m: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for l in self.log() {
            if l.method == "GET" && l.path.contains("/c/") {
                m.entry(l.path).or_default().push(l.status);
            }
        }
        m
    }
}

fn serve(mut client: TcpStream, upstream: &str, st: &ProxyState) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 65536];
    let (head, mut body) = loop {
        let n = client.read(&mut tmp)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some((h, b)) = split_head(&buf) {
            break (h.to_vec(), b.to_vec());
        }
    };
    let head_text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head_text.split("\r\n");
    let request_line = lines.next().unwrap_or("").to_string();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let path = target.split('?').next().unwrap_or("").to_string();
    let mut content_length = 0usize;
    let mut ranged = false;
    let mut range = None;
    let mut headers = Vec::new();
    for l in lines {
        if l.is_empty() {
            continue;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("range:") {
            ranged = true;
            range = Some(l["range:".len()..].trim().to_string());
        }
        if lower.starts_with("connection:") || lower.starts_with("keep-alive:") {
            continue;
        }
        headers.push(l.to_string());
    }
    while body.len() < content_length {
        let n = client.read(&mut tmp)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    // Which fault, if any?
    let fault = {
        let rules = st.rules.lock().unwrap();
        let mut per = st.per_path.lock().unwrap();
        let mut f = None;
        for (i, r) in rules.iter().enumerate() {
            if r.method == method && path.contains(&r.path_contains) {
                let n = per.entry((i.to_string(), path.clone())).or_insert(0);
                let k = *n;
                *n += 1;
                f = r.first.get(k).cloned().or_else(|| r.always.clone());
                break;
            }
        }
        f
    };
    let log = |status: u16, fault: bool| {
        st.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            status,
            ranged,
            range: range.clone(),
            fault,
        });
    };
    match fault {
        Some(Fault::Status(code, s3code)) => {
            let reason = match code {
                503 => "Slow Down",
                500 => "Internal Server Error",
                403 => "Forbidden",
                _ => "Error",
            };
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3code}</Code><Message>injected by the test proxy</Message><RequestId>1</RequestId></Error>"
            );
            let resp = if method == "HEAD" {
                format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            } else {
                format!(
                    "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                    xml.len()
                )
            };
            log(code, true);
            client.write_all(resp.as_bytes())?;
            return Ok(());
        }
        Some(Fault::Stall(d)) => {
            log(0, true);
            std::thread::sleep(d);
            return Ok(());
        }
        _ => {}
    }
    // Forward.
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{request_line}\r\n");
    for h in &headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("Connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let Some((rh, rb)) = split_head(&resp) else {
        return Ok(());
    };
    let rh_text = String::from_utf8_lossy(rh).into_owned();
    let status: u16 = rh_text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut out_head = String::new();
    for (i, l) in rh_text.split("\r\n").enumerate() {
        if l.is_empty() {
            continue;
        }
        let lower = l.to_ascii_lowercase();
        if i > 0 && (lower.starts_with("connection:") || lower.starts_with("keep-alive:")) {
            continue;
        }
        out_head.push_str(l);
        out_head.push_str("\r\n");
    }
    out_head.push_str("Connection: close\r\n\r\n");
    client.write_all(out_head.as_bytes())?;
    if matches!(fault, Some(Fault::CutBody)) && rb.len() > 1 {
        log(status, true);
        client.write_all(&rb[..rb.len() / 2])?;
        client.flush()?;
        let _ = client.shutdown(std::net::Shutdown::Both);
        return Ok(());
    }
    log(status, false);
    client.write_all(rb)?;
    Ok(())
}

// ---------------------------------------------------------------------------
// The object-store wrapper

#[derive(Clone, Copy, Debug, PartialEq)]
enum WFault {
    SlowDown,
    Internal,
    Timeout,
    CutBody,
    Truncate,
}

/// Counts GETs per path and injects persistent faults, above object_store's HTTP client.
#[derive(Debug)]
struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    gets: Mutex<HashMap<String, u32>>,
    /// Every GET in order: path and the range asked for (`None`: the whole object).
    log: Mutex<Vec<(String, Option<GetRange>)>>,
    faults: Mutex<HashMap<String, WFault>>,
}

impl std::fmt::Display for FaultStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl FaultStore {
    fn new(inner: Arc<dyn ObjectStore>) -> FaultStore {
        FaultStore {
            inner,
            gets: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            faults: Mutex::new(HashMap::new()),
        }
    }
    /// The GETs logged since the last call (path, range), clearing the log.
    fn take_log(&self) -> Vec<(String, Option<GetRange>)> {
        std::mem::take(&mut *self.log.lock().unwrap())
    }
    fn gets(&self, path: &str) -> u32 {
        self.gets.lock().unwrap().get(path).copied().unwrap_or(0)
    }
    fn chunk_gets(&self) -> u32 {
        self.gets
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.contains("/c/"))
            .map(|(_, v)| v)
            .sum()
    }
    fn inject(&self, path: &str, f: WFault) {
        self.faults.lock().unwrap().insert(path.to_string(), f);
    }

    async fn get_faulty(
        &self,
        location: &ObjectPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.to_string();
        *self.gets.lock().unwrap().entry(key.clone()).or_default() += 1;
        self.log
            .lock()
            .unwrap()
            .push((key.clone(), options.range.clone()));
        let fault = self.faults.lock().unwrap().get(&key).copied();
        let generic = |msg: &str| object_store::Error::Generic {
            store: "S3",
            source: msg.to_string().into(),
        };
        match fault {
            None => self.inner.get_opts(location, options).await,
            Some(WFault::SlowDown) => Err(generic(
                "Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>",
            )),
            Some(WFault::Internal) => Err(generic(
                "Server returned non-2xx status code: 500 Internal Server Error: <Error><Code>InternalError</Code></Error>",
            )),
            Some(WFault::Timeout) => Err(generic("HTTP error: error sending request: operation timed out")),
            Some(WFault::CutBody) | Some(WFault::Truncate) => {
                let r = self.inner.get_opts(location, options).await?;
                let mut meta = r.meta.clone();
                let attributes = r.attributes.clone();
                let bytes = r.bytes().await?;
                let half = bytes.slice(..bytes.len() / 2);
                let payload: BoxStream<'static, object_store::Result<bytes::Bytes>> = if fault == Some(WFault::CutBody) {
                    let cut = generic("HTTP error: error decoding response body: connection closed before message completed");
                    futures::stream::iter(vec![Ok(half), Err(cut)]).boxed()
                } else {
                    meta.size = half.len() as u64;
                    futures::stream::iter(vec![Ok(half)]).boxed()
                };
                let range = if fault == Some(WFault::CutBody) { 0..bytes.len() as u64 } else { 0..meta.size };
                Ok(GetResult {
                    payload: GetResultPayload::Stream(payload),
                    meta,
                    range,
                    attributes,
                    extensions: Default::default(),
                })
            }
        }
    }
}

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

// The `#[async_trait]` methods of `ObjectStore`, written out (no proc-macro dependency).
impl ObjectStore for FaultStore {
    fn put_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFut<'async_trait, object_store::Result<PutResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.put_opts(location, payload, opts)
    }

    fn put_multipart_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        opts: PutMultipartOptions,
    ) -> BoxFut<'async_trait, object_store::Result<Box<dyn MultipartUpload>>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.put_multipart_opts(location, opts)
    }

    fn get_opts<'life0, 'life1, 'async_trait>(
        &'life0 self,
        location: &'life1 ObjectPath,
        options: GetOptions,
    ) -> BoxFut<'async_trait, object_store::Result<GetResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(self.get_faulty(location, options))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjectPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjectPath>> {
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&ObjectPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_delimiter<'life0, 'life1, 'async_trait>(
        &'life0 self,
        prefix: Option<&'life1 ObjectPath>,
    ) -> BoxFut<'async_trait, object_store::Result<ListResult>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.list_with_delimiter(prefix)
    }

    fn copy_opts<'life0, 'life1, 'life2, 'async_trait>(
        &'life0 self,
        from: &'life1 ObjectPath,
        to: &'life2 ObjectPath,
        options: CopyOptions,
    ) -> BoxFut<'async_trait, object_store::Result<()>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        'life2: 'async_trait,
        Self: 'async_trait,
    {
        self.inner.copy_opts(from, to, options)
    }
}

/// The fixtures ingested to a fresh bucket, opened in-process through a [`FaultStore`].
fn wrapped_fixture_cube(ep: &str, tag: &str) -> (Arc<FaultStore>, Store, String) {
    let bucket = make_bucket(ep, tag);
    let url = ingest_to_s3(&Env::new(ep), &bucket);
    let raw = bucket_store(ep, &bucket);
    let fs = Arc::new(FaultStore::new(Arc::new(PrefixStore::new(raw, "fx"))));
    let store =
        Store::from_object_store(&url, fs.clone(), false, &StoreOptions::default()).unwrap();
    (fs, store, url)
}

// ---------------------------------------------------------------------------
// Round trips

#[test]
fn ingest_and_calc_on_s3_match_local_byte_for_byte() {
    let ep = require_s3!();
    let env = Env::new(&ep);
    let bucket = make_bucket(&ep, "roundtrip");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("fx");
    let local_s = local.to_str().unwrap().to_string();

    let url = ingest_to_s3(&env, &bucket);
    let a = ingest_args(&local_s, &["--chunks", "time=1,y=64,x=64"]);
    env.ok(&strs(&a));
    let s3 = s3_tree(&ep, &bucket, "fx");
    assert_same_objects("ingest", &s3, &common::tree_bytes(&local));

    // The cube reads back: same summary from S3 and from disk (URL aside).
    let info_s3 = env.ok(&["info", &url]).replace(&url, "CUBE");
    let info_local = env.ok(&["info", &local_s]).replace(&local_s, "CUBE");
    assert_eq!(info_s3, info_local);

    // calc S3 → S3 and local → local.
    let expr = "ndvi=(nir-red)/(nir+red)";
    let out_url = format!("s3://{bucket}/ndvi");
    let out_local = tmp.path().join("ndvi");
    let st = tmp.path().join("st.json");
    env.ok(&[
        "calc",
        &url,
        "--expr",
        expr,
        "--out",
        &out_url,
        "-q",
        "--stats",
        st.to_str().unwrap(),
    ]);
    let s = stats(&st);
    assert_eq!(s["chunks_read"], 64, "red and nir, 32 chunks each: {s}");
    env.ok(&[
        "calc",
        &local_s,
        "--expr",
        expr,
        "--out",
        out_local.to_str().unwrap(),
        "-q",
    ]);
    assert_same_objects(
        "calc",
        &s3_tree(&ep, &bucket, "ndvi"),
        &common::tree_bytes(&out_local),
    );

    // A median over time whose stacks spill: under 1 MiB, the same bytes on S3 and on disk.
    let med_args = |cube: &str, out: &str, limit: &str| -> Vec<String> {
        [
            "calc",
            cube,
            "--expr",
            expr,
            "--reduce",
            "median:time",
            "--chunks",
            "time=1,y=200,x=240",
            "--memory-limit",
            limit,
            "--out",
            out,
            "-q",
            "--overwrite",
            "--stats",
            st.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let med = |cube: &str, out: &str, limit: &str| {
        env.ok(&strs(&med_args(cube, out, limit)));
        let s = stats(&st);
        let cap = chunkcube::store::parse_bytes(limit).unwrap();
        assert!(
            s["peak_tracked_bytes"].as_u64().unwrap() <= cap,
            "the median stays within {limit}: {s}"
        );
    };
    let med_url = format!("s3://{bucket}/med");
    let med_local = tmp.path().join("med");
    med(&url, &med_url, "4MiB");
    med(&local_s, med_local.to_str().unwrap(), "4MiB");
    assert_same_objects(
        "median",
        &s3_tree(&ep, &bucket, "med"),
        &common::tree_bytes(&med_local),
    );
    // Under the smallest limit the planner states (met here only by streaming each chunk
    // into its file strip by strip), the same values.
    let tight = tmp.path().join("med-tight");
    let line = env.err(
        &strs(&med_args(&local_s, tight.to_str().unwrap(), "1KiB")),
        &["--memory-limit"],
    );
    med(
        &local_s,
        tight.to_str().unwrap(),
        &common::stated_minimum(&line),
    );
    let print = |cube: &str| env.ok(&["load", cube, "--print"]).replace(cube, "CUBE");
    assert_eq!(print(&med_url), print(tight.to_str().unwrap()));

    // load a window S3 → S3, and print it from both.
    let sel = ["--isel", "time=1:2,y=50:150,x=30:200"];
    let p_s3 = env.ok(&[
        "load",
        &url,
        sel[0],
        sel[1],
        "--measurements",
        "nir",
        "--print",
    ]);
    let p_local = env.ok(&[
        "load",
        &local_s,
        sel[0],
        sel[1],
        "--measurements",
        "nir",
        "--print",
    ]);
    assert_eq!(
        p_s3.replace(&url, "CUBE"),
        p_local.replace(&local_s, "CUBE")
    );
}

#[test]
fn a_window_gets_exactly_the_chunks_it_touches() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "window");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let proxy = FaultProxy::start(&ep);
    let env = Env::new(&proxy.url);
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("st.json");
    // y 10..100 and x 70..140 with 64-pixel chunks: rows 0-1, columns 1-2, time 0.
    env.ok(&[
        "load",
        &url,
        "--isel",
        "time=0:1,y=10:100,x=70:140",
        "--measurements",
        "red",
        "--print",
        "-q",
        "--stats",
        st.to_str().unwrap(),
    ]);
    let s = stats(&st);
    assert_eq!(s["chunks_read"], 4, "{s}");
    let mut want: Vec<String> = Vec::new();
    for y in 0..2 {
        for x in 1..3 {
            want.push(format!("/{bucket}/fx/red/c/0/{y}/{x}"));
        }
    }
    want.sort();
    let gets = proxy.chunk_gets();
    let band_gets: Vec<(&String, &Vec<u16>)> = gets
        .iter()
        .filter(|(k, _)| {
            !["/x/c/", "/y/c/", "/time/c/", "/spatial_ref/c"]
                .iter()
                .any(|c| k.contains(c))
        })
        .collect();
    let got: Vec<String> = band_gets.iter().map(|(k, _)| (*k).clone()).collect();
    assert_eq!(got, want, "GETs of band chunks");
    assert!(
        band_gets.iter().all(|(_, v)| **v == vec![200]),
        "one GET each: {band_gets:?}"
    );
    // No HEAD per chunk either.
    let heads = proxy
        .log()
        .iter()
        .filter(|l| l.method == "HEAD" && l.path.contains("/c/"))
        .count();
    assert_eq!(heads, 0, "{:?}", proxy.log());
}

#[test]
fn cache_dir_second_run_fetches_no_chunk_and_never_serves_stale_objects() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "cache");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let proxy = FaultProxy::start(&ep);
    let env = Env::new(&proxy.url);
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let cache_s = cache.to_str().unwrap();
    let out = tmp.path().join("out");
    let st = tmp.path().join("st.json");
    let chain = |o: &str| {
        env.ok(&[
            "calc",
            &url,
            "--expr",
            "ndvi=(nir-red)/(nir+red)",
            "--expr",
            "d=nir-red",
            "--isel",
            "y=0:130,x=0:240",
            "--out",
            o,
            "--overwrite",
            "-q",
            "--cache-dir",
            cache_s,
            "--stats",
            st.to_str().unwrap(),
        ]);
    };
    chain(out.to_str().unwrap());
    let first: usize = proxy.chunk_gets().values().map(Vec::len).sum();
    // 2 times × 3 chunk rows × 4 chunk columns × 2 bands, plus the coordinate chunks.
    assert!(first >= 48, "first run fetched {first} chunk objects");
    let out1 = common::tree_bytes(&out);
    proxy.clear();
    chain(out.to_str().unwrap());
    assert_eq!(
        proxy.chunk_gets(),
        BTreeMap::new(),
        "the second run fetches no chunk object"
    );
    assert_eq!(stats(&st)["chunks_read"], 48);
    let out2 = common::tree_bytes(&out);
    for (k, v) in &out1 {
        if k != "zarr.json" {
            assert!(out2[k] == *v, "{k} differs between runs");
        }
    }
    // No metadata in the cache.
    let cached = common::tree_bytes(&cache);
    assert!(!cached.is_empty());
    assert!(
        cached.keys().all(|k| !k.ends_with("zarr.json")),
        "{:?}",
        cached.keys()
    );

    // Rewrite a cube in place: a reader with the same cache sees the new objects.
    let v = format!("s3://{bucket}/v");
    let print = || {
        env.ok(&[
            "load",
            &v,
            "--isel",
            "time=0:1,y=0:8,x=0:8",
            "--print",
            "-q",
            "--cache-dir",
            cache_s,
        ])
    };
    env.ok(&["calc", &url, "--expr", "v=nir+0", "--out", &v, "-q"]);
    let p_nir = print();
    proxy.clear();
    assert_eq!(print(), p_nir);
    assert_eq!(proxy.chunk_gets().len(), 0, "served from the cache");
    env.ok(&[
        "calc",
        &url,
        "--expr",
        "v=red+0",
        "--out",
        &v,
        "--overwrite",
        "-q",
    ]);
    proxy.clear();
    let p_red = print();
    assert_ne!(
        p_red, p_nir,
        "the rewritten cube must not be served from the old cache"
    );
    assert!(!proxy.chunk_gets().is_empty());
    let direct = Env::new(&ep).ok(&[
        "load",
        &v,
        "--isel",
        "time=0:1,y=0:8,x=0:8",
        "--print",
        "-q",
    ]);
    assert_eq!(p_red, direct);
}

// ---------------------------------------------------------------------------
// Sharded cubes: byte ranges of shards, coalesced

/// The sharded layout the tests ingest: inner chunks of 32×32 in shards of 128×128 (one time
/// step each), so 4×4 inner chunks per shard, indexed in C order.
const INNER: u64 = 32;
const PER_SHARD: u64 = 4;
const SHARD_ARGS: [&str; 4] = ["--chunks", "time=1,y=32,x=32", "--shards", "y=128,x=128"];
/// The prefetch layer's coalescing thresholds, restated: gaps below 256 KiB are read through,
/// a merged request spans at most 8 MiB.
const GAP: u64 = 256 << 10;

/// CRC-32C (Castagnoli), bitwise: checks the shard indexes read below independently of zarrs.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A shard object as the test sees it with plain requests: its size and, per inner chunk in C
/// order, its byte range (`None`: never written).
struct ShardObject {
    size: u64,
    entries: Vec<Option<std::ops::Range<u64>>>,
}

/// Read a shard's index with one HEAD and one plain ranged GET of its last 16·n + 4 bytes
/// (n inner chunks: offset and nbytes as u64 little-endian, then the crc32c of those bytes).
fn read_shard(store: &Arc<dyn ObjectStore>, path: &str) -> ShardObject {
    let n = (PER_SHARD * PER_SHARD) as usize;
    let p = ObjectPath::from(path);
    block_on(async {
        let size = store.head(&p).await.unwrap().size;
        let len = 16 * n as u64 + 4;
        let b = store.get_range(&p, size - len..size).await.unwrap();
        let (words, crc) = b.split_at(16 * n);
        assert_eq!(
            u32::from_le_bytes(crc.try_into().unwrap()),
            crc32c(words),
            "index checksum of {path}"
        );
        let u = |i: usize| u64::from_le_bytes(words[8 * i..8 * i + 8].try_into().unwrap());
        let entries = (0..n)
            .map(|i| match (u(2 * i), u(2 * i + 1)) {
                (u64::MAX, u64::MAX) => None,
                (o, l) => {
                    assert!(o + l <= size - len, "entry {i} of {path} inside the data");
                    Some(o..o + l)
                }
            })
            .collect();
        ShardObject { size, entries }
    })
}

/// Decode chunk `[t, y, x]` of the sharded layout: its shard key (relative to the cube) and
/// its place in the shard's index.
fn shard_slot(band: &str, idx: [u64; 3]) -> (String, usize) {
    let [t, y, x] = idx;
    let key = format!("{band}/c/{t}/{}/{}", y / PER_SHARD, x / PER_SHARD);
    (key, ((y % PER_SHARD) * PER_SHARD + x % PER_SHARD) as usize)
}

/// "bytes=A-B" → A..B+1, "bytes=-N" → None (a suffix: an index read).
fn parse_range_header(v: &str) -> Option<std::ops::Range<u64>> {
    let r = v.strip_prefix("bytes=").expect("a byte range");
    let (a, b) = r.split_once('-').expect("A-B");
    if a.is_empty() {
        return None;
    }
    Some(a.parse().unwrap()..b.parse::<u64>().unwrap() + 1)
}

/// Check the data GETs of a read of `needed` inner chunks (shard key → their byte ranges):
/// every needed range is fetched by exactly one GET; a GET starts and ends on needed bytes of
/// one shard, spans less than the whole shard object, and the bytes it reads between needed
/// ranges are gaps below [`GAP`]. Returns (data bytes fetched, needed bytes, gap bytes).
fn check_data_gets(
    gets: &[(String, std::ops::Range<u64>)],
    needed: &BTreeMap<String, Vec<std::ops::Range<u64>>>,
    shards: &BTreeMap<String, ShardObject>,
) -> (u64, u64, u64) {
    let mut covered: HashMap<(String, u64), u32> = HashMap::new();
    let (mut fetched, mut gaps) = (0, 0);
    for (key, g) in gets {
        let want = needed
            .get(key)
            .unwrap_or_else(|| panic!("GET of {key}, which holds no needed chunk"));
        let mut inside: Vec<&std::ops::Range<u64>> = want
            .iter()
            .filter(|r| r.start >= g.start && r.end <= g.end)
            .collect();
        inside.sort_by_key(|r| r.start);
        assert!(!inside.is_empty(), "GET {key} {g:?} holds no needed chunk");
        assert_eq!(
            inside[0].start, g.start,
            "GET {key} {g:?} starts on needed bytes"
        );
        assert_eq!(
            inside[inside.len() - 1].end,
            g.end,
            "GET {key} {g:?} ends on needed bytes"
        );
        for w in inside.windows(2) {
            let gap = w[1].start.saturating_sub(w[0].end);
            assert!(
                gap < GAP,
                "GET {key} {g:?} reads through a gap of {gap} bytes"
            );
            gaps += gap;
        }
        assert!(
            g.end - g.start < shards[key].size,
            "GET {key} {g:?} is not the whole shard ({} bytes)",
            shards[key].size
        );
        for r in inside {
            *covered.entry((key.clone(), r.start)).or_default() += 1;
        }
        fetched += g.end - g.start;
    }
    let mut total = 0;
    for (key, want) in needed {
        for r in want {
            let n = covered.get(&(key.clone(), r.start)).copied().unwrap_or(0);
            assert_eq!(n, 1, "inner chunk {key} {r:?} fetched {n} times");
            total += r.end - r.start;
        }
    }
    (fetched, total, gaps)
}

/// The needed inner chunks of `band` for decode chunks `idxs`, by shard key, from the indexes
/// read with plain requests (chunks never written need no bytes).
fn needed_ranges(
    raw: &Arc<dyn ObjectStore>,
    prefix: &str,
    band: &str,
    idxs: &[[u64; 3]],
    shards: &mut BTreeMap<String, ShardObject>,
) -> BTreeMap<String, Vec<std::ops::Range<u64>>> {
    let mut needed: BTreeMap<String, Vec<std::ops::Range<u64>>> = BTreeMap::new();
    for &idx in idxs {
        let (key, slot) = shard_slot(band, idx);
        let shard = shards
            .entry(key.clone())
            .or_insert_with(|| read_shard(raw, &format!("{prefix}/{key}")));
        if let Some(r) = shard.entries[slot].clone() {
            needed.entry(key).or_default().push(r);
        }
    }
    needed
}

#[test]
fn sharded_cubes_read_coalesced_byte_ranges_and_cache_them() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "shards");
    let url = format!("s3://{bucket}/sh");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("sh");
    let local_s = local.to_str().unwrap().to_string();
    let direct = Env::new(&ep);
    for out in [&url, &local_s] {
        direct.ok(&strs(&ingest_args(out, &SHARD_ARGS)));
    }
    // The same objects (not byte for byte: zarrs places the inner chunks of a shard in the
    // order their parallel encodings finish, locally too); the pixels are compared below.
    let s3_keys: Vec<String> = s3_tree(&ep, &bucket, "sh").into_keys().collect();
    let local_keys: Vec<String> = common::tree_bytes(&local).into_keys().collect();
    assert_eq!(s3_keys, local_keys);

    let proxy = FaultProxy::start(&ep);
    let env = Env::new(&proxy.url);
    let cache = tmp.path().join("cache");
    let st = tmp.path().join("st.json");
    // y 10..150, x 20..200: 5 × 7 inner chunks of 32 in 2 × 2 shards of 128, at 2 times.
    let args = |src: &str| -> Vec<String> {
        [
            "load",
            src,
            "--isel",
            "time=0:2,y=10:150,x=20:200",
            "--measurements",
            "red",
            "--print-all",
            "-q",
        ]
        .iter()
        .map(|x| x.to_string())
        .chain([
            "--cache-dir".to_string(),
            cache.to_str().unwrap().to_string(),
        ])
        .chain(["--stats".to_string(), st.to_str().unwrap().to_string()])
        .collect()
    };
    let want = direct.ok(&strs(&args(&local_s))).replace(&local_s, "CUBE");
    assert_eq!(env.ok(&strs(&args(&url))).replace(&url, "CUBE"), want);
    assert_eq!(stats(&st)["chunks_read"], 70);

    // What the window needs, from the chunk grid and the shard indexes read independently.
    let idxs: Vec<[u64; 3]> = (0..2)
        .flat_map(|t| (10 / INNER..150_u64.div_ceil(INNER)).map(move |y| (t, y)))
        .flat_map(|(t, y)| (20 / INNER..200_u64.div_ceil(INNER)).map(move |x| [t, y, x]))
        .collect();
    assert_eq!(idxs.len(), 70);
    let raw = bucket_store(&ep, &bucket);
    let mut shards = BTreeMap::new();
    let needed = needed_ranges(&raw, "sh", "red", &idxs, &mut shards);
    assert_eq!(shards.len(), 8, "2 × 2 shards at 2 times");
    // --explain tells the same requests before fetching anything: the inner chunks of a shard
    // here are a few KiB apart at most, so one ranged GET per shard holding any of them.
    let text = direct.ok(&[
        "load",
        &url,
        "--isel",
        "time=0:2,y=10:150,x=20:200",
        "--measurements",
        "red",
        "--explain",
    ]);
    let field = |name: &str| -> String {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no '{name}' in --explain: {text}"));
        line[name.len()..].trim().to_string()
    };
    assert_eq!(field("requests"), needed.len().to_string(), "{text}");
    let absent = 70 - needed.values().map(Vec::len).sum::<usize>();
    assert_eq!(
        field("stored chunks to fetch"),
        format!("70 ({absent} absent, read as fill)"),
        "{text}"
    );

    let log = proxy.log();
    let red: Vec<&Logged> = log.iter().filter(|l| l.path.contains("/red/c/")).collect();
    assert!(
        red.iter()
            .all(|l| l.method == "GET" && l.ranged && l.status == 206),
        "byte ranges only, no HEAD: {red:?}"
    );
    let prefix = format!("/{bucket}/sh/");
    let mut index_gets: BTreeMap<String, u32> = BTreeMap::new();
    let mut data_gets = Vec::new();
    for l in &red {
        let key = l.path[prefix.len()..].to_string();
        match parse_range_header(l.range.as_deref().unwrap()) {
            None => *index_gets.entry(key).or_default() += 1,
            Some(r) => data_gets.push((key, r)),
        }
    }
    assert_eq!(
        index_gets,
        shards.keys().map(|k| (k.clone(), 1)).collect(),
        "each shard's index read once"
    );
    let (fetched, total, gaps) = check_data_gets(&data_gets, &needed, &shards);
    eprintln!(
        "sharded window: {} data GETs for 70 inner chunks in 8 shards; {fetched} bytes fetched, \
         {total} needed, {gaps} of gaps",
        data_gets.len()
    );
    assert!(fetched <= total + gaps);
    // Coalesced: far fewer requests than inner chunks (one per shard and announcement).
    assert!(
        data_gets.len() <= 70 / 4,
        "{} data GETs for 70 inner chunks",
        data_gets.len()
    );

    // Again with the same cache: no GET of a chunk object.
    proxy.clear();
    assert_eq!(env.ok(&strs(&args(&url))).replace(&url, "CUBE"), want);
    assert_eq!(proxy.chunk_gets(), BTreeMap::new());
}

#[test]
fn sharded_prefetch_fetches_nearby_inner_chunks_of_a_shard_with_one_ranged_get() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "coalesce");
    let url = format!("s3://{bucket}/sh");
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("sh");
    let env = Env::new(&ep);
    for out in [url.as_str(), local.to_str().unwrap()] {
        env.ok(&strs(&ingest_args(out, &SHARD_ARGS)));
    }
    let raw = bucket_store(&ep, &bucket);
    let fs = Arc::new(FaultStore::new(Arc::new(PrefixStore::new(
        raw.clone(),
        "sh",
    ))));
    let store =
        Store::from_object_store(&url, fs.clone(), false, &StoreOptions::default()).unwrap();
    let meta = read_cube_meta(&store).unwrap();
    let red = BandReader::open(&store, meta.band("red").unwrap().clone()).unwrap();
    let local_store = Store::open(local.to_str().unwrap(), false).unwrap();
    let local_red = BandReader::open(
        &local_store,
        read_cube_meta(&local_store)
            .unwrap()
            .band("red")
            .unwrap()
            .clone(),
    )
    .unwrap();
    let prefetch = store.remote().unwrap().prefetch.clone();
    let mut shards = BTreeMap::new();

    // Announce, wait until the announced bytes are in, read, and return the GETs of chunk
    // objects: (key, Some(range)) for data, (key, None) for index reads.
    let run = |idxs: &[[u64; 3]], needed: &BTreeMap<String, Vec<std::ops::Range<u64>>>| {
        let needed_bytes: u64 = needed.values().flatten().map(|r| r.end - r.start).sum();
        let n_ranges = needed.values().map(Vec::len).sum::<usize>() as u64;
        fs.take_log();
        let before = prefetch.stats();
        red.prefetch(idxs.to_vec());
        let t0 = Instant::now();
        while prefetch.ready_bytes() < needed_bytes {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "prefetch did not complete"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for &idx in idxs {
            assert_eq!(
                red.read_chunk(idx).unwrap(),
                local_red.read_chunk(idx).unwrap(),
                "chunk {idx:?} equals the local cube's"
            );
        }
        assert_eq!(
            prefetch.ready_bytes(),
            0,
            "prefetched bytes dropped once served"
        );
        let mut data = Vec::new();
        let mut index = Vec::new();
        for (path, r) in fs.take_log() {
            if !path.contains("/c/") {
                continue;
            }
            match r {
                Some(GetRange::Bounded(r)) => data.push((path, r)),
                Some(GetRange::Suffix(_)) => index.push(path),
                other => panic!("GET {path} with {other:?}: not a byte range of a shard"),
            }
        }
        let after = prefetch.stats();
        assert_eq!(
            (
                after.range_hits - before.range_hits,
                after.range_direct - before.range_direct
            ),
            (n_ranges, index.len() as u64),
            "every read served from prefetched bytes, only index reads direct: {after:?}"
        );
        (data, index)
    };

    // 1. One row of shard (0, 0) at t=0: 4 inner chunks, adjacent in the shard (checked on
    //    its index) → exactly one ranged GET of exactly their bytes, plus the index read.
    let row: Vec<[u64; 3]> = (0..4).map(|x| [0, 0, x]).collect();
    let needed = needed_ranges(&raw, "sh", "red", &row, &mut shards);
    let ranges = &needed["red/c/0/0/0"];
    assert_eq!(
        ranges.len(),
        4,
        "the fixture's first row of chunks holds data"
    );
    assert!(
        ranges.windows(2).all(|w| w[0].end == w[1].start),
        "contiguous in the shard: {ranges:?}"
    );
    let span = ranges[0].start..ranges[3].end;
    let (data, index) = run(&row, &needed);
    assert_eq!(
        data,
        vec![("red/c/0/0/0".to_string(), span.clone())],
        "coalesced into one GET"
    );
    assert_eq!(index, vec!["red/c/0/0/0".to_string()]);
    assert!(span.end - span.start < shards["red/c/0/0/0"].size);

    // 2. A 2 × 2 block in the middle of shard (0, 1) at t=1: two runs of 2 chunks with 2 chunks
    //    between them (bytes well below the gap threshold) → one GET reading through the gap,
    //    never the whole shard; its bytes are the needed ones plus the gap.
    let block: Vec<[u64; 3]> = vec![[1, 1, 5], [1, 1, 6], [1, 2, 5], [1, 2, 6]];
    let needed = needed_ranges(&raw, "sh", "red", &block, &mut shards);
    let need: u64 = needed.values().flatten().map(|r| r.end - r.start).sum();
    let (data, index) = run(&block, &needed);
    assert_eq!(data.len(), 1, "one GET for 4 chunks of one shard: {data:?}");
    assert_eq!(index, vec!["red/c/1/0/1".to_string()]);
    let (fetched, total, gaps) = check_data_gets(&data, &needed, &shards);
    assert_eq!(total, need);
    assert!(gaps > 0, "the block is not contiguous in the shard");
    assert_eq!(fetched, total + gaps);

    // 3. Chunks of 4 shards at once, one of them with its index read already: one GET per
    //    shard, and only the 3 new indexes read.
    let spread: Vec<[u64; 3]> = vec![
        [0, 1, 0],
        [0, 0, 4],
        [0, 0, 5],
        [0, 4, 0],
        [0, 5, 1],
        [0, 4, 4],
        [0, 4, 5],
        [0, 5, 4],
        [0, 5, 5],
    ];
    let needed = needed_ranges(&raw, "sh", "red", &spread, &mut shards);
    let (data, index) = run(&spread, &needed);
    let mut per_shard: BTreeMap<&str, u32> = BTreeMap::new();
    for (k, _) in &data {
        *per_shard.entry(k.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_shard.values().copied().collect::<Vec<_>>(),
        vec![1; 4],
        "{data:?}"
    );
    assert_eq!(index.len(), 3, "new shards' indexes only: {index:?}");
    let (fetched, total, gaps) = check_data_gets(&data, &needed, &shards);
    assert!(fetched <= total + gaps);

    // 4. Unannounced reads still work: one ranged GET of the chunk's bytes each.
    fs.take_log();
    assert_eq!(
        red.read_chunk([1, 3, 3]).unwrap(),
        local_red.read_chunk([1, 3, 3]).unwrap()
    );
    let log: Vec<_> = fs
        .take_log()
        .into_iter()
        .filter(|(p, _)| p.contains("/c/"))
        .collect();
    assert!(log.len() <= 2, "{log:?}");
    assert!(log
        .iter()
        .all(|(_, r)| matches!(r, Some(GetRange::Bounded(_)) | Some(GetRange::Suffix(_)))));

    // 5. A flipped bit inside an inner chunk is an error naming the shard, never wrong pixels.
    let key = "red/c/1/1/1";
    let shard = read_shard(&raw, &format!("sh/{key}"));
    let (slot, r) = shard
        .entries
        .iter()
        .enumerate()
        .find_map(|(i, e)| e.clone().map(|r| (i, r)))
        .unwrap();
    let p = ObjectPath::from(format!("sh/{key}"));
    let mut bytes = block_on(async { raw.get(&p).await.unwrap().bytes().await.unwrap() }).to_vec();
    bytes[((r.start + r.end) / 2) as usize] ^= 0x10;
    block_on(raw.put(&p, bytes.into())).unwrap();
    let idx = [1, 4 + slot as u64 / PER_SHARD, 4 + slot as u64 % PER_SHARD];
    red.prefetch(vec![idx]);
    let e = red
        .read_chunk(idx)
        .expect_err("a corrupt inner chunk")
        .to_string();
    eprintln!("[corrupt inner chunk] {e}");
    assert!(e.contains(key), "{e}");
}

// ---------------------------------------------------------------------------
// Network faults through the proxy: object_store's retry policy

/// The red band of the fixtures over a window, printed with no fault.
fn reference_print(ep: &str, url: &str) -> String {
    Env::new(ep).ok(&[
        "load",
        url,
        "--isel",
        "time=0:2,y=0:128,x=0:128",
        "--measurements",
        "red",
        "--print",
        "-q",
    ])
}

fn print_through(env: &Env, url: &str) -> String {
    env.ok(&[
        "load",
        url,
        "--isel",
        "time=0:2,y=0:128,x=0:128",
        "--measurements",
        "red",
        "--print",
        "-q",
    ])
}

#[test]
fn throttling_and_500s_are_retried_and_succeed() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "throttle");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let want = reference_print(&ep, &url);
    let proxy = FaultProxy::start(&ep);
    proxy.rule(
        "GET",
        "/red/c/",
        vec![
            Fault::Status(503, "SlowDown"),
            Fault::Status(500, "InternalError"),
        ],
        None,
    );
    let env = Env::new(&proxy.url);
    assert_eq!(print_through(&env, &url), want);
    let gets = proxy.chunk_gets();
    let red: Vec<_> = gets.iter().filter(|(k, _)| k.contains("/red/c/")).collect();
    assert_eq!(red.len(), 8, "2 times × 2 × 2 chunks: {red:?}");
    for (k, statuses) in red {
        assert_eq!(statuses, &vec![503, 500, 200], "{k}");
    }
}

#[test]
fn timeouts_and_bodies_cut_mid_stream_are_retried_and_succeed() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "timeout");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let want = reference_print(&ep, &url);
    let proxy = FaultProxy::start(&ep);
    proxy.rule(
        "GET",
        "/red/c/0/0/",
        vec![Fault::Stall(Duration::from_secs(4)), Fault::CutBody],
        None,
    );
    proxy.rule("GET", "/red/c/1/", vec![Fault::CutBody], None);
    let env = Env::new(&proxy.url).with("CHUNKCUBE_S3_TIMEOUT_S", "1");
    let t = Instant::now();
    assert_eq!(print_through(&env, &url), want);
    assert!(t.elapsed() < Duration::from_secs(30));
    let log = proxy.log();
    for l in log
        .iter()
        .filter(|l| l.method == "GET" && l.path.contains("/red/c/0/0/"))
    {
        eprintln!("{l:?}");
    }
    let stalled = log.iter().filter(|l| l.fault && l.status == 0).count();
    let cut = log.iter().filter(|l| l.fault && l.status != 0).count();
    assert_eq!(
        stalled, 2,
        "the first GET of red/c/0/0/0 and red/c/0/0/1 stalled"
    );
    assert_eq!(
        cut, 6,
        "the bodies of 6 GETs were cut (2 after a stall, 4 at once)"
    );
    // A cut body is resumed with a ranged request for the rest.
    assert!(
        log.iter()
            .any(|l| l.method == "GET" && l.ranged && l.path.contains("/red/c/")),
        "{log:?}"
    );
}

#[test]
fn a_persistent_fault_fails_cleanly_naming_the_key_after_bounded_retries() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "persist");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let proxy = FaultProxy::start(&ep);
    proxy.rule(
        "GET",
        "/red/c/1/1/0",
        vec![],
        Some(Fault::Status(503, "SlowDown")),
    );
    let env = Env::new(&proxy.url).with("CHUNKCUBE_S3_MAX_RETRIES", "3");
    let t = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("st.json");
    let line = env.err(
        &[
            "load",
            &url,
            "--isel",
            "time=0:2,y=0:128,x=0:128",
            "--measurements",
            "red",
            "--print",
            "-q",
            "--stats",
            st.to_str().unwrap(),
        ],
        &["red/c/1/1/0", "503"],
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "bounded: {:?}",
        t.elapsed()
    );
    assert!(!line.contains(SECRET));
    let gets = proxy.chunk_gets();
    let k = format!("/{bucket}/fx/red/c/1/1/0");
    assert_eq!(gets[&k], vec![503; 4], "1 attempt + 3 retries");

    // The same through calc writing to S3: the output never looks complete.
    let out = format!("s3://{bucket}/out");
    env.err(
        &["calc", &url, "--expr", "v=red*2", "--out", &out, "-q"],
        &["red/c/1/1/0"],
    );
    Env::new(&ep).err(&["info", &out], &["not a chunkcube cube"]);
}

#[test]
fn client_errors_are_not_retried() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "forbidden");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let proxy = FaultProxy::start(&ep);
    proxy.rule(
        "GET",
        "/red/c/0/1/1",
        vec![],
        Some(Fault::Status(403, "AccessDenied")),
    );
    proxy.rule(
        "GET",
        "/nir/c/0/1/1",
        vec![],
        Some(Fault::Status(400, "InvalidRequest")),
    );
    let env = Env::new(&proxy.url);
    env.err(
        &[
            "load",
            &url,
            "--isel",
            "time=0:1,y=64:128,x=64:128",
            "--measurements",
            "red",
            "--print",
            "-q",
        ],
        &["red/c/0/1/1", "403"],
    );
    env.err(
        &[
            "load",
            &url,
            "--isel",
            "time=0:1,y=64:128,x=64:128",
            "--measurements",
            "nir",
            "--print",
            "-q",
        ],
        &["nir/c/0/1/1", "400"],
    );
    let gets = proxy.chunk_gets();
    assert_eq!(
        gets[&format!("/{bucket}/fx/red/c/0/1/1")],
        vec![403],
        "403 is not retried"
    );
    assert_eq!(
        gets[&format!("/{bucket}/fx/nir/c/0/1/1")],
        vec![400],
        "400 is not retried"
    );
}

#[test]
fn a_truncated_object_is_an_error_never_wrong_data() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "trunc");
    let url = ingest_to_s3(&Env::new(&ep), &bucket);
    let store = bucket_store(&ep, &bucket);
    for key in ["fx/red/c/0/0/1", "fx/nir/c/0/0/1"] {
        let p = ObjectPath::from(key);
        let full = block_on(async { store.get(&p).await.unwrap().bytes().await.unwrap() });
        let cut = if key.contains("red") {
            full.slice(..full.len() / 2)
        } else {
            full.slice(..full.len() - 1)
        };
        block_on(store.put(&p, cut.into())).unwrap();
    }
    let env = Env::new(&ep);
    env.err(
        &[
            "load",
            &url,
            "--isel",
            "time=0:1,y=0:64,x=64:128",
            "--measurements",
            "red",
            "--print",
            "-q",
        ],
        &["red/c/0/0/1"],
    );
    env.err(
        &[
            "load",
            &url,
            "--isel",
            "time=0:1,y=0:64,x=64:128",
            "--measurements",
            "nir",
            "--print",
            "-q",
        ],
        &["nir/c/0/0/1"],
    );
    let tmp = tempfile::tempdir().unwrap();
    env.err(
        &[
            "calc",
            &url,
            "--expr",
            "n=(nir-red)/(nir+red)",
            "--out",
            tmp.path().join("o").to_str().unwrap(),
            "-q",
        ],
        &["c/0/0/1"],
    );
}

/// Issue 16 on S3: a deleted chunk object or coordinate is an error naming its key (the
/// chunk manifest lists it), and `verify --deep` finds each loss, one line per key.
#[test]
fn a_deleted_object_on_s3_is_an_error_and_verify_lists_it() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "lost");
    let env = Env::new(&ep);
    let url = ingest_to_s3(&env, &bucket);
    let (ok, _, err) = env.run(&["verify", &url, "--deep", "-q"]);
    assert!(ok && err.contains("no problem"), "{err}");
    let store = bucket_store(&ep, &bucket);
    for key in ["fx/red/c/1/1/2", "fx/y/c/0"] {
        block_on(store.delete(&ObjectPath::from(key))).unwrap();
    }
    env.err(&["info", &url], &["y/c/0"]);
    let (ok, out, _) = env.run(&["verify", &url, "--deep", "-q"]);
    assert!(!ok);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "red/c/1/1/2: chunk listed in the manifest is missing",
            "y/c/0: chunk listed in the manifest is missing"
        ],
        "{out}"
    );
}

/// One writer per output on S3 too: the lock object is created with a conditional put, a live
/// holder's lock refuses a second writer, and the lock is gone after the run.
#[test]
fn a_second_writer_to_one_s3_output_is_refused() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "lock");
    let env = Env::new(&ep);
    let url = ingest_to_s3(&env, &bucket);
    let store = bucket_store(&ep, &bucket);
    assert!(
        s3_tree(&ep, &bucket, "")
            .keys()
            .all(|k| !k.ends_with("chunkcube-lock")),
        "the ingest released its lock"
    );
    let out = format!("s3://{bucket}/res");
    let holder = format!(
        r#"{{"host":"{}","pid":{},"started":0}}"#,
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        std::process::id()
    );
    let lock = ObjectPath::from("res.chunkcube-lock");
    block_on(store.put(&lock, holder.into_bytes().into())).unwrap();
    let args = ["calc", &url, "--expr", "v=nir-red", "--out", &out, "-q"];
    env.err(
        &args,
        &[
            "being written by another run",
            &format!("pid {}", std::process::id()),
        ],
    );
    assert!(
        s3_tree(&ep, &bucket, "res/").is_empty(),
        "nothing written while locked"
    );
    block_on(store.delete(&lock)).unwrap();
    env.ok(&args);
    assert!(
        matches!(
            block_on(store.head(&lock)),
            Err(object_store::Error::NotFound { .. })
        ),
        "the lock is released after the run"
    );
}

// ---------------------------------------------------------------------------
// Faults above the HTTP client, in-process

#[test]
fn object_store_wrapper_counts_one_get_per_chunk_with_prefetch() {
    let ep = require_s3!();
    let (fs, store, _) = wrapped_fixture_cube(&ep, "wrapcount");
    let meta = read_cube_meta(&store).unwrap();
    let red = BandReader::open(&store, meta.band("red").unwrap().clone()).unwrap();
    let nir = BandReader::open(&store, meta.band("nir").unwrap().clone()).unwrap();
    let before = fs.chunk_gets();
    let idx: Vec<[u64; 3]> = (0..2)
        .flat_map(|t| (0..4).flat_map(move |y| (0..4).map(move |x| [t, y, x])))
        .collect();
    let keys: Vec<String> = idx
        .iter()
        .flat_map(|i| [red.chunk_key(*i), nir.chunk_key(*i)])
        .collect();
    store.prefetch(keys.clone());
    std::thread::scope(|s| {
        for part in idx.chunks(8) {
            let (red, nir) = (&red, &nir);
            s.spawn(move || {
                for i in part {
                    red.read_chunk(*i).unwrap();
                    nir.read_chunk(*i).unwrap();
                }
            });
        }
    });
    assert_eq!(fs.chunk_gets() - before, 64);
    for k in &keys {
        assert_eq!(fs.gets(k), 1, "{k}");
    }
    assert_eq!(store.counters().snapshot().chunk_gets, 64);
    let r = store.remote().unwrap().prefetch.stats();
    assert_eq!(r.prefetched, 64);
    assert_eq!(r.hits, 64, "{r:?}");
    assert_eq!(store.remote().unwrap().prefetch.ready_bytes(), 0);
}

#[test]
fn object_store_wrapper_faults_fail_cleanly_naming_the_key() {
    let ep = require_s3!();
    let (fs, store, _) = wrapped_fixture_cube(&ep, "wrapfault");
    let meta = read_cube_meta(&store).unwrap();
    let red = BandReader::open(&store, meta.band("red").unwrap().clone()).unwrap();
    let cases = [
        ([0, 0, 0], WFault::SlowDown, "503"),
        ([0, 0, 1], WFault::Internal, "500"),
        ([0, 0, 2], WFault::Timeout, "timed out"),
        ([0, 0, 3], WFault::CutBody, "connection closed"),
        ([0, 1, 0], WFault::Truncate, ""),
    ];
    for (i, (idx, fault, what)) in cases.iter().enumerate() {
        let key = red.chunk_key(*idx);
        fs.inject(&key, *fault);
        // Half of the cases through a prefetch: its error surfaces at the read of the key.
        if i % 2 == 0 {
            store.prefetch(vec![key.clone()]);
        }
        let e = red
            .read_chunk(*idx)
            .expect_err("a faulty chunk must not decode")
            .to_string();
        eprintln!("[{fault:?}] {e}");
        assert!(e.contains(&key), "the error names the key: {e}");
        assert!(e.contains(what), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        let n = fs.gets(&key);
        assert_eq!(
            n, 1,
            "{fault:?}: no retry layer above object_store's client ({n} GETs)"
        );
    }
    // The other chunks still read, and a truncated chunk is never data: try again.
    assert!(red.read_chunk([0, 1, 0]).is_err());
    red.read_chunk([1, 0, 0]).unwrap();
}

// ---------------------------------------------------------------------------
// Bad input

#[test]
fn bad_input_is_one_clear_line_without_secrets() {
    let ep = require_s3!();
    let bucket = make_bucket(&ep, "bad");
    let env = Env::new(&ep);
    let url = ingest_to_s3(&env, &bucket);
    let tmp = tempfile::tempdir().unwrap();
    let st = tmp.path().join("st.json");
    let sts = st.to_str().unwrap();

    // A missing bucket, for reading and writing.
    let nob = "s3://no-such-bucket-chunkcube/fx";
    env.err(
        &["info", nob],
        &["bucket", "no-such-bucket-chunkcube", "does not exist"],
    );
    env.err(
        &["load", nob, "--print", "--stats", sts],
        &["no-such-bucket-chunkcube", "does not exist"],
    );
    env.err(
        &["calc", &url, "--expr", "v=red", "--out", nob, "-q"],
        &["no-such-bucket-chunkcube", "does not exist"],
    );
    let a = ingest_args(nob, &[]);
    env.err(&strs(&a), &["no-such-bucket-chunkcube", "does not exist"]);

    // A prefix without a cube.
    env.err(
        &["info", &format!("s3://{bucket}/nothing/here")],
        &["not a chunkcube cube", "nothing/here"],
    );

    // Malformed URLs.
    env.err(&["info", "s3://"], &["invalid cube URL"]);
    env.err(
        &["info", "s3://Bad_Bucket/x"],
        &["invalid cube URL", "bucket"],
    );
    env.err(
        &["info", &format!("s3://{bucket}/../x")],
        &["invalid cube URL", ".."],
    );
    let presigned = format!("s3://{bucket}/fx?X-Amz-Credential=AKIAX&X-Amz-Signature={SECRET}");
    let line = env.err(&["info", &presigned], &["invalid cube URL"]);
    assert!(!line.contains("AKIAX"), "{line}");
    env.err(
        &["info", &format!("s3://user:{SECRET}@{bucket}/fx")],
        &["invalid cube URL"],
    );

    // An unreachable endpoint: nothing listens on this port.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = Env::new(&format!("http://127.0.0.1:{port}"));
    for args in [
        vec!["info", url.as_str()],
        vec!["load", url.as_str(), "--print", "--stats", sts],
        vec![
            "calc",
            url.as_str(),
            "--expr",
            "v=red",
            "--out",
            tmp.path().join("o").to_str().unwrap(),
            "-q",
        ],
    ] {
        let t = Instant::now();
        dead.err(&args, &[&format!("127.0.0.1:{port}"), "cannot reach"]);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{args:?} took {:?}",
            t.elapsed()
        );
    }
    let a = ingest_args(&url, &["--overwrite"]);
    dead.err(&strs(&a), &[&format!("127.0.0.1:{port}")]);

    // Wrong credentials (the server refuses them; moto itself accepts any): a clear hint.
    let proxy = FaultProxy::start(&ep);
    proxy.rule(
        "GET",
        "/zarr.json",
        vec![],
        Some(Fault::Status(403, "InvalidAccessKeyId")),
    );
    let refused = Env::new(&proxy.url);
    refused.err(
        &["info", &url],
        &["access denied", "AWS_SECRET_ACCESS_KEY", "403"],
    );
    refused.err(
        &["load", &url, "--print", "--stats", sts],
        &["access denied"],
    );

    // The --stats of a successful S3 run carries no secret either.
    env.ok(&[
        "load",
        &url,
        "--isel",
        "time=0:1,y=0:10,x=0:10",
        "--print",
        "-q",
        "--stats",
        sts,
    ]);
    stats(&st);
}

#[test]
fn store_api_reports_missing_buckets() {
    let ep = require_s3!();
    let raw = bucket_store(&ep, "no-such-bucket-api");
    let e = Store::from_object_store(
        "s3://no-such-bucket-api/c",
        Arc::new(PrefixStore::new(raw, "c")),
        false,
        &StoreOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("does not exist"), "{e}");
}

#[test]
fn zarr_v2_stores_on_s3_open_and_compute() {
    let ep = require_s3!();
    if !common::python::python_ready("zarr_v2_stores_on_s3_open_and_compute") {
        return;
    }
    let env = Env::new(&ep);
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("v2.zarr");
    crate::interop::write_v2_store(&local, true);
    let bucket = make_bucket(&ep, "v2");
    let store = bucket_store(&ep, &bucket);
    for (key, bytes) in common::tree_bytes(&local) {
        block_on(store.put(&ObjectPath::from(format!("v2/{key}")), bytes.into())).unwrap();
    }
    let url = format!("s3://{bucket}/v2");
    let info: serde_json::Value = serde_json::from_str(&env.ok(&["info", &url, "--json"])).unwrap();
    assert_eq!(info["zarr_format"], 2, "{info}");
    assert_eq!(info["crs"], "EPSG:6933", "{info}");
    // The same result as from the local copy of the store.
    let expr = ["--expr", "ndvi=(nir-red)/(nir+red)", "--quiet", "--out"];
    let from_s3 = tmp.path().join("s3.zarr");
    let from_local = tmp.path().join("local.zarr");
    let mut a = vec!["calc", url.as_str()];
    a.extend(expr);
    a.push(common::s(&from_s3));
    env.ok(&a);
    let mut b = vec!["calc", common::s(&local)];
    b.extend(expr);
    b.push(common::s(&from_local));
    env.ok(&b);
    assert_eq!(
        common::load_band::<f32>(&from_s3, "ndvi").mapv(f32::to_bits),
        common::load_band::<f32>(&from_local, "ndvi").mapv(f32::to_bits)
    );
}

// Isolated overwrites on S3 (the scenarios of `crate::overwrite`).
mod overwrite;

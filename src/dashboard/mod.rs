//! The dashboard (`--dashboard [ADDR]`): a small HTTP server inside the process, on the
//! process's tokio runtime, showing a [`LiveStatus`] as it changes.
//!
//! - `/` one self-contained page (no external assets; it works offline) that polls the two
//!   JSON routes: progress per layer, throughput, memory against the limit, the task stream,
//!   the plan's `--explain` numbers and, at the end, the summary;
//! - `/status.json` the [`StatusReport`](crate::progress::StatusReport) now;
//! - `/tasks.json?since=N` the tasks finished since the `N`th (the task stream).
//!
//! It sits above exec and ingest and only reads the live status they update; nothing below it
//! knows it exists.

use crate::progress::LiveStatus;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// Where the dashboard listens unless told otherwise (loopback: never reachable from
/// another machine unless the user gives such an address).
pub const DEFAULT_ADDR: &str = "127.0.0.1:8787";

/// The page, embedded in the binary.
const PAGE: &str = include_str!("page.html");

/// Errors starting the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    /// The address does not parse or resolve.
    #[error("invalid --dashboard '{addr}': {msg}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        msg: String,
    },
    /// The address cannot be bound (in use, not ours).
    #[error("--dashboard {addr}: cannot listen: {source}")]
    Bind {
        /// The address given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `--dashboard`'s address: `HOST:PORT`, `[V6]:PORT` or a bare `PORT` (on 127.0.0.1).
pub fn parse_addr(addr: &str) -> Result<SocketAddr, DashboardError> {
    let bad = |msg: &str| DashboardError::Address {
        addr: addr.to_string(),
        msg: msg.to_string(),
    };
    let a = addr.trim();
    if let Ok(port) = a.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(s) = a.parse::<SocketAddr>() {
        return Ok(s);
    }
    if !a.contains(':') {
        return Err(bad("expected HOST:PORT or PORT, e.g. 127.0.0.1:8787"));
    }
    let mut it = a
        .to_socket_addrs()
        .map_err(|e| bad(&format!("expected HOST:PORT ({e})")))?;
    it.next()
        .ok_or_else(|| bad("the host resolves to no address"))
}

/// A running dashboard; stops when dropped.
pub struct Dashboard {
    addr: SocketAddr,
    status: Arc<LiveStatus>,
    server: tokio::task::JoinHandle<()>,
}

impl Dashboard {
    /// Listen on `addr` (port 0: any free port) and serve `status`.
    pub fn start(addr: &str, status: Arc<LiveStatus>) -> Result<Dashboard, DashboardError> {
        let sock = parse_addr(addr)?;
        let bind_err = |source| DashboardError::Bind {
            addr: addr.to_string(),
            source,
        };
        // Bound here, synchronously, so a port in use is an error before any work starts.
        let std_listener = std::net::TcpListener::bind(sock).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local = std_listener.local_addr().map_err(bind_err)?;
        let rt = crate::store::runtime();
        let listener = {
            let _guard = rt.enter();
            tokio::net::TcpListener::from_std(std_listener).map_err(bind_err)?
        };
        let st = status.clone();
        let server = rt.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&st, &req)) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    // A client that goes away mid-response is its own business.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                });
            }
        });
        Ok(Dashboard {
            addr: local,
            status,
            server,
        })
    }
    /// The address listened on (the actual port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    /// The status served.
    pub fn status(&self) -> &Arc<LiveStatus> {
        &self.status
    }
    /// Keep serving for `linger` (the page shows the final summary meanwhile), then stop.
    pub fn close(self, linger: Duration) {
        if !linger.is_zero() {
            std::thread::sleep(linger);
        }
        drop(self);
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The response to one request.
fn respond<B>(st: &LiveStatus, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/" | "/index.html" => {
            // The status as of now goes in with the page, so it shows numbers before its first
            // poll (and a browser that dumps the DOM at load sees them). `<` is escaped so the
            // JSON cannot end the script element.
            let json = serde_json::to_string(&st.report())
                .unwrap_or_else(|_| "null".into())
                .replace('<', "\\u003c");
            let body = PAGE.replace("/*INITIAL_STATUS*/null", &json);
            let csp = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:";
            ok("text/html; charset=utf-8", body.into_bytes())
                .map(|mut r| {
                    r.headers_mut().insert(
                        "content-security-policy",
                        hyper::header::HeaderValue::from_static(csp),
                    );
                    r
                })
                .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n"))
        }
        "/status.json" => json(&st.report()),
        "/tasks.json" => {
            let since = req
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("since=")))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            json(&st.tasks_since(since))
        }
        _ => plain(StatusCode::NOT_FOUND, "not found: try / or /status.json\n"),
    }
}

/// A 200 response that no cache keeps.
fn ok(ctype: &'static str, body: Vec<u8>) -> Option<Response<Full<Bytes>>> {
    Response::builder()
        .header("content-type", ctype)
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .ok()
}

fn json<T: serde::Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(v) {
        Ok(b) => ok("application/json", b)
            .unwrap_or_else(|| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n")),
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}\n")),
    }
}

fn plain(code: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_string())));
    *r.status_mut() = code;
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_default_to_loopback() {
        assert_eq!(parse_addr("8787").unwrap().to_string(), "127.0.0.1:8787");
        assert_eq!(parse_addr("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(parse_addr("[::1]:9000").unwrap().to_string(), "[::1]:9000");
        assert!(parse_addr(DEFAULT_ADDR).unwrap().ip().is_loopback());
        let e = parse_addr("tiles/").unwrap_err().to_string();
        assert!(e.contains("'tiles/'") && e.contains("HOST:PORT"), "{e}");
        assert!(parse_addr("127.0.0.1:99999").is_err());
    }
}

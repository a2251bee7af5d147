//! Remote-store tuning, read from the environment ONCE into [`RemoteTuning`]: the cap of
//! requests in flight, the prefetch byte bound, the retry policy and the timeouts. Everything
//! that talks to S3 takes its numbers from here, so there is one place to look.

use super::parse_bytes;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Default bound of prefetched-but-unconsumed bytes.
pub const DEFAULT_PREFETCH_BYTES: u64 = 256 << 20;

/// How remote stores behave (see [`RemoteTuning::from_env`] for the variables and defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTuning {
    /// The process-wide cap of requests in flight, prefetches and direct reads alike
    /// (`CHUNKCUBE_S3_CONCURRENCY`; default 3x the cores, at least 8).
    pub concurrency: usize,
    /// Prefetched-but-unconsumed bytes held at most (`CHUNKCUBE_S3_PREFETCH_BYTES`, 256 MiB).
    pub prefetch_bytes: u64,
    /// Retries of a failed request (`CHUNKCUBE_S3_MAX_RETRIES`, 6).
    pub max_retries: usize,
    /// No new retry once this long has passed since the first attempt
    /// (`CHUNKCUBE_S3_RETRY_TIMEOUT_S`, 15 s).
    pub retry_timeout: Duration,
    /// A whole request gives up after this long (`CHUNKCUBE_S3_TIMEOUT_S`, 30 s; retried).
    pub request_timeout: Duration,
    /// Connecting gives up after this long (3 s), so an unreachable endpoint fails within
    /// about 20 s, retries included.
    pub connect_timeout: Duration,
    /// Plain-HTTP endpoints allowed (`AWS_ALLOW_HTTP=true` or `1`).
    pub allow_http: bool,
}

impl RemoteTuning {
    /// The tuning the environment asks for (unset or unparsable values take the defaults).
    pub fn from_env() -> RemoteTuning {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// The tuning given a variable lookup (tests pass their own).
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> RemoteTuning {
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<u64>().ok());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        RemoteTuning {
            concurrency: num("CHUNKCUBE_S3_CONCURRENCY")
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .unwrap_or((3 * cores).max(8)),
            prefetch_bytes: var("CHUNKCUBE_S3_PREFETCH_BYTES")
                .and_then(|v| parse_bytes(&v))
                .unwrap_or(DEFAULT_PREFETCH_BYTES),
            max_retries: num("CHUNKCUBE_S3_MAX_RETRIES").unwrap_or(6) as usize,
            retry_timeout: Duration::from_secs(num("CHUNKCUBE_S3_RETRY_TIMEOUT_S").unwrap_or(15)),
            request_timeout: Duration::from_secs(num("CHUNKCUBE_S3_TIMEOUT_S").unwrap_or(30)),
            connect_timeout: Duration::from_secs(3),
            allow_http: var("AWS_ALLOW_HTTP")
                .map(|v| v.eq_ignore_ascii_case("true") || v.trim() == "1")
                .unwrap_or(false),
        }
    }

    /// The retry policy of every S3 request, handed to object_store's client, which retries
    /// 5xx, 429/503 throttling (`SlowDown`), timeouts, connection errors and bodies cut
    /// mid-stream, with jittered exponential backoff from 100 ms up to 5 s; other 4xx are not
    /// retried. No layer of ours retries again on top of it.
    pub fn retry_config(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: self.max_retries,
            retry_timeout: self.retry_timeout,
        }
    }

    /// HTTP client options (timeouts, plain HTTP, connection pool).
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_pool_max_idle_per_host(64)
    }
}

/// The process's tuning, read from the environment on first use.
pub fn tuning() -> &'static RemoteTuning {
    static T: OnceLock<RemoteTuning> = OnceLock::new();
    T.get_or_init(RemoteTuning::from_env)
}

/// The one semaphore behind [`RemoteTuning::concurrency`].
pub(crate) fn permits() -> &'static Arc<tokio::sync::Semaphore> {
    static SEM: OnceLock<Arc<tokio::sync::Semaphore>> = OnceLock::new();
    SEM.get_or_init(|| Arc::new(tokio::sync::Semaphore::new(tuning().concurrency)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let d = RemoteTuning::from_lookup(|_| None);
        assert!(d.concurrency >= 8);
        assert_eq!(d.prefetch_bytes, DEFAULT_PREFETCH_BYTES);
        assert_eq!((d.max_retries, d.retry_timeout.as_secs()), (6, 15));
        assert!(!d.allow_http);
        let t = RemoteTuning::from_lookup(|k| {
            Some(
                match k {
                    "CHUNKCUBE_S3_CONCURRENCY" => "5",
                    "CHUNKCUBE_S3_PREFETCH_BYTES" => "64MiB",
                    "CHUNKCUBE_S3_MAX_RETRIES" => "2",
                    "CHUNKCUBE_S3_RETRY_TIMEOUT_S" => "3",
                    "CHUNKCUBE_S3_TIMEOUT_S" => "7",
                    "AWS_ALLOW_HTTP" => "TRUE",
                    _ => return None,
                }
                .to_string(),
            )
        });
        assert_eq!(t.concurrency, 5);
        assert_eq!(t.prefetch_bytes, 64 << 20);
        assert_eq!(t.retry_config().max_retries, 2);
        assert_eq!(t.retry_config().retry_timeout.as_secs(), 3);
        assert_eq!(t.request_timeout.as_secs(), 7);
        assert!(t.allow_http);
        // Nonsense falls back to the defaults rather than to zero.
        let bad = RemoteTuning::from_lookup(|k| {
            (k == "CHUNKCUBE_S3_CONCURRENCY" || k == "CHUNKCUBE_S3_PREFETCH_BYTES")
                .then(|| "0x".to_string())
        });
        assert_eq!(bad.concurrency, d.concurrency);
        assert_eq!(bad.prefetch_bytes, DEFAULT_PREFETCH_BYTES);
    }
}

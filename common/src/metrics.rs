//! Prometheus metrics: the plain-HTTP endpoint every daemon can serve (`metrics_addr`), the
//! per-method RPC latency histograms the serve path records, and a small builder for the
//! gauges and counters a daemon reads from its own state at scrape time.
//!
//! Two registries are encoded into one exposition (OpenMetrics text, prometheus-client):
//! - a *persistent* one, built once at start, for values that are recorded as they happen
//!   (RPC latencies, repair counters);
//! - a *snapshot* one, built fresh at every scrape by the daemon's render function from a
//!   typed view of its state (node capacity, chunk counts, health states). A value that is
//!   already a running total elsewhere (a node's read count) is exported as a counter with
//!   that total, so nothing is counted twice.
//!
//! The endpoint never serves anything but `GET /metrics` (and a one-line index at `/`). It is
//! plain HTTP without authentication, which is why it is off unless `metrics_addr` is set:
//! metrics name nodes, addresses and counts (never file names, data or keys), and whoever
//! enables it chooses who can reach that address. This module must never block the async
//! runtime: render functions that touch a disk or a database do so on a blocking thread.

use anyhow::Context as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use prometheus_client;

/// The content type of the OpenMetrics text format prometheus-client writes; Prometheus
/// negotiates and parses it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Longest time a scraper may take to send its request headers: a slow or idle connection
/// holds nothing but its socket for this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Smallest RPC latency bucket: 50 µs, about one loopback round trip of a tiny request.
const RPC_BUCKET_START_SECONDS: f64 = 50e-6;
/// RPC latency buckets, doubling from 50 µs: the last is 50 µs × 2^17 ≈ 6.6 s, past every
/// default RPC deadline, so a timed-out call still lands in a finite bucket.
const RPC_BUCKETS: u16 = 18;

/// Label pairs of one series.
pub type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        RPC_BUCKET_START_SECONDS,
        2.0,
        RPC_BUCKETS,
    ))
}

/// Per-method latency of the RPCs a server answers (`rpc_request_duration_seconds`, label
/// `method` such as `MasterFs.lookup`). Recorded once, in the serve path
/// ([`crate::rpc::RoleGuard`]), for every method; cheap to clone.
#[derive(Clone)]
pub struct RpcMetrics {
    latency: HistogramFamily,
}

impl RpcMetrics {
    /// Creates the histogram family and registers it in `registry`.
    pub fn register(registry: &mut Registry) -> RpcMetrics {
        let latency: HistogramFamily = Family::new_with_constructor(rpc_histogram);
        registry.register(
            "rpc_request_duration_seconds",
            "Time from receiving an RPC to its answer, per method",
            latency.clone(),
        );
        RpcMetrics { latency }
    }

    /// Records one answered call of `method`.
    pub fn observe(&self, method: &str, elapsed: Duration) {
        self.latency
            .get_or_create(&labels(&[("method", method)]))
            .observe(elapsed.as_secs_f64());
    }
}

/// Gauges and counters built from a daemon's state at scrape time. Each metric name is
/// registered once, with one series per distinct label set.
pub struct Snapshot {
    registry: Registry,
    gauges: HashMap<String, Family<Labels, Gauge<f64, AtomicU64>>>,
    counters: HashMap<String, Family<Labels, Counter>>,
}

impl Snapshot {
    /// An empty snapshot whose metric names all start with `prefix_`.
    pub fn new(prefix: &str) -> Snapshot {
        Snapshot {
            registry: Registry::with_prefix(prefix),
            gauges: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// Sets gauge `name{labels}` to `value`. A name is used either always with labels or
    /// once without.
    pub fn gauge(&mut self, name: &str, help: &str, labels_: &[(&str, &str)], value: f64) {
        if labels_.is_empty() {
            let gauge = Gauge::<f64, AtomicU64>::default();
            gauge.set(value);
            self.registry.register(name, help, gauge);
            return;
        }
        let registry = &mut self.registry;
        let family = self.gauges.entry(name.to_string()).or_insert_with(|| {
            let family = Family::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels(labels_)).set(value);
    }

    /// Sets counter `name_total{labels}` to the running total `value` (kept by the daemon).
    /// A name is used either always with labels or once without.
    pub fn counter(&mut self, name: &str, help: &str, labels_: &[(&str, &str)], value: u64) {
        if labels_.is_empty() {
            let counter = Counter::<u64>::default();
            counter.inc_by(value);
            self.registry.register(name, help, counter);
            return;
        }
        let registry = &mut self.registry;
        let family = self.counters.entry(name.to_string()).or_insert_with(|| {
            let family = Family::default();
            registry.register(name, help, family.clone());
            family
        });
        family.get_or_create(&labels(labels_)).inc_by(value);
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// The exposition of `registries`, in order, with the closing `# EOF` line.
pub fn encode(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        // Writing into a String cannot fail; a metric that could not be encoded would only
        // lose its own lines, never the scrape.
        if let Err(e) = prometheus_client::encoding::text::encode_registry(&mut out, registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// Produces one exposition per scrape.
pub type Render = Arc<dyn Fn() -> BoxFuture<'static, String> + Send + Sync>;

/// A running metrics endpoint; dropping it stops it (and closes its connections).
pub struct MetricsServer {
    /// The bound address (the real port when `metrics_addr` asked for port 0).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `GET /metrics` with `render`'s text until the returned server is
/// dropped.
pub async fn serve(addr: SocketAddr, render: Render) -> anyhow::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind the metrics endpoint {addr}"))?;
    let addr = listener
        .local_addr()
        .context("read the metrics endpoint's address")?;
    let task = tokio::spawn(accept_loop(listener, render));
    Ok(MetricsServer { addr, task })
}

async fn accept_loop(listener: TcpListener, render: Render) {
    // Connections live in this set: aborting the loop drops the set, which aborts them.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let render = render.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| respond(req, render.clone()));
                    let served = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_READ_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn respond(
    req: Request<Incoming>,
    render: Render,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(StatusCode::OK, CONTENT_TYPE, render().await),
        (&Method::GET, "/") => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "MosaicFS metrics: GET /metrics\n".to_string(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: GET /metrics\n".to_string(),
        ),
    })
}

/// Fetches `http://addr/metrics` within `timeout` (tests and tools; Prometheus does this).
pub async fn scrape(addr: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let fetch = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to the metrics endpoint {addr}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        let driver = tokio::spawn(connection);
        let request = Request::builder()
            .method(Method::GET)
            .uri("/metrics")
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .context("build the request")?;
        let response = sender.send_request(request).await.context("GET /metrics")?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("read the response body")?
            .to_bytes();
        driver.abort();
        if status != StatusCode::OK {
            anyhow::bail!("GET /metrics answered {status}");
        }
        String::from_utf8(body.to_vec()).context("the exposition is not UTF-8")
    };
    tokio::time::timeout(timeout, fetch)
        .await
        .with_context(|| format!("scrape {addr} within {timeout:?}"))?
}

/// The value of the sample `name` whose labels include every pair of `want`, from an
/// exposition text; `None` when there is no such line. For tests and quick checks, not a
/// full parser of the format (it relies on label values without `,` `"` or `}`).
pub fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = want
                .iter()
                .all(|(k, v)| labels.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            if all { value.parse().ok() } else { None }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_rpc_metrics_encode_as_openmetrics() {
        let mut persistent = Registry::with_prefix("mosaic_test");
        let rpc = RpcMetrics::register(&mut persistent);
        rpc.observe("MasterFs.lookup", Duration::from_micros(70));
        rpc.observe("MasterFs.lookup", Duration::from_millis(3));

        let mut snap = Snapshot::new("mosaic_test");
        snap.gauge("chunks", "Chunks held", &[], 7.0);
        snap.gauge(
            "node_used_bytes",
            "Bytes used",
            &[("node", "n1"), ("addr", "127.0.0.1:1")],
            1024.0,
        );
        snap.gauge(
            "node_used_bytes",
            "Bytes used",
            &[("node", "n2"), ("addr", "127.0.0.1:2")],
            0.0,
        );
        snap.counter("reads", "Reads served", &[], 42);
        let text = encode(&[&persistent, snap.registry()]);

        // The exact lines a scraper parses.
        for line in [
            "# TYPE mosaic_test_rpc_request_duration_seconds histogram",
            "mosaic_test_rpc_request_duration_seconds_count{method=\"MasterFs.lookup\"} 2",
            "mosaic_test_rpc_request_duration_seconds_bucket{le=\"0.00005\",method=\"MasterFs.lookup\"} 0",
            "mosaic_test_rpc_request_duration_seconds_bucket{le=\"0.0001\",method=\"MasterFs.lookup\"} 1",
            "mosaic_test_rpc_request_duration_seconds_bucket{le=\"+Inf\",method=\"MasterFs.lookup\"} 2",
            "# TYPE mosaic_test_chunks gauge",
            "mosaic_test_chunks 7.0",
            "mosaic_test_node_used_bytes{node=\"n1\",addr=\"127.0.0.1:1\"} 1024.0",
            "mosaic_test_node_used_bytes{node=\"n2\",addr=\"127.0.0.1:2\"} 0.0",
            "# TYPE mosaic_test_reads counter",
            "mosaic_test_reads_total 42",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // One descriptor per name, however many series.
        assert_eq!(
            text.matches("# TYPE mosaic_test_node_used_bytes gauge")
                .count(),
            1
        );

        assert_eq!(sample(&text, "mosaic_test_chunks", &[]), Some(7.0));
        assert_eq!(
            sample(&text, "mosaic_test_node_used_bytes", &[("node", "n1")]),
            Some(1024.0)
        );
        assert_eq!(
            sample(
                &text,
                "mosaic_test_rpc_request_duration_seconds_count",
                &[("method", "MasterFs.lookup")]
            ),
            Some(2.0)
        );
        assert_eq!(sample(&text, "mosaic_test_reads_total", &[]), Some(42.0));
        assert_eq!(sample(&text, "mosaic_test_missing", &[]), None);
        assert_eq!(
            sample(&text, "mosaic_test_node_used_bytes", &[("node", "n3")]),
            None
        );
    }

    #[tokio::test]
    async fn the_endpoint_serves_the_render_over_http() {
        let render: Render = Arc::new(|| {
            Box::pin(async {
                let mut snap = Snapshot::new("mosaic_test");
                snap.gauge("up", "Always 1", &[], 1.0);
                encode(&[snap.registry()])
            })
        });
        let server = serve(SocketAddr::from(([127, 0, 0, 1], 0)), render)
            .await
            .expect("bind");
        let text = scrape(server.addr, Duration::from_secs(10))
            .await
            .expect("scrape");
        assert_eq!(sample(&text, "mosaic_test_up", &[]), Some(1.0), "{text}");
        let addr = server.addr;
        drop(server);
        // Stopped: a new connection is refused (or closed) rather than answered.
        let again = scrape(addr, Duration::from_secs(5)).await;
        assert!(again.is_err(), "a dropped server must not answer");
    }
}

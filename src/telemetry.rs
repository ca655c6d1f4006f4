//! The server's own metrics, in Prometheus' text format (`GET /metrics`), by a well-kept crate
//! (`prometheus`, no protobuf). Counters and histograms are recorded where things happen (the
//! HTTP layer, the query path); gauges are read when scraped. Labels stay bounded: routes are
//! the router's templates (`/api/v1/dashboards/{id}`), never the paths clients send.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

pub struct Telemetry {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_duration: HistogramVec,
    pub query_duration: HistogramVec,
    pub cache_hits: IntCounter,
    pub cache_misses: IntCounter,
    pub cache_bytes: IntGauge,
    pub cache_entries: IntGauge,
    pub engine_memory: IntGauge,
    pub rollup_rows: IntGaugeVec,
    pub rollups_not_built: IntGauge,
    pub data_refresh_failed: IntGauge,
    pub catalog_reloads: IntGauge,
    pub alerts_firing: IntGauge,
}

/// Seconds, from a cached answer (sub-millisecond) to a cold query at scale.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    pub fn new() -> Self {
        let registry = Registry::new();
        fn add<C: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: C) -> C {
            r.register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        }
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
                labels,
            )
            .expect("valid histogram")
        };
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("valid gauge");
        let counter = |name: &str, help: &str| IntCounter::new(name, help).expect("valid counter");
        Self {
            http_requests: add(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "kpilens_http_requests_total",
                        "HTTP requests by route, method and status",
                    ),
                    &["route", "method", "status"],
                )
                .expect("valid counter"),
            ),
            http_duration: add(
                &registry,
                histogram(
                    "kpilens_http_request_duration_seconds",
                    "Time to answer an HTTP request, by route",
                    &["route"],
                ),
            ),
            query_duration: add(
                &registry,
                histogram(
                    "kpilens_query_duration_seconds",
                    "Time to answer a query, by what served it (cache or engine)",
                    &["served_by"],
                ),
            ),
            cache_hits: add(
                &registry,
                counter(
                    "kpilens_cache_hits_total",
                    "Answers served from the result cache",
                ),
            ),
            cache_misses: add(
                &registry,
                counter(
                    "kpilens_cache_misses_total",
                    "Answers computed (not in the cache)",
                ),
            ),
            cache_bytes: add(
                &registry,
                gauge("kpilens_cache_bytes", "Weighed size of the result cache"),
            ),
            cache_entries: add(
                &registry,
                gauge("kpilens_cache_entries", "Entries in the result cache"),
            ),
            engine_memory: add(
                &registry,
                gauge(
                    "kpilens_engine_memory_bytes",
                    "Memory held in the engine's pool by running queries",
                ),
            ),
            rollup_rows: add(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "kpilens_rollup_rows",
                        "Rows of each built rollup, by how it was last refreshed",
                    ),
                    &["rollup", "refresh"],
                )
                .expect("valid gauge"),
            ),
            rollups_not_built: add(
                &registry,
                gauge(
                    "kpilens_rollups_not_built",
                    "Rollups that validated but could not be built over the data",
                ),
            ),
            data_refresh_failed: add(
                &registry,
                gauge(
                    "kpilens_data_refresh_failed",
                    "1 while a data change cannot be loaded (the last good catalog serves)",
                ),
            ),
            catalog_reloads: add(
                &registry,
                gauge("kpilens_catalog_reloads", "Definition reloads since start"),
            ),
            alerts_firing: add(
                &registry,
                gauge("kpilens_alerts_firing", "Alert instances firing now"),
            ),
            registry,
        }
    }

    /// The text exposition format (version 0.0.4), and its content type.
    pub fn render(&self) -> (String, String) {
        let encoder = TextEncoder::new();
        let mut out = Vec::new();
        let _ = encoder.encode(&self.registry.gather(), &mut out);
        (
            String::from_utf8(out).unwrap_or_default(),
            encoder.format_type().to_string(),
        )
    }
}

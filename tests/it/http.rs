//! The real server: routes, error classes, cache behaviour. A test [`Server`] is the
//! application the binary serves; its helpers call the router directly (`oneshot`), and the
//! same application also listens on a loopback port for what needs a socket (`exchange`:
//! body limits, streaming, shutdown, load).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use kpilens::config::Settings;
use kpilens::server;
use kpilens::service::KpiService;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Shared, assert_num, bank_settings, fixture_dir, repo_dir, settings_for, temp_project};

pub struct Server {
    pub addr: SocketAddr,
    pub service: Shared,
    /// The application's router (the same one the socket serves).
    router: axum::Router,
    /// The Authorization header sent by get/post/query (the head office's API key).
    pub auth: String,
    /// Holds the auth config and the audit log.
    pub dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

/// The API key of the head-office principal every test server knows.
pub const HEAD_OFFICE_KEY: &str = "kpilens-test-head-office-key";
/// The HS256 secret of the test servers (tokens: [`token`]).
pub const TEST_SECRET: &str = "kpilens-test-secret-0123456789abcdef";

/// An HS256 bearer header for a principal of the test servers, valid for an hour.
pub fn token(sub: &str, role: &str, scope: Value) -> String {
    let claims = kpilens::security::auth::Claims {
        sub: sub.to_string(),
        role: role.to_string(),
        scope: serde_json::from_value(scope).expect("a scope"),
        exp: chrono::Utc::now().timestamp() + 3600,
        nbf: None,
        iss: None,
        aud: None,
    };
    format!(
        "Bearer {}",
        kpilens::security::auth::sign_hs256(TEST_SECRET.as_bytes(), &claims)
    )
}

/// The test servers' auth config: the demo's roles, HS256, RS256 and ES256 keys, one API key.
fn test_auth_config(dir: &Path) -> std::path::PathBuf {
    use sha2::Digest;
    let key_hash: String = sha2::Sha256::digest(HEAD_OFFICE_KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let public_key = repo_dir().join("tests/fixtures/auth/test-rs256.pub.pem");
    let ec_key = repo_dir().join("tests/fixtures/auth/test-es256.pub.pem");
    let config = format!(
        r#"hierarchy: org
roles:
  head_office: {{ personal_data: true }}
  region_head: {{ personal_data: false }}
  branch_head: {{ personal_data: false }}
  rm: {{ personal_data: true }}
  analyst: {{ personal_data: false }}
jwt:
  hs256_secret: {TEST_SECRET}
  rs256_public_key: {}
  es256_public_key: {}
api_keys:
  - {{ name: head-office-test, sha256: {key_hash}, role: head_office }}
"#,
        public_key.display(),
        ec_key.display()
    );
    let path = dir.join("auth.yaml");
    std::fs::write(&path, config).expect("write auth config");
    path
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(settings: Settings) -> Server {
    start_opened(settings, false, loopback().await).await
}

/// As `kpilens serve` starts: stored rollups that are current load, the rest build behind the
/// listening server.
pub async fn start_serving(settings: Settings) -> Server {
    start_opened(settings, true, loopback().await).await
}

async fn loopback() -> tokio::net::TcpListener {
    server::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind loopback")
}

async fn start_opened(
    mut settings: Settings,
    serving: bool,
    listener: tokio::net::TcpListener,
) -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    if settings.auth_file.is_none() && !settings.no_auth {
        settings.auth_file = Some(test_auth_config(dir.path()));
    }
    settings.audit_log = Some(dir.path().join("audit.log"));
    settings.alerts_db = Some(dir.path().join("alerts.redb"));
    let opened = match serving {
        true => KpiService::open_for_serving(&settings).await,
        false => KpiService::open(&settings).await,
    };
    let service = Arc::new(opened.expect("project validates"));
    let addr = listener.local_addr().expect("addr");
    let auth = server::auth_from_settings(&settings, &service).expect("auth config");
    let app = server::app(
        &settings,
        service.clone(),
        auth,
        axum::Router::new(),
        Vec::new(),
    )
    .expect("the application starts");
    let router = app.router.clone();
    let task = tokio::spawn(async move {
        server::serve_app(listener, &app, &settings, std::future::pending()).await;
        drop(app);
    });
    Server {
        addr,
        service,
        router,
        auth: format!("Bearer {HEAD_OFFICE_KEY}"),
        dir,
        task,
    }
}

async fn start_on(project: &Path) -> Server {
    start(settings_for(project)).await
}

impl Server {
    pub async fn post(&self, path: &str, body: impl Into<String>) -> (u16, Value) {
        self.json_as(&self.auth, "POST", path, &body.into()).await
    }

    pub async fn query(&self, q: Value) -> (u16, Value) {
        self.post("/api/v1/query", q.to_string()).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.json_as(&self.auth, "GET", path, "").await
    }

    /// A JSON exchange with a given Authorization header ("" sends none).
    pub async fn json_as(&self, auth: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            Vec::new()
        } else {
            vec![("Authorization", auth)]
        };
        let r = self.call(method, path, &headers, body).await;
        let text = String::from_utf8(r.body).expect("UTF-8 response");
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (r.status, json)
    }

    /// A raw GET as the head office, with extra headers.
    pub async fn raw(&self, path: &str, headers: &[(&str, &str)]) -> RawResponse {
        let mut all = vec![("Authorization", self.auth.as_str())];
        all.extend_from_slice(headers);
        self.call("GET", path, &all, "").await
    }

    /// One request through the application's router, no socket.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> RawResponse {
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .expect("a request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("the body")
            .to_vec();
        RawResponse {
            status,
            headers,
            body,
        }
    }
}

pub struct RawResponse {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The raw exchange, with extra request headers; the body as bytes (it may be compressed).
pub async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send head");
    // The server may answer (413) before reading a large body and close: a failed write is fine.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("head and body");
    let head = String::from_utf8(raw[..split].to_vec()).expect("UTF-8 head");
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

fn served_by(body: &Value) -> &str {
    body["meta"]["served_by"].as_str().expect("served_by")
}

#[tokio::test]
async fn health_catalog_query_and_explain_routes() {
    let s = start_on(&fixture_dir()).await;
    let (status, health) = s.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let (status, catalog) = s.get("/api/v1/catalog").await;
    assert_eq!(status, 200);
    let ratio = catalog["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "overdue_ratio")
        .expect("metric listed");
    assert_eq!(ratio["type"], "ratio");
    assert_eq!(ratio["label"]["zh"], "逾期贷款率");
    assert_eq!(ratio["format"]["style"], "percent");
    assert_eq!(ratio["direction"], "lower_is_better");
    assert_eq!(ratio["thresholds"]["alert"], 0.05);
    assert!(
        ratio["dimensions"]
            .as_array()
            .unwrap()
            .contains(&json!("region"))
    );
    assert!(
        !ratio["dimensions"]
            .as_array()
            .unwrap()
            .contains(&json!("status")),
        "status is a customer_month dimension"
    );
    assert_eq!(
        catalog["hierarchies"][0],
        json!({ "name": "org", "levels": ["region", "branch", "team"] })
    );
    assert!(
        catalog["dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "region" && d["label"]["en"] == "Region")
    );

    let (status, body) = s
        .query(
            json!({ "metrics": ["overdue_ratio"], "dimensions": ["region"],
            "time": { "grain": "quarter", "from": "2024-01-01", "to": "2024-03-31" } }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["schema"][0],
        json!({ "name": "period", "role": "time", "type": "date", "label": { "zh": "期间", "en": "Period" } })
    );
    assert_eq!(body["schema"][1]["name"], "region");
    assert_eq!(body["schema"][2]["name"], "overdue_ratio");
    assert_eq!(body["schema"][2]["type"], "number");
    assert_eq!(body["schema"][2]["format"]["decimals"], 2);
    assert_eq!(body["rows"][0][0], "2024-01-01");
    assert_eq!(body["rows"][0][1], "North");
    assert_num(&body["rows"][0][2], Some(300.0 / 380.0));
    assert_num(&body["totals"][2], Some(1300.0 / 1430.0));
    for key in [
        "query_id",
        "served_by",
        "elapsed_ms",
        "catalog_version",
        "data_version",
        "row_count",
    ] {
        assert!(
            body["meta"].get(key).is_some(),
            "meta.{key} missing: {body}"
        );
    }

    let (status, plan) = s
        .post(
            "/api/v1/explain",
            json!({ "metrics": ["overdue_ratio"], "dimensions": ["region"] }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{plan}");
    assert!(plan["logical_plan"].as_str().unwrap().contains("Aggregate"));
    assert!(
        plan["sql"]
            .as_str()
            .unwrap()
            .to_uppercase()
            .contains("SELECT")
    );
}

#[tokio::test]
async fn each_error_class_has_its_status_and_names_the_field() {
    let s = start_on(&fixture_dir()).await;
    let cases: Vec<(&str, String, u16, &str, Option<&str>)> = vec![
        ("not JSON", "{\"metrics\": [".into(), 400, "malformed_request", None),
        ("unknown field", json!({ "metrics": ["loan_balance"], "metricz": [] }).to_string(), 400, "malformed_request", None),
        ("wrong type", json!({ "metrics": "loan_balance" }).to_string(), 400, "malformed_request", Some("metrics")),
        ("bad op", json!({ "metrics": ["loan_balance"], "filters": [{ "dimension": "region", "op": "like", "value": "N%" }] }).to_string(),
            400, "malformed_request", Some("filters[0].op")),
        ("bad date", json!({ "metrics": ["loan_balance"], "time": { "from": "2024-02-30" } }).to_string(),
            400, "malformed_request", Some("time.from")),
        ("unknown metric", json!({ "metrics": ["loan_balance", "nope"] }).to_string(), 404, "unknown_metric", Some("metrics[1]")),
        ("unknown dimension", json!({ "metrics": ["loan_balance"], "dimensions": ["planet"] }).to_string(),
            404, "unknown_dimension", Some("dimensions[0]")),
        ("dimension the model lacks", json!({ "metrics": ["loan_balance"], "dimensions": ["status"] }).to_string(),
            422, "invalid_query", Some("dimensions[0]")),
        ("filter value of the wrong type", json!({ "metrics": ["loan_balance"], "filters": [{ "dimension": "region", "op": "eq", "value": 5 }] }).to_string(),
            422, "invalid_query", Some("filters[0].value")),
        ("between with one value", json!({ "metrics": ["loan_balance"], "filters": [{ "dimension": "team", "op": "between", "values": ["T1"] }] }).to_string(),
            422, "invalid_query", Some("filters[0].values")),
        ("from after to", json!({ "metrics": ["loan_balance"], "time": { "from": "2024-03-01", "to": "2024-01-01" } }).to_string(),
            422, "invalid_query", Some("time")),
        ("limit too large", json!({ "metrics": ["loan_balance"], "limit": 10_000_000 }).to_string(),
            422, "invalid_query", Some("limit")),
        ("order by unknown", json!({ "metrics": ["loan_balance"], "order": [{ "by": "region" }] }).to_string(),
            422, "invalid_query", Some("order[0].by")),
        ("no metrics", json!({ "metrics": [] }).to_string(), 422, "invalid_query", Some("metrics")),
    ];
    for (what, body, status, code, field) in cases {
        let (got, err) = s.post("/api/v1/query", body).await;
        assert_eq!(got, status, "{what}: {err}");
        assert_eq!(err["error"]["code"], code, "{what}: {err}");
        assert!(
            !err["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
        if let Some(field) = field {
            assert_eq!(err["error"]["field"], field, "{what}: {err}");
        }
    }

    let (_, err) = s.query(json!({ "metrics": ["overdue_ratoi"] })).await;
    assert_eq!(
        err["error"]["message"],
        "unknown metric 'overdue_ratoi'; did you mean 'overdue_ratio'?"
    );

    // SQL in a filter value is just a string that matches nothing.
    let (status, body) = s
        .query(json!({ "metrics": ["loan_rows"], "filters": [{ "dimension": "region", "op": "eq", "value": "North' OR '1'='1" }] }))
        .await;
    assert_eq!(status, 200);
    assert_num(&body["rows"][0][0], Some(0.0));

    let huge = format!("{{\"metrics\": [\"{}\"]}}", "x".repeat(400 * 1024));
    let (status, err) = s.post("/api/v1/query", huge).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"]["code"], "body_too_large");

    let (status, err) = s.get("/api/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["code"], "no_route");
}

#[tokio::test]
async fn internal_errors_are_generic_and_the_server_keeps_serving() {
    let project = temp_project(&[]);
    let s = start_on(project.path()).await;
    // The loan_month files vanish from under the running server.
    std::fs::remove_dir_all(project.path().join("data/loan_month")).unwrap();
    let (status, err) = s.query(json!({ "metrics": ["loan_balance"] })).await;
    assert_eq!(status, 500);
    assert_eq!(err["error"]["code"], "internal");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains(project.path().to_str().unwrap()),
        "no paths leak: {message}"
    );
    // Metrics on other tables still answer.
    let (status, body) = s
        .query(json!({ "metrics": ["aum"], "time": { "from": "2024-01-01", "to": "2024-03-31" } }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_num(&body["rows"][0][0], Some(1225.0));
}

#[tokio::test]
async fn cache_hits_ignore_key_order_and_whitespace() {
    let s = start_on(&fixture_dir()).await;
    let a = r#"{"metrics":["overdue_ratio"],"dimensions":["branch"],"time":{"grain":"month","from":"2024-01-01","to":"2024-03-31"}}"#;
    let b = r#"{ "time": { "to": "2024-03-31", "from": "2024-01-01", "grain": "month" },
                 "dimensions": [ "branch" ],   "metrics": [ "overdue_ratio" ] }"#;
    let (_, first) = s.post("/api/v1/query", a).await;
    assert_eq!(served_by(&first), "engine");
    let (_, second) = s.post("/api/v1/query", b).await;
    assert_eq!(served_by(&second), "cache");
    assert_eq!(first["rows"], second["rows"]);
    assert_eq!(first["totals"], second["totals"]);
    // A different query misses.
    let (_, other) = s
        .query(json!({ "metrics": ["overdue_ratio"], "dimensions": ["region"] }))
        .await;
    assert_eq!(served_by(&other), "engine");
}

#[tokio::test]
async fn concurrent_identical_cold_requests_run_the_engine_once() {
    let s = start_on(&fixture_dir()).await;
    let before = s.service.engine_runs();
    let q = json!({ "metrics": ["loan_balance", "aum", "new_customers"], "dimensions": ["team"],
        "time": { "grain": "month", "from": "2024-01-01", "to": "2024-06-30" } });
    let calls = (0..8).map(|_| s.query(q.clone()));
    let results = futures::future::join_all(calls).await;
    let engine = results
        .iter()
        .filter(|(status, body)| *status == 200 && served_by(body) == "engine")
        .count();
    assert!(results.iter().all(|(status, _)| *status == 200));
    assert_eq!(engine, 1, "exactly one request computed");
    assert_eq!(s.service.engine_runs() - before, 1);
    let rows: Vec<&Value> = results.iter().map(|(_, b)| &b["rows"]).collect();
    assert!(rows.windows(2).all(|w| w[0] == w[1]));
}

#[tokio::test]
async fn a_data_refresh_invalidates_exactly_the_affected_entries() {
    let project = temp_project(&[]);
    let s = start_on(project.path()).await;
    let loans = json!({ "metrics": ["loan_balance"], "time": { "from": "2024-01-01", "to": "2024-03-31" } });
    let aum = json!({ "metrics": ["aum"], "time": { "from": "2024-01-01", "to": "2024-03-31" } });
    let (_, l1) = s.query(loans.clone()).await;
    let (_, a1) = s.query(aum.clone()).await;
    assert_num(&l1["rows"][0][0], Some(1430.0));
    assert_eq!(served_by(&s.query(loans.clone()).await.1), "cache");

    // A new file lands in the loan_month table: loan L6 of c1 with 20 on Mar 31.
    std::fs::write(
        project.path().join("data/loan_month/part-1.csv"),
        "loan_id,customer_id,month_end,balance,dpd\n6,1,2024-03-31,20,0\n",
    )
    .unwrap();
    let (status, l2) = s.query(loans.clone()).await;
    assert_eq!(status, 200, "{l2}");
    assert_eq!(served_by(&l2), "engine", "the loan_month entry is stale");
    assert_num(&l2["rows"][0][0], Some(1450.0));
    assert_ne!(l1["meta"]["data_version"], l2["meta"]["data_version"]);

    let (_, a2) = s.query(aum.clone()).await;
    assert_eq!(served_by(&a2), "cache", "customer_month did not change");
    assert_eq!(a1["meta"]["data_version"], a2["meta"]["data_version"]);
    assert_eq!(served_by(&s.query(loans).await.1), "cache");
}

#[tokio::test]
async fn a_query_past_its_time_budget_gets_504_and_the_server_keeps_serving() {
    // A zero budget expires before the engine's first batch.
    let s = start(Settings {
        query_timeout_secs: 0,
        max_concurrent: 1,
        queue_wait_ms: 100,
        ..settings_for(&fixture_dir())
    })
    .await;
    let (status, err) = s
        .query(json!({ "metrics": ["loan_balance", "aum"], "dimensions": ["team"] }))
        .await;
    assert_eq!(status, 504, "{err}");
    assert_eq!(err["error"]["code"], "timeout");
    // Its one compute slot came back: the next query reaches the engine (and times out too)
    // instead of waiting for a slot (503 saturated).
    let (status, err) = s
        .query(json!({ "metrics": ["loan_balance"], "dimensions": ["region"] }))
        .await;
    assert_eq!(status, 504, "{err}");
    // The cancelled plans' memory: back once their aborted tasks are dropped (by the engine's
    // low-priority threads, beside the other tests).
    let cancelled = std::time::Instant::now();
    while s.service.engine_memory() > 0 {
        assert!(cancelled.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, _) = s.get("/healthz").await;
    assert_eq!(status, 200);
    // A timed-out query is not cached as a result (and a good one would be: counts are settled).
    s.service.cache().settle().await;
    assert_eq!(s.service.cache().entry_count(), 0);
}

#[tokio::test]
async fn a_query_over_the_memory_pool_gets_503() {
    let s = start(Settings {
        memory_mb: 0,
        ..settings_for(&fixture_dir())
    })
    .await;
    let (status, err) = s
        .query(json!({ "metrics": ["loan_balance", "aum"], "dimensions": ["team"] }))
        .await;
    assert_eq!(status, 503, "{err}");
    assert_eq!(err["error"]["code"], "memory_limit");
    assert!(err["error"]["message"].as_str().unwrap().contains("memory"));
}

#[tokio::test]
async fn the_cache_keeps_within_its_byte_budget() {
    let q = json!({ "metrics": ["loan_balance", "aum"], "dimensions": ["team"], "time": { "grain": "month" } });
    // A zero budget keeps nothing: the same query computes again.
    let none = start(Settings {
        cache_mb: 0,
        ..settings_for(&fixture_dir())
    })
    .await;
    assert_eq!(served_by(&none.query(q.clone()).await.1), "engine");
    assert_eq!(served_by(&none.query(q.clone()).await.1), "engine");

    // With room, results are kept and weighed.
    let some = start_on(&fixture_dir()).await;
    some.query(q.clone()).await;
    assert_eq!(served_by(&some.query(q).await.1), "cache");
    let (_, health) = some.get("/healthz").await;
    let bytes = health["cache"]["bytes"].as_u64().unwrap();
    assert!(
        bytes > 0 && bytes < 256 * 1024 * 1024,
        "weighed size {bytes}"
    );
}

#[tokio::test]
async fn a_bad_file_dropped_in_keeps_the_last_good_snapshot_serving() {
    let project = temp_project(&[]);
    let s = start_on(project.path()).await;
    let loans = json!({ "metrics": ["loan_balance"], "time": { "from": "2024-01-01", "to": "2024-03-31" } });
    assert_num(&s.query(loans.clone()).await.1["rows"][0][0], Some(1430.0));

    // A file whose rows do not match its header: the table no longer loads.
    let bad = project.path().join("data/loan_month/part-9.csv");
    std::fs::write(
        &bad,
        "loan_id,customer_id,month_end,balance,dpd\n7,1\n8,2,2024-03-31,10,0,extra\n",
    )
    .unwrap();
    for _ in 0..2 {
        let (status, body) = s.query(loans.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert_num(&body["rows"][0][0], Some(1430.0)); // answered from the validated files
    }
    let (_, health) = s.get("/healthz").await;
    assert_eq!(
        health["data_refresh_error"]["tables"],
        json!(["loan_month"])
    );
    assert!(
        !health.to_string().contains("part-9") && !health.to_string().contains("/tmp"),
        "no paths without a token: {health}"
    );
    let (_, status) = s.get("/api/v1/catalog/status").await;
    let errors = status["data_refresh_error"]["errors"].to_string();
    assert!(errors.contains("models.loan_month.source"), "{status}");
    let anonymous = s.call("GET", "/api/v1/catalog/status", &[], "").await;
    assert_eq!(anonymous.status, 401, "the details need a token");

    // Removing the bad file clears the error, with no query in between.
    std::fs::remove_file(&bad).unwrap();
    assert!(s.get("/healthz").await.1["data_refresh_error"].is_null());
    std::fs::write(
        &bad,
        "loan_id,customer_id,month_end,balance,dpd\n7,1\n8,2,2024-03-31,10,0,extra\n",
    )
    .unwrap();
    assert_eq!(s.query(loans.clone()).await.0, 200);
    assert!(!s.get("/healthz").await.1["data_refresh_error"].is_null());

    // Fixing the data clears the error and serves the new numbers.
    std::fs::write(
        &bad,
        "loan_id,customer_id,month_end,balance,dpd\n7,1,2024-03-31,10,0\n",
    )
    .unwrap();
    let (_, body) = s.query(loans).await;
    assert_num(&body["rows"][0][0], Some(1440.0));
    assert!(s.get("/healthz").await.1["data_refresh_error"].is_null());
}

#[tokio::test]
async fn drill_members_and_drill_through_routes() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let (status, body) = s
        .query(json!({ "metrics": ["aum", "customer_churn_rate"], "time": { "grain": "month", "from": "2024-03-01", "to": "2024-04-30" },
            "drill": { "hierarchy": "org", "path": { "region": "西北" } }, "compare": ["previous_period"] }))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["drill"]["level"], "branch");
    assert_eq!(body["drill"]["next_level"], "team");
    assert_eq!(body["rows"].as_array().unwrap().len(), 4); // 2 months x 2 branches
    assert_eq!(body["meta"]["comparisons"][0]["from"], "2024-02-01");

    // 西北 percent-encoded, as a browser sends it.
    let (status, body) = s
        .get("/api/v1/hierarchies/org/members?level=branch&region=%E8%A5%BF%E5%8C%97")
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["members"], json!(["兰州分行", "西安分行"]));
    let (status, body) = s.get("/api/v1/hierarchies/org/members").await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("level"))
    );
    let (status, _) = s.get("/api/v1/hierarchies/nope/members?level=x").await;
    assert_eq!(status, 404);

    let (status, body) = s
        .post(
            "/api/v1/drill_through",
            json!({ "model": "loans", "order": [{ "by": "principal", "desc": true }], "page_size": 2 }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 4);
    assert_eq!(body["rows"][0][3].as_f64(), Some(600.0));
    let (status, body) = s
        .post(
            "/api/v1/drill_through",
            json!({ "model": "customer_month_snapshots" }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("not_drillable"))
    );
    let (status, body) = s
        .post(
            "/api/v1/drill_through",
            json!({ "model": "loans", "page_size": 100000 }).to_string(),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (422, Some("page_size"))
    );
    // A page whose first row lies past any table (the fuzzer's: its offset overflowed to a 500).
    for page in [196_568_773_145_943_808u64, u64::MAX] {
        let (status, body) = s
            .post(
                "/api/v1/drill_through",
                json!({ "model": "loans", "page": page }).to_string(),
            )
            .await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (422, Some("page")),
            "{body}"
        );
    }
    // The last page a table could have still answers (empty here).
    let (status, body) = s
        .post(
            "/api/v1/drill_through",
            json!({ "model": "loans", "page": 20_000_000_000u64, "page_size": 50 }).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"], json!([]));
}

#[tokio::test]
async fn the_cli_gives_the_api_numbers() {
    let (data, settings) = bank_settings().await;
    let s = start(settings).await;
    let q = json!({ "metrics": ["customer_churn_rate", "aum"], "dimensions": ["branch"],
        "time": { "grain": "month", "from": "2024-02-01", "to": "2024-04-30" }, "compare": ["previous_period"] });
    let (status, api) = s.query(q.clone()).await;
    assert_eq!(status, 200, "{api}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpilens"))
        .args(["query", "--format", "json", "--project"])
        .arg(repo_dir())
        .arg("--data")
        .arg(data.path())
        .arg(q.to_string())
        .output()
        .expect("the CLI runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    // serde_json parses floats to within an ulp (no `float_roundtrip`): compare to 1e-12.
    assert!(
        super::close(&cli["rows"], &api["rows"], 1e-12),
        "CLI {} vs API {}",
        cli["rows"],
        api["rows"]
    );
    assert!(super::close(&cli["totals"], &api["totals"], 1e-12));
    assert!(!api["rows"].as_array().unwrap().is_empty());
}

pub async fn wait_for(s: &Server, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let (_, status) = s.get("/api/v1/catalog/status").await;
        if ok(&status) {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// An open `GET /api/v1/events` stream, read as a client does: `(event, data)` one at a time.
struct EventStream(tokio::io::BufReader<TcpStream>);

impl EventStream {
    async fn open(s: &Server) -> Self {
        let mut socket = TcpStream::connect(s.addr).await.unwrap();
        let head = format!(
            "GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
            s.auth
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut reader = tokio::io::BufReader::new(socket);
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut reader, &mut line)
            .await
            .unwrap();
        assert!(line.contains(" 200 "), "{line}");
        Self(reader)
    }

    /// The next event with data, within `within` (the chunk-size lines of the chunked encoding
    /// and keep-alive comments are skipped).
    async fn next(&mut self, within: std::time::Duration) -> (String, Value) {
        let deadline = tokio::time::Instant::now() + within;
        let mut event = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout_at(
                deadline,
                tokio::io::AsyncBufReadExt::read_line(&mut self.0, &mut line),
            )
            .await
            .expect("an event in time")
            .unwrap();
            assert!(n > 0, "the stream ended");
            if let Some(name) = line.strip_prefix("event: ") {
                event = name.trim().to_string();
            } else if let Some(data) = line.strip_prefix("data: ") {
                return (event, serde_json::from_str(data.trim()).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_tells_of_new_data_and_new_definitions_only_once_they_serve() {
    use std::time::Duration;
    let project = temp_project(&[]);
    let mut settings = settings_for(project.path());
    settings.reload_ms = 50;
    let s = start(settings).await;
    let (code, _) = s.json_as("", "GET", "/api/v1/events", "").await;
    assert_eq!(code, 401, "the stream is behind the gate");

    let mut events = EventStream::open(&s).await;
    let (name, now) = events.next(Duration::from_secs(10)).await;
    assert_eq!(name, "state");
    let version = now["catalog_version"].clone();
    let loaded_at = now["loaded_at"].as_str().unwrap().to_string();
    let (_, before) = s.query(json!({ "metrics": ["loan_balance"] })).await;
    assert_num(&before["rows"][0][0], Some(0.0));

    // A file dropped into a table's folder: one data_changed naming the table, and the next
    // answer is over the new data.
    std::fs::write(
        project.path().join("data/loan_month/part-1.csv"),
        "loan_id,customer_id,month_end,balance,dpd\n9,1,2024-06-30,1000,0\n",
    )
    .unwrap();
    let (name, change) = events.next(Duration::from_secs(10)).await;
    assert_eq!(name, "data_changed", "{change}");
    let tables: Vec<&str> = change["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["loan_month"], "{change}");
    assert_eq!(change["catalog_version"], version);
    assert!(change["loaded_at"].as_str().unwrap() > loaded_at.as_str());
    let (_, after) = s.query(json!({ "metrics": ["loan_balance"] })).await;
    assert_num(&after["rows"][0][0], Some(1000.0));

    // A definition change that does not validate says nothing (the last good catalog serves);
    // the good one after it is the next event, with the version now serving.
    let extra = project.path().join("metrics/extra.yaml");
    std::fs::write(
        &extra,
        "metrics:\n  bad: { type: ratio, numerator: nothing, denominator: loan_balance }\n",
    )
    .unwrap();
    wait_for(&s, "the broken change", |st| {
        !st["catalog"]["last_error"].is_null()
    })
    .await;
    std::fs::write(
        &extra,
        "metrics:\n  loan_balance_copy: { type: simple, measure: loan_balance }\n",
    )
    .unwrap();
    let (name, change) = events.next(Duration::from_secs(10)).await;
    assert_eq!(name, "catalog_changed", "{change}");
    let (_, status) = s.get("/api/v1/catalog/status").await;
    assert_eq!(change["catalog_version"], status["catalog"]["version"]);
    assert_ne!(change["catalog_version"], version);
}

/// The port answers while the service opens (the catalog validating, stored rollups loading,
/// SQL models materialising: seconds at 100M rows): `/healthz` says `opening` to a liveness
/// probe; every other route, `/readyz` too, is a 503 `opening` with Retry-After. Then the same
/// port serves the application.
#[tokio::test]
async fn the_port_answers_while_the_service_opens() {
    let listener = loopback().await;
    let addr = listener.local_addr().expect("addr");
    let settings = settings_for(&fixture_dir());
    let opening =
        server::Opening::answer(listener, server::transport::TransportLimits::of(&settings));
    // A liveness probe: alive, opening.
    let health = exchange(addr, "GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "opening");
    // Not ready: a balancer keeps traffic away, a client is told to retry.
    for path in [
        "/readyz",
        "/api/v1/catalog",
        "/api/v1/dashboards/executive",
        "/",
    ] {
        let r = exchange(addr, "GET", path, &[], "").await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.header("retry-after"), Some("2"), "{path}");
        assert_eq!(r.json()["error"]["code"], "opening", "{path}");
    }
    // A connection kept alive from the opening is closed when the service is open, so that
    // its client reconnects to the application instead of hearing `opening` forever.
    let mut kept = TcpStream::connect(addr).await.expect("connect");
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut first = vec![0u8; 4096];
    let n = kept.read(&mut first).await.expect("an answer");
    assert!(String::from_utf8_lossy(&first[..n]).contains("opening"));

    let s = start_opened(
        settings,
        true,
        opening.finish().await.expect("the listener back"),
    )
    .await;
    assert_eq!(s.addr, addr);
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        kept.read_to_end(&mut rest),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the kept-alive connection was not closed: {closed:?}"
    );
    let health = exchange(addr, "GET", "/healthz", &[], "").await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    let catalog = exchange(addr, "GET", "/api/v1/catalog", &[], "").await;
    assert_eq!(catalog.status, 200);
}

/// A server listens before its rollups are built: at once after start it answers `/healthz`,
/// `/readyz` says 503 naming the rollups still building, and queries are answered from the
/// models. While the builder works behind it, `/healthz` over the socket stays quick (it never
/// waits on a build); once `/readyz` says 200, the same question comes from a rollup with the
/// same numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_listens_at_once_and_builds_its_rollups_behind_it() {
    let (_data, settings) = super::demo_settings();
    let s = start_serving(settings).await;
    let (status, ready) = s.get("/readyz").await;
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["status"], "building");
    assert!(
        ready["rollups_building"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r == "loan_month_by_rm")),
        "{ready}"
    );
    let q = json!({ "metrics": ["overdue_ratio", "loan_balance"], "dimensions": ["region"],
        "time": { "grain": "month", "from": "2025-01-01", "to": "2025-06-30" } });
    let (status, during) = s.query(q.clone()).await;
    assert_eq!(status, 200, "{during}");
    assert!(
        during["meta"]["rollups"].is_null(),
        "pending: from the models"
    );

    let started = std::time::Instant::now();
    let mut health_ms = Vec::new();
    loop {
        let asked = std::time::Instant::now();
        let r = exchange(s.addr, "GET", "/healthz", &[], "").await;
        health_ms.push(asked.elapsed().as_secs_f64() * 1e3);
        assert_eq!(r.status, 200);
        if exchange(s.addr, "GET", "/readyz", &[], "").await.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(600),
            "the rollups were not built within 10 minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    health_ms.sort_by(f64::total_cmp);
    let median = health_ms[health_ms.len() / 2];
    let worst = health_ms[health_ms.len() - 1];
    // Generous bounds (the tests run beside each other on two cores); the old server held
    // /healthz for the whole build, seconds.
    assert!(
        median < 100.0 && worst < 2_000.0,
        "/healthz during the builds: median {median:.1} ms, worst {worst:.1} ms over {} requests",
        health_ms.len()
    );
    let mut after = q.clone();
    after["limit"] = json!(1000);
    let (status, after) = s.query(after).await;
    assert_eq!(status, 200, "{after}");
    assert!(
        after["meta"]["rollups"]
            .as_array()
            .is_some_and(|r| !r.is_empty()),
        "{}",
        after["meta"]
    );
    assert!(super::close(&after["rows"], &during["rows"], 1e-9));
    let (_, status) = s.get("/api/v1/catalog/status").await;
    assert!(
        status["rollups_not_built"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{status}"
    );
}

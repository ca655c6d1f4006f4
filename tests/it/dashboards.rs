//! Dashboards as code, the dashboard and snapshot routes, the cockpit's files and masked
//! drill-through, over the real server on loopback.

use std::io::Read;

use serde_json::{Value, json};

use super::catalog_errors::{assert_has, load_errors};
use super::http::{start, token};
use super::{assert_num, bank_settings, repo_dir};

const DASHBOARDS: [&str; 5] = ["executive", "retail", "corporate_credit", "risk", "service"];

fn panel<'a>(view: &'a Value, id: &str) -> &'a Value {
    view["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no panel {id}"))
}

#[tokio::test]
async fn every_dashboard_renders_and_each_panel_is_its_query() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let (status, list) = s.get("/api/v1/dashboards").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, DASHBOARDS, "in switcher order");

    for id in DASHBOARDS {
        let (status, view) = s.get(&format!("/api/v1/dashboards/{id}")).await;
        assert_eq!(status, 200, "{id}: {view}");
        assert!(view["title"]["zh"].is_string() && view["title"]["en"].is_string());
        for p in view["panels"].as_array().unwrap() {
            assert!(p["error"].is_null(), "{id}.{}: {}", p["id"], p["error"]);
            // The panel's data is exactly what its query answers (same numbers, same order).
            let (status, direct) = s.query(p["query"].clone()).await;
            assert_eq!(status, 200);
            assert_eq!(p["result"]["rows"], direct["rows"], "{id}.{}", p["id"]);
            assert_eq!(p["result"]["schema"], direct["schema"], "{id}.{}", p["id"]);
        }
    }
}

#[tokio::test]
async fn the_risk_tile_is_the_hand_checked_overdue_ratio() {
    // tests/fixtures/bank/loan_month.csv: March 2024 holds 1,110 with nothing overdue; April
    // 2024 (the last month, so the default as-of) 1,100 of which 400 is overdue.
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let (_, view) = s.get("/api/v1/dashboards/risk").await;
    assert_eq!(view["as_of"], "2024-04-30");
    assert_eq!(
        view["window"],
        json!({ "grain": "month", "periods": 12, "from": "2023-05-01", "latest_from": "2024-04-01", "to": "2024-04-30" })
    );
    let tile = &panel(&view, "overdue_ratio")["tile"];
    assert_num(&tile["value"], Some(400.0 / 1100.0));
    assert_num(&tile["previous"], Some(0.0));
    assert_num(&tile["delta"], Some(400.0 / 1100.0));
    assert_eq!(tile["status"], "red", "36% is past the 5% alert");
    assert_eq!(tile["period"], "2024-04-01");
    let spark = tile["spark"].as_array().unwrap();
    assert_eq!(spark.len(), 12, "twelve months");
    assert!(
        spark[..10].iter().all(Value::is_null),
        "no loans before March: a ratio has no value there, not 0: {spark:?}"
    );
    assert_num(&spark[11], Some(0.3636));

    // A filter narrows the panels that can take it; an as-of date moves the window.
    let (_, march) = s
        .get("/api/v1/dashboards/risk?as_of=2024-03-31&segment=retail")
        .await;
    assert_eq!(march["window"]["latest_from"], "2024-03-01");
    let q = &panel(&march, "overdue_ratio")["query"];
    assert_eq!(
        q["filters"],
        json!([{ "dimension": "segment", "op": "in", "values": ["retail"] }])
    );
    assert_eq!(
        march["filters"][0]["selected"],
        json!(["retail"]),
        "{}",
        march["filters"]
    );
}

#[tokio::test]
async fn dashboard_parameters_are_checked_by_name() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let (status, body) = s.get("/api/v1/dashboards/risk?segmnt=retail").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "segmnt");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("takes as_of, periods, segment, product"),
        "{body}"
    );
    let (status, body) = s.get("/api/v1/dashboards/risk?as_of=yesterday").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["field"], "as_of");
    let (status, body) = s.get("/api/v1/dashboards/risk?periods=0").await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["field"], "periods");
    let (_, quarter) = s.get("/api/v1/dashboards/risk?periods=3").await;
    assert_eq!(quarter["window"]["from"], "2024-02-01");
    assert_eq!(
        panel(&quarter, "overdue_ratio")["tile"]["spark"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, body) = s.get("/api/v1/dashboards/nope").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_dashboard");
    let (status, _) = s.get("/api/v1/dashboards/..%2F..%2FCargo.toml").await;
    assert_eq!(status, 404);
    let (status, _) = s.get("/api/v1/snapshot/..%2Fmetrics%2Fbank").await;
    assert_eq!(status, 404);
    // The retail dashboard starts on retail customers; `segment=` clears the default.
    let (_, retail) = s.get("/api/v1/dashboards/retail").await;
    assert_eq!(retail["filters"][0]["selected"], json!(["retail"]));
    let (_, all) = s.get("/api/v1/dashboards/retail?segment=").await;
    assert_eq!(all["filters"][0]["selected"], json!([]));
    assert!(
        panel(&all, "customers")["query"]["filters"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip body");
    out
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::Decompressor::new(bytes, 4096)
        .read_to_end(&mut out)
        .expect("brotli body");
    out
}

#[tokio::test]
async fn the_executive_snapshot_is_small_compressed_and_revalidated() {
    // The default demo bank (scale 1), as the README's demo serves it.
    let (data, settings) = super::demo_settings();
    let s = start(settings).await;
    let path = "/api/v1/snapshot/executive";

    let plain = s.raw(path, &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(plain.header("content-encoding"), None);
    assert!(
        plain.body.len() < 4096,
        "the executive snapshot is {} bytes",
        plain.body.len()
    );
    let snapshot: Value = serde_json::from_slice(&plain.body).unwrap();
    let tiles = snapshot["tiles"].as_array().unwrap();
    assert_eq!(tiles.len(), 8);
    for t in tiles {
        for key in ["value", "previous", "delta", "status", "spark"] {
            assert!(t.get(key).is_some(), "{key} in {t}");
        }
        assert_eq!(t["spark"].as_array().unwrap().len(), 12);
    }
    // The same numbers as the dashboard's tiles.
    let (_, view) = s.get("/api/v1/dashboards/executive").await;
    for t in tiles {
        let tile = &panel(&view, t["id"].as_str().unwrap())["tile"];
        assert_eq!(tile["value"], t["value"]);
        assert_eq!(tile["previous"], t["previous"]);
    }

    let etag = plain.header("etag").expect("an ETag").to_string();
    let gz = s.raw(path, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gunzip(&gz.body), plain.body);
    let br = s.raw(path, &[("Accept-Encoding", "gzip, br")]).await;
    assert_eq!(br.header("content-encoding"), Some("br"));
    assert_eq!(unbrotli(&br.body), plain.body);
    assert!(
        br.body.len() < plain.body.len() / 2,
        "{} bytes",
        br.body.len()
    );
    assert_eq!(
        br.header("etag"),
        Some(etag.as_str()),
        "one tag per content"
    );

    let runs = s.service.engine_runs();
    let again = s.raw(path, &[("If-None-Match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(s.service.engine_runs(), runs, "a 304 computes nothing");
    // A client without the tag gets the stored body (kept by tag, compressed once).
    let stored = s.raw(path, &[("Accept-Encoding", "gzip")]).await;
    assert_eq!((stored.status, &stored.body), (200, &gz.body));
    assert_eq!(s.service.engine_runs(), runs);

    // New data: a new tag, and the old one no longer matches.
    let tickets = data.path().join("tickets");
    let file = std::fs::read_dir(&tickets)
        .map(|mut d| d.next().unwrap().unwrap().path())
        .unwrap_or(tickets.with_extension("parquet"));
    let bytes = std::fs::read(&file).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, bytes).unwrap();
    let fresh = s.raw(path, &[("If-None-Match", &etag)]).await;
    assert_eq!(fresh.status, 200);
    assert_ne!(fresh.header("etag"), Some(etag.as_str()));
}

#[tokio::test]
async fn the_binary_serves_the_cockpit() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let index = s.call("GET", "/", &[("Accept-Encoding", "gzip")], "").await;
    assert_eq!(index.status, 200);
    assert!(
        index
            .header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    let html = String::from_utf8(gunzip(&index.body)).unwrap();
    assert!(html.contains("/app/main.js") && html.contains("/vendor/echarts.min.js"));
    // The page runs only its own scripts, is never framed, sends no referrer, and its files are
    // read as their types (the browser tests run the cockpit under this policy).
    let policy = index.header("content-security-policy").expect("a CSP");
    for directive in [
        "script-src 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
        "connect-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe-eval"), "{policy}");
    assert_eq!(index.header("x-frame-options"), Some("DENY"));
    assert_eq!(index.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(index.header("referrer-policy"), Some("no-referrer"));
    let js = s.call("GET", "/app/main.js", &[], "").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
    let tag = js.header("etag").unwrap().to_string();
    let cached = s
        .call("GET", "/app/main.js", &[("If-None-Match", &tag)], "")
        .await;
    assert_eq!(cached.status, 304);
    // The charts travel in the binary (vendored, no npm step before a build): the very file
    // web/vendor/ holds.
    let echarts = s.call("GET", "/vendor/echarts.min.js", &[], "").await;
    assert_eq!(echarts.status, 200);
    let vendored = std::fs::read(super::repo_dir().join("web/vendor/echarts.min.js")).unwrap();
    assert!(
        echarts.body == vendored,
        "{} bytes served",
        echarts.body.len()
    );
    // The encoding follows the client's q-values; ties go to brotli.
    for (accept, expected) in [
        ("gzip, br", Some("br")),
        ("gzip;q=1, br;q=0.5", Some("gzip")),
        ("br;q=0, gzip", Some("gzip")),
        ("*;q=0.1, gzip;q=0", Some("br")),
        ("GZIP", Some("gzip")),
        ("identity", None),
        ("deflate", None),
    ] {
        let r = s
            .call("GET", "/app/main.js", &[("Accept-Encoding", accept)], "")
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("content-encoding"),
            expected,
            "Accept-Encoding: {accept}"
        );
    }
    for path in [
        "/app/..%2F..%2FCargo.toml",
        "/app/%2E%2E/index.html",
        "/app/nope.js",
    ] {
        assert_eq!(s.call("GET", path, &[], "").await.status, 404, "{path}");
    }
}

#[tokio::test]
async fn the_customer_leaf_masks_personal_data_unless_the_role_may_see_it() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let analyst = token("ana", "analyst", json!({}));
    let body = json!({ "model": "customers", "page_size": 100 }).to_string();
    let (status, page) = s
        .json_as(&analyst, "POST", "/api/v1/drill_through", &body)
        .await;
    assert_eq!(status, 200, "{page}");
    let names: Vec<&str> = page["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    let at = |n: &str| names.iter().position(|c| *c == n).unwrap();
    let customers =
        std::fs::read_to_string(repo_dir().join("tests/fixtures/bank/customers.csv")).unwrap();
    for row in page["rows"].as_array().unwrap() {
        let name = row[at("name")].as_str().unwrap();
        let phone = row[at("phone")].as_str().unwrap();
        let id = row[at("id_number")].as_str().unwrap();
        assert!(name.chars().skip(1).all(|c| c == '*'), "{name}");
        assert!(name.chars().count() >= 2, "{name}");
        assert!(phone.len() == 11 && &phone[3..7] == "****", "{phone}");
        assert!(id.len() == 18 && &id[6..14] == "********", "{id}");
        // And the unmasked values appear nowhere in the answer.
        assert!(!customers.contains(name) && !customers.contains(phone) && !customers.contains(id));
    }
    // The head office's role may see personal data: the same rows, unmasked.
    let (_, clear) = s.post("/api/v1/drill_through", body).await;
    for row in clear["rows"].as_array().unwrap() {
        // (the fixture's CSV phones are read as numbers)
        let phone = row[at("phone")].to_string();
        assert!(
            customers.contains(phone.trim_matches('"')),
            "{phone} is the stored phone"
        );
    }
    let (status, body) = s
        .json_as(
            &analyst,
            "POST",
            "/api/v1/drill_through",
            &json!({ "model": "customers", "order": [{ "by": "name" }] }).to_string(),
        )
        .await;
    assert_eq!(
        status, 422,
        "ordering by a masked column would tell what it hides"
    );
    assert_eq!(body["error"]["field"], "order[0].by");
}

#[tokio::test]
async fn broken_dashboards_name_file_and_key() {
    let errors = load_errors(&[(
        "dashboards/broken.yaml",
        r#"
title: { zh: 坏的 }
time: { grain: month, anchor: nowhere }
filters: [{ dimension: colour }]
panels:
  - { id: a, type: kpi, metrics: [no_such_metric] }
  - { id: a, type: bar, metrics: [overdue_ratio], dimensions: [status] }
  - { id: c, type: bar, metrics: [overdue_ratio], dimensions: [branch], drill: org }
  - { id: d, type: funnel, metrics: [overdue_ratio] }
  - { id: e, type: line, metrics: [overdue_ratio], width: 9 }
"#,
    )])
    .await;
    let f = "dashboards/broken.yaml";
    assert_has(&errors, f, "title", "both zh and en");
    assert_has(&errors, f, "time.anchor", "unknown model 'nowhere'");
    assert_has(
        &errors,
        f,
        "filters[0].dimension",
        "unknown dimension 'colour'",
    );
    assert_has(
        &errors,
        f,
        "panels[0].metrics[0]",
        "unknown metric 'no_such_metric'",
    );
    assert_has(&errors, f, "panels[1].id", "used twice");
    assert_has(&errors, f, "panels[1].dimensions[0]", "not available");
    assert_has(&errors, f, "panels[2].drill", "starts at the top of 'org'");
    assert_has(&errors, f, "panels[3].metrics[0]", "needs a funnel metric");
    assert_has(&errors, f, "panels[4].width", "between 1 and 4");

    let errors = load_errors(&[(
        "dashboards/typo.yaml",
        "title: { zh: a, en: b }\npanles: []\n",
    )])
    .await;
    assert_eq!(errors[0].file, "dashboards/typo.yaml");
    assert_eq!(errors[0].key, "panles");
}

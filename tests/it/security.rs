//! Security and reliability over the real server: tokens, org scopes (every row of every
//! response checked against the principal's subtree), masking, the audit trail, admission
//! limits, hot reload and hostile input.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use futures::StreamExt;
use kpilens::security::audit::{AuditLog, AuditQuery, AuditRecord, search};
use kpilens::security::auth::{Audience, Claims, sign_hs256};
use serde_json::{Value, json};

use super::http::{Server, TEST_SECRET, exchange, start, token, wait_for};
use super::{bank_settings, settings_for, temp_project};

/// The bank fixture's org (tests/fixtures/bank/org.csv, customers.csv): what each scope may see.
fn subtree(scope: &str) -> BTreeMap<&'static str, Vec<Value>> {
    let strs = |v: &[&str]| v.iter().map(|s| json!(s)).collect::<Vec<_>>();
    let ints = |v: &[i64]| v.iter().map(|i| json!(i)).collect::<Vec<_>>();
    match scope {
        "branch:西安分行" => BTreeMap::from([
            ("region", strs(&["西北"])),
            ("branch", strs(&["西安分行"])),
            ("team", strs(&["T1", "T2"])),
            ("rm", strs(&["R1", "R2"])),
            ("customer", ints(&[1, 2, 3, 7])),
            ("customer_id", ints(&[1, 2, 3, 7])),
        ]),
        "rm:R3" => BTreeMap::from([
            ("region", strs(&["西北"])),
            ("branch", strs(&["兰州分行"])),
            ("team", strs(&["T3"])),
            ("rm", strs(&["R3"])),
            ("customer", ints(&[4, 5])),
            ("customer_id", ints(&[4, 5])),
        ]),
        "region:华东" => BTreeMap::from([
            ("region", strs(&["华东"])),
            ("branch", strs(&["南京分行"])),
            ("team", strs(&["T4"])),
            ("rm", strs(&["R4"])),
            ("customer", ints(&[6])),
            ("customer_id", ints(&[6])),
        ]),
        other => panic!("no subtree for {other}"),
    }
}

/// Every org-level cell of a result (query rows, drill parents, listing rows) is in the subtree.
#[track_caller]
fn assert_in_subtree(body: &Value, allowed: &BTreeMap<&str, Vec<Value>>, what: &str) {
    let names: Vec<String> = body["schema"]
        .as_array()
        .or_else(|| body["columns"].as_array())
        .map(|cols| {
            cols.iter()
                .map(|c| c["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let Some(ok) = allowed.get(name.as_str()) else {
            continue;
        };
        for row in body["rows"].as_array().into_iter().flatten() {
            let v = &row[i];
            assert!(
                v.is_null() || ok.contains(v),
                "{what}: {name} = {v} is outside the scope ({ok:?})"
            );
        }
    }
    if let Some(members) = body["members"].as_array() {
        let level = body["level"].as_str().unwrap();
        for m in members {
            assert!(
                allowed[level].contains(m),
                "{what}: member {m} outside the scope"
            );
        }
    }
}

fn total(body: &Value, metric: &str) -> Value {
    let i = body["schema"]
        .as_array()
        .unwrap()
        .iter()
        .position(|f| f["name"] == metric)
        .unwrap();
    body["totals"][i].clone()
}

#[tokio::test]
async fn tokens_are_checked_and_refusals_say_why() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"] }).to_string();
    let ask = |auth: String| {
        let q = q.clone();
        let s = &s;
        async move { s.json_as(&auth, "POST", "/api/v1/query", &q).await }
    };

    let none = s.call("POST", "/api/v1/query", &[], &q).await;
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"kpilens\"")
    );
    let cases = [
        ("Basic dXNlcjpwYXNz".to_string(), "invalid_token"),
        ("Bearer not-a-key".to_string(), "invalid_token"),
        ("Bearer a.b.c".to_string(), "invalid_token"),
        (
            format!(
                "Bearer {}",
                sign_hs256(
                    b"another-secret-0123456789abcdefghij",
                    &claims("x", "analyst", 3600)
                )
            ),
            "invalid_signature",
        ),
        (
            format!(
                "Bearer {}",
                sign_hs256(TEST_SECRET.as_bytes(), &claims("x", "analyst", -3600))
            ),
            "token_expired",
        ),
        (
            format!(
                "Bearer {}",
                sign_hs256(TEST_SECRET.as_bytes(), &claims("x", "janitor", 3600))
            ),
            "invalid_claims",
        ),
        (
            format!(
                "Bearer {}.",
                signing_input("none", &claims("x", "head_office", 3600))
            ),
            "invalid_token",
        ),
        (
            token("x", "branch_head", json!({ "planet": "Mars" })),
            "invalid_claims",
        ),
    ];
    assert_unauthenticated(&s, &q, cases).await;
    // A token signed with the configured RSA key (RS256), one with the EC key (ES256) and the API
    // key all work.
    let (status, _) = ask(rs256(&claims("rs", "analyst", 3600))).await;
    assert_eq!(status, 200);
    let es = signed(
        jsonwebtoken::Algorithm::ES256,
        None,
        &claims("es", "analyst", 3600),
    );
    let (status, _) = ask(es).await;
    assert_eq!(status, 200);
    // A token valid for ten years is a key that never expires: refused, saying the limit.
    let forever = signed(
        jsonwebtoken::Algorithm::HS256,
        None,
        &claims("old", "analyst", 10 * 365 * 86_400),
    );
    let (status, body) = ask(forever).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max_lifetime_secs")),
        "{body}"
    );
    // Algorithm confusion: HS256 "signed" with the RSA public key as the secret is refused
    // (the HS256 key is the configured secret, nothing else).
    let public_pem =
        std::fs::read(super::repo_dir().join("tests/fixtures/auth/test-rs256.pub.pem")).unwrap();
    let confused = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims("x", "head_office", 3600),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem).unwrap(),
    )
    .unwrap();
    let (status, body) = ask(format!("Bearer {confused}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, _) = ask(s.auth.clone()).await;
    assert_eq!(status, 200);
    // What touches no data needs no token; the catalog's status names files and columns.
    for path in ["/healthz", "/api/v1/catalog", "/metrics", "/"] {
        assert_eq!(s.call("GET", path, &[], "").await.status, 200, "{path}");
    }
    assert_eq!(
        s.call("GET", "/api/v1/catalog/status", &[], "")
            .await
            .status,
        401
    );
}

/// Each Authorization header gets a 401 with its code.
async fn assert_unauthenticated(
    s: &Server,
    query: &str,
    cases: impl IntoIterator<Item = (String, &str)>,
) {
    for (auth, code) in cases {
        let (status, body) = s.json_as(&auth, "POST", "/api/v1/query", query).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some(code)),
            "{auth}: {body}"
        );
    }
}

fn claims(sub: &str, role: &str, expires_in: i64) -> Claims {
    Claims {
        sub: sub.to_string(),
        role: role.to_string(),
        scope: Default::default(),
        exp: chrono::Utc::now().timestamp() + expires_in,
        nbf: None,
        iss: None,
        aud: None,
    }
}

/// A token signed with one of the test keys (tests/fixtures/auth), with an optional `kid`.
fn signed(alg: jsonwebtoken::Algorithm, kid: Option<&str>, claims: &Claims) -> String {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let dir = super::repo_dir().join("tests/fixtures/auth");
    let key = match alg {
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(dir.join("test-rs256.key.pem")).unwrap())
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(dir.join("test-es256.key.pem")).unwrap())
        }
        _ => EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    }
    .unwrap();
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    format!(
        "Bearer {}",
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    )
}

fn rs256(claims: &Claims) -> String {
    signed(jsonwebtoken::Algorithm::RS256, None, claims)
}

/// `base64url(header).base64url(claims)`: the part of a JWT a signature covers, for forging
/// tokens by hand (`alg: none`).
fn signing_input(alg: &str, claims: &Claims) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = json!({ "alg": alg, "typ": "JWT" });
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap())
    )
}

#[tokio::test]
async fn a_scope_cannot_be_widened_by_any_route() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let principals = [
        (
            "branch:西安分行",
            token("bh", "branch_head", json!({ "branch": "西安分行" })),
        ),
        ("rm:R3", token("rm3", "rm", json!({ "rm": "R3" }))),
        (
            "region:华东",
            token("rh", "region_head", json!({ "region": "华东" })),
        ),
    ];
    let time = json!({ "grain": "month", "from": "2024-01-01", "to": "2024-04-30" });
    for (scope, auth) in &principals {
        let allowed = subtree(scope);
        let post = |path: &'static str, body: Value| {
            let auth = auth.clone();
            let s = &s;
            async move { s.json_as(&auth, "POST", path, &body.to_string()).await }
        };
        let get = |path: String| {
            let auth = auth.clone();
            let s = &s;
            async move { s.json_as(&auth, "GET", &path, "").await }
        };
        // Directly: every level of the hierarchy as a dimension.
        for dim in ["region", "branch", "team", "rm", "customer"] {
            let (status, body) = post(
                "/api/v1/query",
                json!({ "metrics": ["loan_balance", "customer_count"], "dimensions": [dim], "time": time }),
            )
            .await;
            assert_eq!(status, 200, "{scope} by {dim}: {body}");
            assert_in_subtree(&body, &allowed, &format!("{scope} by {dim}"));
        }
        // Indirectly: a filter, a drill path and a member list naming what is outside.
        let outside_branch = if scope.contains("西安") {
            "南京分行"
        } else {
            "西安分行"
        };
        let (_, body) = post(
            "/api/v1/query",
            json!({ "metrics": ["loan_balance"], "dimensions": ["branch"],
                    "filters": [{ "dimension": "branch", "op": "eq", "value": outside_branch }] }),
        )
        .await;
        assert!(
            body["rows"].as_array().unwrap().is_empty(),
            "{scope}: {body}"
        );
        let outside_region = if scope.contains("华东") {
            "西北"
        } else {
            "华东"
        };
        let (status, body) = post(
            "/api/v1/query",
            json!({ "metrics": ["loan_balance"], "time": time,
                    "drill": { "hierarchy": "org", "path": { "region": outside_region } } }),
        )
        .await;
        assert_eq!(status, 200);
        assert_in_subtree(&body, &allowed, &format!("{scope} drill"));
        assert!(
            body["rows"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r[1].is_null() || r[1] == json!(0)),
            "{scope}: a drill outside the scope shows nothing: {body}"
        );
        for level in ["region", "branch", "team", "rm", "customer"] {
            let (status, body) =
                get(format!("/api/v1/hierarchies/org/members?level={level}")).await;
            assert_eq!(status, 200);
            assert_in_subtree(&body, &allowed, &format!("{scope} members {level}"));
        }
        let (_, body) = get(format!(
            "/api/v1/hierarchies/org/members?level=team&region={outside_region}"
        ))
        .await;
        assert_eq!(body["members"], json!([]), "{scope}");
        // A dimension outside the hierarchy still only sums the scope's rows.
        let (_, by_segment) = post(
            "/api/v1/query",
            json!({ "metrics": ["loan_balance"], "dimensions": ["segment"], "time": time }),
        )
        .await;
        let (level, member) = scope.split_once(':').unwrap();
        let (_, head_office) = s
            .query(json!({ "metrics": ["loan_balance"], "time": time,
                "filters": [{ "dimension": level, "op": "eq", "value": member }] }))
            .await;
        assert_eq!(
            total(&by_segment, "loan_balance"),
            total(&head_office, "loan_balance"),
            "{scope}"
        );
        // Drill-through: only the scope's customers, however the path is given.
        let (status, page) = post("/api/v1/drill_through", json!({ "model": "customers" })).await;
        assert_eq!(status, 200);
        assert_in_subtree(&page, &allowed, &format!("{scope} drill-through"));
        assert_eq!(page["total"], allowed["customer"].len(), "{scope}");
        let (_, page) = post(
            "/api/v1/drill_through",
            json!({ "model": "customers", "drill": { "hierarchy": "org", "path": { "region": outside_region } } }),
        )
        .await;
        assert_eq!(page["total"], 0, "{scope}");
        // The customer view: a customer outside the scope is the same 404 as no customer.
        let (_, none) = get("/api/v1/customers/99".to_string()).await;
        for customer in 1..=7 {
            let (status, body) = get(format!("/api/v1/customers/{customer}")).await;
            if allowed["customer"].contains(&json!(customer)) {
                assert_eq!(status, 200, "{scope} customer {customer}: {body}");
                for section in body["sections"].as_array().unwrap() {
                    assert_in_subtree(section, &allowed, &format!("{scope} customer {customer}"));
                }
            } else {
                assert_eq!(status, 404, "{scope} customer {customer}: {body}");
                assert_eq!(
                    body["error"]["message"]
                        .as_str()
                        .unwrap()
                        .replace(&customer.to_string(), "#"),
                    none["error"]["message"]
                        .as_str()
                        .unwrap()
                        .replace("99", "#"),
                    "{scope} customer {customer}"
                );
            }
        }
        // Dashboards and snapshots: every panel.
        for id in ["executive", "risk", "retail"] {
            let (status, view) = get(format!("/api/v1/dashboards/{id}?as_of=2024-04-30")).await;
            assert_eq!(status, 200);
            for p in view["panels"].as_array().unwrap() {
                assert!(
                    p["error"].is_null(),
                    "{scope} {id}.{}: {}",
                    p["id"],
                    p["error"]
                );
                assert_in_subtree(&p["result"], &allowed, &format!("{scope} {id}.{}", p["id"]));
            }
            for f in view["filters"].as_array().unwrap() {
                if let Some(ok) = allowed.get(f["dimension"].as_str().unwrap()) {
                    assert!(
                        f["options"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .all(|o| ok.contains(o))
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn scopes_never_share_cached_answers_or_snapshot_tags() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"], "time": { "from": "2024-04-01", "to": "2024-04-30" } });
    let (_, all) = s.query(q.clone()).await;
    let (_, again) = s.query(q.clone()).await;
    assert_eq!(again["meta"]["served_by"], "cache");
    let bh = token("bh", "branch_head", json!({ "branch": "西安分行" }));
    let (_, branch) = s
        .json_as(&bh, "POST", "/api/v1/query", &q.to_string())
        .await;
    assert_eq!(
        branch["meta"]["served_by"], "engine",
        "another scope computes its own answer"
    );
    assert_ne!(branch["rows"][0][0], all["rows"][0][0], "{branch} {all}");

    let etag = |auth: String| {
        let s = &s;
        async move {
            s.call(
                "GET",
                "/api/v1/snapshot/risk",
                &[("Authorization", &auth)],
                "",
            )
            .await
            .header("etag")
            .unwrap()
            .to_string()
        }
    };
    assert_ne!(etag(s.auth.clone()).await, etag(bh.clone()).await);
}

#[tokio::test]
async fn what_cannot_be_scoped_is_refused() {
    let project = temp_project(&[(
        "metrics/org_chart.yaml",
        "models:\n  org_chart:\n    source: { csv: org.csv }\n    dimensions:\n      team: { column: team }\nmeasures:\n  rms: { model: org_chart, agg: count }\nmetrics:\n  rm_count: { type: simple, measure: rms }\n",
    )]);
    let s = start(settings_for(project.path())).await;
    let (status, _) = s.query(json!({ "metrics": ["rm_count"] })).await;
    assert_eq!(status, 200, "the whole bank may count RMs");
    let bh = token("bh", "branch_head", json!({ "branch": "B1" }));
    let (status, body) = s
        .json_as(
            &bh,
            "POST",
            "/api/v1/query",
            &json!({ "metrics": ["rm_count"] }).to_string(),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "out_of_scope");
}

#[tokio::test]
async fn every_data_request_is_audited_without_personal_data() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let bh = token("bh", "branch_head", json!({ "branch": "西安分行" }));
    s.query(
        json!({ "metrics": ["overdue_ratio"], "dimensions": ["branch"],
        "filters": [{ "dimension": "segment", "op": "in", "values": ["retail"] }] }),
    )
    .await;
    s.json_as(
        &bh,
        "POST",
        "/api/v1/query",
        &json!({ "metrics": ["loan_balance"] }).to_string(),
    )
    .await;
    // The head office sees personal data unmasked: the answer has it, the audit line must not.
    let (_, page) = s
        .post(
            "/api/v1/drill_through",
            json!({ "model": "customers" }).to_string(),
        )
        .await;
    assert_eq!(page["total"], 7);
    s.json_as("", "GET", "/api/v1/dashboards", "").await;
    s.get("/api/v1/dashboards/risk").await;

    let log = s.dir.path().join("audit.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let records: Vec<AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5, "{text}");
    assert_eq!(records[0].principal, "head-office-test");
    assert_eq!(records[0].metrics, ["overdue_ratio"]);
    assert_eq!(records[0].dimensions, ["branch"]);
    assert_eq!(records[0].filters[0]["values"], json!(["retail"]));
    assert_eq!(records[0].cached, Some(false));
    assert!(records[0].rows.is_some() && records[0].status == 200);
    assert_eq!(
        (records[1].principal.as_str(), records[1].scope.as_str()),
        ("bh", "branch=\"西安分行\"")
    );
    assert_eq!(records[2].rows, Some(7));
    assert_eq!(
        (records[3].principal.as_str(), records[3].status),
        ("anonymous", 401)
    );
    assert_eq!(records[3].error.as_deref(), Some("missing_token"));
    let customers =
        std::fs::read_to_string(super::repo_dir().join("tests/fixtures/bank/customers.csv"))
            .unwrap();
    for line in customers.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        for personal in &cells[1..4] {
            assert!(!text.contains(personal), "{personal} is in the audit log");
        }
    }

    // `kpilens audit` finds them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kpilens"))
        .args(["audit", "--file"])
        .arg(&log)
        .args(["--principal", "bh", "--status", "2xx"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let found: Vec<AuditRecord> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].metrics, ["loan_balance"]);
}

#[test]
fn the_audit_log_rotates_by_size_and_keeps_what_it_should() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, 2048, 2, None).unwrap();
    for i in 0..100 {
        log.append(AuditRecord {
            principal: format!("p{i}"),
            route: "/api/v1/query".into(),
            status: 200,
            ..AuditRecord::default()
        })
        .unwrap();
    }
    for f in ["audit.log", "audit.log.1", "audit.log.2"] {
        let size = std::fs::metadata(dir.path().join(f)).unwrap().len();
        assert!(size > 0 && size <= 2048, "{f}: {size} bytes");
    }
    assert!(
        !dir.path().join("audit.log.3").exists(),
        "only two rotations are kept"
    );
    let (kept, _) = search(&path, &AuditQuery::default(), usize::MAX).unwrap();
    // The log's own notes of what the retention policy removed, apart.
    let kept: Vec<_> = kept.into_iter().filter(|r| r.removed.is_none()).collect();
    assert_eq!(kept.last().unwrap().principal, "p99", "the newest is kept");
    let names: Vec<usize> = kept
        .iter()
        .map(|r| r.principal[1..].parse().unwrap())
        .collect();
    assert!(
        names.windows(2).all(|w| w[0] + 1 == w[1]),
        "oldest first, none lost between files"
    );
}

#[tokio::test]
async fn a_principal_over_its_rate_gets_429_and_a_saturated_server_503() {
    let (_data, mut settings) = bank_settings().await;
    settings.rate_per_second = 0.5;
    settings.rate_burst = 3.0;
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"] });
    for _ in 0..3 {
        assert_eq!(s.query(q.clone()).await.0, 200);
    }
    let r = s
        .call(
            "POST",
            "/api/v1/query",
            &[("Authorization", &s.auth)],
            &q.to_string(),
        )
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("2"));
    // Another principal has its own bucket.
    let other = token("ana", "analyst", json!({}));
    assert_eq!(
        s.json_as(&other, "POST", "/api/v1/query", &q.to_string())
            .await
            .0,
        200
    );

    let (_data, mut settings) = bank_settings().await;
    settings.max_concurrent = 1;
    settings.queue_wait_ms = 1;
    let s = start(settings).await;
    let statuses = futures::future::join_all((0..8).map(|i| {
        let s = &s;
        async move {
            // Distinct cold queries from distinct principals, so each needs the one slot.
            let q = json!({ "metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["branch"],
                "time": { "grain": "day", "from": "2024-01-01", "to": format!("2024-04-{:02}", 10 + i) } });
            let who = token(&format!("analyst{i}"), "analyst", json!({}));
            s.call("POST", "/api/v1/query", &[("Authorization", &who)], &q.to_string()).await
        }
    }))
    .await;
    assert!(statuses.iter().all(|r| r.status == 200 || r.status == 503));
    let refused: Vec<_> = statuses.iter().filter(|r| r.status == 503).collect();
    assert!(
        !refused.is_empty(),
        "one slot and no queue: some are refused"
    );
    assert!(refused.iter().all(|r| r.header("retry-after") == Some("1")));
    assert!(statuses.iter().any(|r| r.status == 200));
}

#[tokio::test]
async fn hot_reload_swaps_good_changes_and_keeps_serving_through_bad_ones() {
    let project = temp_project(&[]);
    let mut settings = settings_for(project.path());
    settings.reload_ms = 50;
    let s = start(settings).await;
    let (_, before) = s.get("/api/v1/catalog/status").await;
    let version = before["catalog"]["version"].clone();
    let q = json!({ "metrics": ["overdue_ratio"] });

    // A broken file: reported with file and key; the last good catalog keeps answering.
    let broken = project.path().join("metrics/broken.yaml");
    std::fs::write(
        &broken,
        "metrics:\n  bad: { type: ratio, numerator: nothing, denominator: loan_balance }\n",
    )
    .unwrap();
    let status = wait_for(&s, "the broken change", |st| {
        !st["catalog"]["last_error"].is_null()
    })
    .await;
    let errors = &status["catalog"]["last_error"]["errors"];
    assert_eq!(errors[0]["file"], "metrics/broken.yaml", "{status}");
    assert_eq!(errors[0]["key"], "metrics.bad.numerator");
    assert_eq!(status["catalog"]["version"], version);
    let (code, body) = s.query(q.clone()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["meta"]["catalog_version"], version);

    // A good change replaces it atomically.
    std::fs::write(&broken, "metrics:\n  overdue_ratio_copy: { type: ratio, numerator: overdue_balance, denominator: loan_balance }\n").unwrap();
    let status = wait_for(&s, "the good change", |st| {
        st["catalog"]["version"] != version
    })
    .await;
    assert!(status["catalog"]["last_error"].is_null());
    assert_eq!(status["catalog"]["reloads"], 1);
    let (code, body) = s.query(json!({ "metrics": ["overdue_ratio_copy"] })).await;
    assert_eq!(code, 200, "{body}");
    let (_, original) = s.query(q).await;
    assert_eq!(body["totals"][0], original["totals"][0]);
}

#[tokio::test]
async fn hostile_input_gets_a_clear_4xx_and_the_server_keeps_serving() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let sql = "x' OR '1'='1'; DROP TABLE loans; --";
    let cases: Vec<(String, u16, &str)> = vec![
        // SQL in values is a typed literal: it matches nothing.
        (
            json!({ "metrics": ["loan_balance"], "dimensions": ["branch"],
            "filters": [{ "dimension": "branch", "op": "eq", "value": sql }] })
            .to_string(),
            200,
            "",
        ),
        // SQL in names is an unknown name.
        (
            json!({ "metrics": [sql] }).to_string(),
            404,
            "unknown_metric",
        ),
        (
            json!({ "metrics": ["loan_balance"], "dimensions": [sql] }).to_string(),
            404,
            "unknown_dimension",
        ),
        (
            json!({ "metrics": ["loan_balance"], "order": [{ "by": sql }] }).to_string(),
            422,
            "invalid_query",
        ),
        // Unknown and duplicated fields.
        (
            r#"{"metrics":["loan_balance"],"metricz":[]}"#.to_string(),
            400,
            "malformed_request",
        ),
        (
            r#"{"metrics":["loan_balance"],"metrics":["aum"]}"#.to_string(),
            400,
            "malformed_request",
        ),
        // Unicode and very long strings.
        (
            json!({ "metrics": ["贷款余额😀\u{202e}"] }).to_string(),
            404,
            "unknown_metric",
        ),
        (
            json!({ "metrics": ["x".repeat(100_000)] }).to_string(),
            404,
            "unknown_metric",
        ),
        // Deeply nested and huge JSON.
        (
            format!(r#"{{"metrics":{}"#, "[".repeat(10_000)),
            400,
            "malformed_request",
        ),
        (
            json!({ "metrics": ["loan_balance"], "filters": [{ "dimension": "branch", "op": "in",
            "values": vec!["y".repeat(1000); 400] }] })
            .to_string(),
            413,
            "body_too_large",
        ),
        ("\u{0}\u{1}garbage".to_string(), 400, "malformed_request"),
    ];
    for (body, status, code) in cases {
        let (got, answer) = s.post("/api/v1/query", body.clone()).await;
        assert_eq!(got, status, "{}: {answer}", &body[..body.len().min(80)]);
        if status == 200 {
            assert!(answer["rows"].as_array().unwrap().is_empty());
        } else {
            assert_eq!(answer["error"]["code"], code, "{answer}");
            let message = answer["error"]["message"].as_str().unwrap();
            assert!(
                message.len() < 2_000,
                "the error does not echo a huge input back"
            );
        }
    }
    for path in [
        "/api/v1/dashboards/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/dashboards/%2e%2e",
        "/api/v1/snapshot/..%5C..%5Cmetrics",
    ] {
        let (status, body) = s.get(path).await;
        assert!((400..500).contains(&status), "{path}: {status} {body}");
    }
    // SQL as a member is a typed literal too: no such member.
    let (status, body) = s
        .get("/api/v1/hierarchies/org/members?level=branch&region=%27%20OR%201%3D1")
        .await;
    assert_eq!((status, body["members"].clone()), (200, json!([])));
    let (status, _) = s.query(json!({ "metrics": ["loan_balance"] })).await;
    assert_eq!(status, 200, "still serving");
}

#[tokio::test]
async fn a_yaml_bomb_and_a_wrong_schema_file_are_load_errors_not_crashes() {
    let bomb = "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let errors = super::catalog_errors::load_errors(&[("metrics/bomb.yaml", bomb)]).await;
    assert_eq!(errors[0].file, "metrics/bomb.yaml", "{errors:?}");

    // A Parquet file with another schema dropped into a table's place: the server reports it and
    // keeps answering from the files it validated.
    let (data, mut settings) = bank_settings().await;
    settings.reload_ms = 50;
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"], "time": { "from": "2024-04-01", "to": "2024-04-30" } });
    let (_, before) = s.query(q.clone()).await;
    let parquet_in = |p: std::path::PathBuf| {
        if p.is_dir() {
            std::fs::read_dir(&p)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .find(|f| f.extension().is_some_and(|x| x == "parquet"))
                .unwrap()
        } else {
            p
        }
    };
    let wrong = parquet_in(data.path().join("customers"));
    let loan_month = data.path().join("loan_month");
    let target = if loan_month.is_dir() {
        loan_month.join("zz_wrong.parquet")
    } else {
        loan_month
    };
    std::fs::copy(&wrong, &target).unwrap();
    let status = wait_for(&s, "the data refresh error", |st| {
        !st["data_refresh_error"].is_null()
    })
    .await;
    let errors = status["data_refresh_error"]["errors"].to_string();
    assert!(
        errors.contains("zz_wrong.parquet has other columns"),
        "{status}"
    );
    let (code, after) = s.query(q).await;
    assert_eq!(code, 200, "{after}");
    assert_eq!(after["totals"], before["totals"]);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let (status, doc) = s.json_as("", "GET", "/api/v1/openapi.json", "").await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.0.3");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "/healthz",
        "/readyz",
        "/api/v1/catalog",
        "/api/v1/catalog/status",
        "/api/v1/openapi.json",
        "/api/v1/query",
        "/api/v1/explain",
        "/api/v1/drill_through",
        "/api/v1/export",
        "/api/v1/customers/{id}",
        "/mcp",
        "/api/v1/hierarchies/{hierarchy}/members",
        "/api/v1/dashboards",
        "/api/v1/dashboards/{id}",
        "/api/v1/snapshot/{id}",
        "/api/v1/alerts",
        "/api/v1/events",
        "/api/v1/alerts/stream",
        "/api/v1/alerts/evaluate",
        "/api/v1/tasks",
        "/metrics",
    ];
    let mut paths = paths.clone();
    paths.sort();
    expected.sort();
    assert_eq!(
        paths, expected,
        "every route, and only routes, are documented"
    );
    let metrics =
        &doc["components"]["schemas"]["QueryRequest"]["properties"]["metrics"]["items"]["enum"];
    assert!(
        metrics
            .as_array()
            .unwrap()
            .contains(&json!("overdue_ratio")),
        "the catalog's names"
    );
    let ids = &doc["components"]["parameters"]["DashboardId"]["schema"]["enum"];
    assert_eq!(ids.as_array().unwrap().len(), 5);
}

/// A spawned server, killed when its test ends, a failing one too (a failed assertion would
/// otherwise leave it serving after the test binary has exited).
pub struct DemoProcess(std::process::Child);

impl std::ops::Deref for DemoProcess {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for DemoProcess {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `kpilens demo` as a separate process over `data` (so its memory and signals are its own),
/// and the address it serves on.
pub fn spawn_demo(data: &std::path::Path, args: &[&str]) -> (DemoProcess, std::net::SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kpilens"))
        .args(["demo", "--addr", "127.0.0.1:0", "--project"])
        .arg(super::repo_dir())
        .arg("--data")
        .arg(data)
        .arg("--audit-log")
        .arg(data.join("audit.log"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let line = std::io::BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("serving"))
        .expect("the server starts");
    let addr = line
        .rsplit("http://")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (DemoProcess(child), addr)
}

/// The demo's people with their tokens.
pub async fn demo_users(addr: std::net::SocketAddr) -> Vec<Value> {
    let raw = exchange(addr, "GET", "/api/v1/demo/users", &[], "").await;
    serde_json::from_slice(&raw.body).unwrap()
}

/// Peak resident memory of a process, from /proc (Linux), in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

#[tokio::test]
async fn a_bounded_load_from_several_principals_stays_in_scope_and_in_memory() {
    // The binary as deployed (a separate process, so its memory is its own), over the demo bank.
    let (data, _) = super::demo_settings();
    let (memory_mb, cache_mb) = (512u64, 64u64);
    let (mut child, addr) = spawn_demo(
        data.path(),
        &[
            "--memory-mb",
            &memory_mb.to_string(),
            "--cache-mb",
            &cache_mb.to_string(),
            "--rate-per-second",
            "100000",
            "--rate-burst",
            "100000",
            "--reload-ms",
            "0",
            "--warm-up",
            "false",
            // Scope and memory under load are measured here, not refusals (they have their own
            // tests): a machine slowed by other work must not turn a principal's wait for its
            // share of the slots into a 429.
            "--queue-wait-ms",
            "60000",
        ],
    );
    let users = demo_users(addr).await;
    let head_office = format!("Bearer {}", users[0]["token"].as_str().unwrap());

    // What each principal may see, from the head office's member lists.
    let mut allowed: Vec<(String, BTreeMap<String, Vec<Value>>)> = Vec::new();
    for u in &users {
        let auth = format!("Bearer {}", u["token"].as_str().unwrap());
        let mut sets = BTreeMap::new();
        if let Some((level, member)) = u["scope"].as_object().and_then(|m| m.iter().next()) {
            // The head office's own rows of the scope: its ancestors and its subtree.
            let q = json!({ "metrics": ["customer_count"], "dimensions": ["region", "branch", "team", "rm"],
                "filters": [{ "dimension": level, "op": "eq", "value": member }] });
            let r = exchange(
                addr,
                "POST",
                "/api/v1/query",
                &[("Authorization", &head_office)],
                &q.to_string(),
            )
            .await;
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            for (i, level) in ["region", "branch", "team", "rm"].iter().enumerate() {
                let mut members: Vec<Value> = body["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r[i].clone())
                    .collect();
                members.dedup();
                assert!(!members.is_empty(), "{level} of {member}");
                sets.insert(level.to_string(), members);
            }
        }
        allowed.push((auth, sets));
    }

    let started = std::time::Instant::now();
    let requests = 800usize;
    let latencies = futures::stream::iter(0..requests)
        .map(|i| {
            let (auth, sets) = &allowed[i % allowed.len()];
            async move {
                // Nine in ten repeat one of a few queries (cached); one in ten is new.
                let to = if i % 10 == 0 {
                    format!("2025-{:02}-{:02}", 1 + (i / 10) % 12, 1 + (i / 120) % 28)
                } else {
                    "2025-12-31".to_string()
                };
                let dim = ["region", "branch", "team", "segment"][i % 4];
                let q = json!({ "metrics": ["loan_balance", "overdue_ratio"], "dimensions": [dim],
                    "time": { "from": "2025-01-01", "to": to } });
                let t = std::time::Instant::now();
                let r = exchange(
                    addr,
                    "POST",
                    "/api/v1/query",
                    &[("Authorization", auth)],
                    &q.to_string(),
                )
                .await;
                let elapsed = t.elapsed();
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                if !sets.is_empty() {
                    let sets: BTreeMap<&str, Vec<Value>> =
                        sets.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
                    assert_in_subtree(&body, &sets, "under load");
                }
                elapsed
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let wall = started.elapsed();
    let mut ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let peak = peak_rss_mib(child.id()).unwrap_or(0.0);
    let _ = child.kill();
    let _ = child.wait();
    let bound = (memory_mb + cache_mb + 256) as f64;
    eprintln!(
        "load: {requests} requests from {} principals, 16 at a time: {:.0} req/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server peak RSS {peak:.0} MiB (bound {bound:.0} MiB: pool {memory_mb} + cache {cache_mb} + 256 runtime)",
        allowed.len(),
        requests as f64 / wall.as_secs_f64(),
        ms[ms.len() / 2],
        ms[ms.len() * 99 / 100],
        ms[ms.len() - 1]
    );
    assert!(peak > 0.0 && peak < bound, "peak RSS {peak} MiB");
}

#[tokio::test]
async fn a_shutdown_finishes_the_requests_in_flight() {
    let (data, _) = super::demo_settings();
    let (mut child, addr) = spawn_demo(data.path(), &[]);
    let users = demo_users(addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    // A cold dashboard (a second or so of work), then SIGTERM while it runs.
    let in_flight = tokio::spawn(async move {
        exchange(
            addr,
            "GET",
            "/api/v1/dashboards/retail",
            &[("Authorization", &auth)],
            "",
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the request in flight is answered");
    let exit = child.wait().unwrap();
    assert!(exit.success(), "a clean exit: {exit}");
    // And it accepts nothing new.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dashboards_are_warm_at_start_and_after_a_data_change() {
    let (data, mut settings) = bank_settings().await;
    settings.warm_up = true;
    settings.reload_ms = 50;
    let s = start(settings).await;
    let warmed = |n: u64| {
        let s = &s;
        async move {
            for _ in 0..200 {
                if s.service.warm_ups() >= n {
                    return s.service.engine_runs();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("warm-up {n} did not finish");
        }
    };
    let runs = warmed(1).await;
    for id in ["executive", "retail", "corporate_credit", "risk", "service"] {
        let (_, view) = s.get(&format!("/api/v1/dashboards/{id}")).await;
        assert_eq!(
            view["meta"]["panels_cached"], view["meta"]["panels"],
            "{id} is warm"
        );
    }
    assert_eq!(
        s.service.engine_runs(),
        runs,
        "the first reader computes nothing"
    );

    // New data: the watcher picks it up and warms again.
    let loan_month = data.path().join("loan_month");
    let file = if loan_month.is_dir() {
        std::fs::read_dir(&loan_month)
            .unwrap()
            .flatten()
            .next()
            .unwrap()
            .path()
    } else {
        loan_month
    };
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, bytes).unwrap();
    let rewarmed = warmed(2).await;
    assert!(rewarmed > runs, "warmed again over the new data");
    let (_, view) = s.get("/api/v1/dashboards/risk").await;
    assert_eq!(view["meta"]["panels_cached"], view["meta"]["panels"]);
}

/// An identity provider's JWK set on loopback: keys by `kid`, each pinned to its algorithm,
/// `aud` as a string or an array, the set fetched again for a new `kid` (key rotation) but not
/// for every forged one.
#[tokio::test]
async fn an_identity_providers_key_set_verifies_tokens_by_kid() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use jsonwebtoken::jwk::{Jwk, JwkSet};
    use jsonwebtoken::{Algorithm, EncodingKey};

    let dir = super::repo_dir().join("tests/fixtures/auth");
    let jwk = |alg: Algorithm, file: &str, kid: &str| {
        let pem = std::fs::read(dir.join(file)).unwrap();
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            _ => EncodingKey::from_ec_pem(&pem),
        }
        .unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk
    };
    let keys = Arc::new(Mutex::new(JwkSet {
        keys: vec![
            jwk(Algorithm::RS256, "test-rs256.key.pem", "rsa-1"),
            jwk(Algorithm::ES256, "test-es256.key.pem", "ec-1"),
        ],
    }));
    let fetches = Arc::new(AtomicUsize::new(0));
    let idp = {
        let (keys, fetches) = (keys.clone(), fetches.clone());
        axum::Router::new().route(
            "/certs",
            axum::routing::get(move || {
                let (keys, fetches) = (keys.clone(), fetches.clone());
                async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    axum::Json(keys.lock().unwrap().clone())
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, idp).await.unwrap() });

    let (data, mut settings) = bank_settings().await;
    let config = data.path().join("auth-sso.yaml");
    std::fs::write(
        &config,
        format!(
            "hierarchy: org\nroles:\n  analyst: {{ personal_data: false }}\njwt:\n  jwks_url: http://{idp_addr}/certs\n  jwks_allow_http: true\n  jwks_refetch_secs: 1\n  issuer: https://sso.bank.example/realms/staff\n  audience: kpilens\n"
        ),
    )
    .unwrap();
    settings.auth_file = Some(config);
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"] }).to_string();
    let ask = |auth: String| {
        let q = q.clone();
        let s = &s;
        async move { s.json_as(&auth, "POST", "/api/v1/query", &q).await }
    };
    let sso = |aud: Audience| Claims {
        iss: Some("https://sso.bank.example/realms/staff".to_string()),
        aud: Some(aud),
        ..claims("u1", "analyst", 3600)
    };
    let ours = || Audience::Many(vec!["account".to_string(), "kpilens".to_string()]);

    let (status, body) = ask(signed(Algorithm::RS256, Some("rsa-1"), &sso(ours()))).await;
    assert_eq!(status, 200, "{body}");
    let one = Audience::One("kpilens".to_string());
    let (status, body) = ask(signed(Algorithm::ES256, Some("ec-1"), &sso(one))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetches.load(Ordering::SeqCst), 1, "the set is cached");

    let refused = [
        // Another audience, another issuer.
        (
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &sso(Audience::One("crm".into())),
            ),
            "invalid_claims",
        ),
        (
            signed(
                Algorithm::RS256,
                Some("rsa-1"),
                &Claims {
                    iss: Some("https://evil.example".into()),
                    ..sso(ours())
                },
            ),
            "invalid_claims",
        ),
        // The EC key's kid on an RS256 token: the key's algorithm is pinned.
        (
            signed(Algorithm::RS256, Some("ec-1"), &sso(ours())),
            "invalid_token",
        ),
        // An HS256 token naming an RSA key (the public key is no secret).
        (
            signed(Algorithm::HS256, Some("rsa-1"), &sso(ours())),
            "invalid_token",
        ),
        // A key the provider does not have.
        (
            signed(Algorithm::RS256, Some("nope"), &sso(ours())),
            "invalid_token",
        ),
        (
            signed(Algorithm::RS256, Some("nope-2"), &sso(ours())),
            "invalid_token",
        ),
    ];
    assert_unauthenticated(&s, &q, refused).await;
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        1,
        "forged kids right after a fetch do not reach the identity provider"
    );

    // Rotation: the provider publishes a new key; a token naming it fetches the set again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    keys.lock()
        .unwrap()
        .keys
        .push(jwk(Algorithm::ES256, "test-es256.key.pem", "ec-2"));
    let (status, body) = ask(signed(Algorithm::ES256, Some("ec-2"), &sso(ours()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

/// A cached answer reads no file: the data's versions are reused until inotify reports a change;
/// a file dropped into a table's folder is seen by the very next query, with the periodic
/// re-scan off (so only the watcher can have told it).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_dropped_file_is_seen_by_the_next_query_and_cached_answers_read_no_files() {
    let (data, mut settings) = bank_settings().await;
    settings.reload_ms = 0;
    let service = kpilens::service::KpiService::open(&settings).await.unwrap();
    assert_eq!(service.data_watch().0, "inotify");
    let q = json!({ "metrics": ["loan_balance"], "rollups": false });
    let total =
        |r: &kpilens::service::QueryResponse| r.result.rows[0].last().cloned().unwrap_or_default();
    let first = super::run(&service, q.clone()).await;
    let scans = service.data_watch().1;
    for _ in 0..5 {
        let again = super::run(&service, q.clone()).await;
        assert_eq!(again.meta.served_by, "cache");
    }
    assert_eq!(
        service.data_watch().1,
        scans,
        "cached answers listed no table's files"
    );

    // One more file in the loan_month folder: every loan row twice.
    let folder = data.path().join("loan_month");
    let part = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "parquet"))
        .unwrap();
    std::fs::copy(&part, folder.join("part-dropped-in.parquet")).unwrap();
    // The very next query: the kernel queued the event before the copy returned.
    let seen = super::run(&service, q.clone()).await;
    assert_eq!(seen.meta.served_by, "engine");
    super::assert_num(&total(&seen), total(&first).as_f64().map(|t| 2.0 * t));
    assert!(
        service.data_watch().1 > scans,
        "the change was read from disk"
    );
}

/// Nobody without a token can flush the audit trail: refusals without a valid token get their
/// own line only up to a rate (the rest are counted in one summary line before the next line),
/// and every line's route is clipped, however long the path. Genuine lines stay.
#[tokio::test]
async fn refusals_without_a_token_cannot_flush_the_audit_trail() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    s.query(json!({ "metrics": ["loan_balance"] })).await;
    let long = format!("/api/v1/dashboards/{}", "a".repeat(60_000));
    let sent = 300u64;
    for _ in 0..sent {
        let (status, _) = s.json_as("", "GET", &long, "").await;
        assert_eq!(status, 401);
    }
    s.query(json!({ "metrics": ["overdue_ratio"] })).await;

    let text = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    let records: Vec<AuditRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        text.len() < 100_000,
        "{} bytes for {sent} refusals",
        text.len()
    );
    // A path's start and the hash of the whole: 256 bytes and the note.
    assert!(records.iter().all(|r| r.route.len() <= 320), "{records:?}");
    assert_eq!(records.first().unwrap().metrics, ["loan_balance"]);
    assert_eq!(records.last().unwrap().metrics, ["overdue_ratio"]);
    let one_by_one = records
        .iter()
        .filter(|r| r.status == 401 && r.method == "GET")
        .count() as u64;
    let summarised: u64 = records
        .iter()
        .filter(|r| r.method == "*")
        .map(|r| r.rows.unwrap())
        .sum();
    // A burst of 50 at the default 5 per second, in well under the seconds this takes.
    assert!(one_by_one <= 60, "{one_by_one} refusals logged one by one");
    assert_eq!(one_by_one + summarised, sent, "every refusal is counted");
}

/// Keys that verify tokens come over https: a `jwks_url` over plain http is refused at load,
/// naming the key and the remedy, unless the config says `jwks_allow_http` (a test IdP).
#[test]
fn a_jwk_set_over_plain_http_is_refused_unless_allowed() {
    use kpilens::security::auth::Authenticator;
    let dir = tempfile::tempdir().unwrap();
    let load = |jwt: &str| {
        let path = dir.path().join("auth.yaml");
        std::fs::write(
            &path,
            format!("hierarchy: org\nroles:\n  analyst: {{ personal_data: false }}\njwt:\n{jwt}"),
        )
        .unwrap();
        Authenticator::load(&path, |_| Some(vec!["region".to_string()]))
    };
    let refused = load("  jwks_url: http://sso.bank.example/certs\n")
        .err()
        .expect("plain http refused");
    assert_eq!(refused.key, "jwt.jwks_url");
    assert!(
        refused.reason.contains("https") && refused.reason.contains("jwks_allow_http"),
        "{}",
        refused.reason
    );
    assert!(load("  jwks_url: https://sso.bank.example/certs\n").is_ok());
    assert!(load("  jwks_url: http://127.0.0.1:9/certs\n  jwks_allow_http: true\n").is_ok());
}

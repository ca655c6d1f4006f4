//! Alert rules over the hand-checked bank (tests/fixtures/bank), with a clock the tests set: no
//! sleeping. KPI alerts through pending, firing, resolved and no data, across a restart; record
//! tasks that dedupe and close themselves; the HTTP routes, scopes, the event stream and a
//! webhook that fails twice before it accepts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kpilens::alerts::clock::{Clock, ManualClock};
use kpilens::alerts::state::AlertState;
use kpilens::alerts::{AlertEngine, AlertOptions, AlertView, Change, TaskStatus, TaskView};
use kpilens::security::{Principal, Scope, ScopeMember};
use kpilens::service::KpiService;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::bank_settings;
use super::http::{start, token};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

fn principal(scope: &[(&str, &str)]) -> Principal {
    Principal {
        name: "t".into(),
        role: "t".into(),
        scope: Scope(
            scope
                .iter()
                .map(|(l, m)| (l.to_string(), ScopeMember::Text(m.to_string())))
                .collect(),
        ),
        personal_data: false,
    }
}

struct Bank {
    _data: tempfile::TempDir,
    data_dir: std::path::PathBuf,
    service: Arc<KpiService>,
    store: tempfile::TempDir,
    clock: Arc<ManualClock>,
}

async fn bank(now: &str) -> Bank {
    let (data, settings) = bank_settings().await;
    let service = Arc::new(KpiService::open(&settings).await.unwrap());
    Bank {
        data_dir: settings.data_dir.clone(),
        _data: data,
        service,
        store: tempfile::tempdir().unwrap(),
        clock: Arc::new(ManualClock::new(at(now))),
    }
}

impl Bank {
    fn engine(&self) -> Arc<AlertEngine> {
        AlertEngine::open(
            self.service.clone(),
            self.clock.clone(),
            AlertOptions {
                store: self.store.path().join("alerts.redb"),
                webhook: None,
            },
        )
        .expect("store opens")
    }
}

/// The member an alert is for: the deepest level on its path ("" for the whole bank). (Paths
/// are JSON objects, so their keys come back sorted, not top-down.)
fn member(path: &serde_json::Map<String, Value>) -> String {
    ["branch", "region"]
        .iter()
        .find_map(|l| path.get(*l).and_then(Value::as_str))
        .unwrap_or("")
        .to_string()
}

/// A rule's instances by member.
fn states(engine: &AlertEngine, rule: &str) -> BTreeMap<String, AlertView> {
    engine
        .alerts(&Principal::local(), Some(rule), None, 0)
        .unwrap()
        .alerts
        .into_iter()
        .map(|a| (member(&a.instance.path), a))
        .collect()
}

fn state_of(engine: &AlertEngine, rule: &str, member: &str) -> AlertState {
    states(engine, rule)
        .get(member)
        .unwrap_or_else(|| panic!("{rule} has no alert for {member}"))
        .instance
        .state
}

/// (member, from, to) of a rule's alert changes, oldest first.
fn transitions(engine: &AlertEngine, rule: &str) -> Vec<(String, Option<AlertState>, AlertState)> {
    let mut out: Vec<_> = engine
        .alerts(&Principal::local(), Some(rule), None, 1000)
        .unwrap()
        .history
        .into_iter()
        .map(|e| match e.change {
            Change::Alert { from, to, .. } => (member(&e.path), from, to),
            other => panic!("not an alert change: {other:?}"),
        })
        .collect();
    out.reverse();
    out
}

#[tokio::test]
async fn kpi_alerts_go_pending_firing_resolved_and_no_data_and_survive_a_restart() {
    // 2024-03-31 12:00 in Shanghai: March is the period. 西北's churn rate went from 20% in
    // February (1 of 5) to 50% in March (2 of 4): up 150%. 华东 had nobody active at the end of
    // February: no rate, so no row to judge it by yet.
    let b = bank("2024-03-31T04:00:00Z").await;
    let engine = b.engine();
    let rule = "region_churn_spike"; // up 20% vs previous period, every 1h, pending 2h
    engine.evaluate(rule).await.unwrap();
    assert_eq!(state_of(&engine, rule, "西北"), AlertState::Pending);
    assert!(!states(&engine, rule).contains_key("华东"));
    let v = &states(&engine, rule)["西北"].instance;
    assert!((v.value.unwrap() - 0.5).abs() < 1e-12 && (v.compared.unwrap() - 0.2).abs() < 1e-12);
    assert_eq!(v.period.as_deref(), Some("2024-03-01"));

    // Not due again within the hour; due after it, still pending (held 1 h of 2).
    b.clock.advance(Duration::minutes(59));
    assert!(!engine.evaluate_due().await.contains(&rule.to_string()));
    b.clock.advance(Duration::minutes(1));
    assert!(engine.evaluate_due().await.contains(&rule.to_string()));
    assert_eq!(state_of(&engine, rule, "西北"), AlertState::Pending);
    b.clock.advance(Duration::hours(1));
    engine.evaluate_due().await;
    assert_eq!(state_of(&engine, rule, "西北"), AlertState::Firing);

    // April: 西北 0% (none of 3 left), down from 50%: resolved. 华东 0 of 1 against no rate in
    // March: no change to judge, no data.
    b.clock.set(at("2024-04-30T04:00:00Z"));
    engine.evaluate_due().await;
    assert_eq!(state_of(&engine, rule, "西北"), AlertState::Resolved);
    assert_eq!(state_of(&engine, rule, "华东"), AlertState::NoData);

    // Branch overdue ratio above 5%, pending 0: 西安 is 400 of 500 in April (80%), fires at once;
    // 兰州 0 of 600 is ok.
    let overdue = "branch_overdue_ratio";
    assert_eq!(state_of(&engine, overdue, "西安分行"), AlertState::Firing);
    assert_eq!(state_of(&engine, overdue, "兰州分行"), AlertState::Ok);
    let expected = vec![
        ("西北".to_string(), None, AlertState::Pending),
        (
            "西北".to_string(),
            Some(AlertState::Pending),
            AlertState::Firing,
        ),
        ("华东".to_string(), None, AlertState::NoData),
        (
            "西北".to_string(),
            Some(AlertState::Firing),
            AlertState::Resolved,
        ),
    ];
    assert_eq!(transitions(&engine, rule), expected);

    // A restart loses nothing and repeats nothing: same states, same history, rules not due
    // again before their interval, and a later run with nothing new records nothing.
    let before = engine
        .alerts(&Principal::local(), None, None, 1000)
        .unwrap();
    drop(engine);
    let engine = b.engine();
    let after = engine
        .alerts(&Principal::local(), None, None, 1000)
        .unwrap();
    assert_eq!(json!(before.alerts), json!(after.alerts));
    assert_eq!(json!(before.history), json!(after.history));
    assert!(engine.evaluate_due().await.is_empty());
    b.clock.advance(Duration::hours(1));
    assert!(engine.evaluate_due().await.len() >= 2);
    let later = engine
        .alerts(&Principal::local(), None, None, 1000)
        .unwrap();
    assert_eq!(later.history.len(), before.history.len());
    assert_eq!(transitions(&engine, rule), expected);

    // Mid-month in May with April the latest data: the period is still April (as of the latest
    // data). Mid-March with data to April, the period is March but has no month end yet: no data.
    b.clock.set(at("2024-03-15T04:00:00Z"));
    engine.evaluate(overdue).await.unwrap();
    assert_eq!(state_of(&engine, overdue, "西安分行"), AlertState::NoData);
}

fn task_ids(tasks: &[TaskView]) -> Vec<(String, TaskStatus, String)> {
    tasks
        .iter()
        .map(|t| {
            (
                t.task.id.clone(),
                t.task.status,
                t.task.owner.as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn open_tasks(engine: &AlertEngine, rule: &str) -> Vec<(String, TaskStatus, String)> {
    let open = engine.tasks(
        &Principal::local(),
        None,
        Some(TaskStatus::Open),
        Some(rule),
    );
    let mut ids = task_ids(&open.unwrap());
    ids.sort_by(|a, b| a.0.cmp(&b.0));
    ids
}

/// Rewrites the fixture's tickets with ticket 3 answered, as a new data delivery would.
async fn answer_ticket_3(data: &Path) {
    let fixture = tempfile::tempdir().unwrap();
    super::copy_dir(
        &super::repo_dir().join("tests/fixtures/bank"),
        fixture.path(),
    );
    let tickets = fixture.path().join("tickets.csv");
    let text = std::fs::read_to_string(&tickets).unwrap().replace(
        "3,3,branch,loan,2024-02-01T01:00:00,,,48",
        "3,3,branch,loan,2024-02-01T01:00:00,2024-02-02T05:00:00,,48",
    );
    std::fs::write(&tickets, text).unwrap();
    let sources = kpilens::catalog::ProjectSources::read(&super::repo_dir()).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    kpilens::metric_tests::materialize_fixture(&sources, fixture.path(), fresh.path())
        .await
        .unwrap();
    // Only the tickets are delivered again.
    std::fs::remove_dir_all(data.join("tickets")).unwrap();
    super::copy_dir(&fresh.path().join("tickets"), &data.join("tickets"));
}

#[tokio::test]
async fn record_rules_make_one_task_per_record_and_close_it_when_the_record_stops_matching() {
    let b = bank("2024-02-01T12:00:00Z").await;
    let engine = b.engine();
    let sla = "ticket_first_response_sla";
    // Ticket 3 was opened 2024-02-01 01:00 UTC without a first response: 11 h later, no task.
    engine.evaluate(sla).await.unwrap();
    assert!(
        open_tasks(&engine, sla).is_empty(),
        "{:?}",
        engine
            .tasks(&Principal::local(), None, None, Some(sla))
            .unwrap()
    );
    // 25 h later: one task, for customer 3's RM.
    b.clock.set(at("2024-02-02T02:00:00Z"));
    engine.evaluate(sla).await.unwrap();
    let expected = vec![(format!("{sla}/3"), TaskStatus::Open, "R2".to_string())];
    assert_eq!(open_tasks(&engine, sla), expected);
    let task = &engine
        .tasks(&Principal::local(), None, None, Some(sla))
        .unwrap()[0]
        .task;
    assert_eq!(
        json!(task.path),
        json!({"region": "西北", "branch": "西安分行", "team": "T2", "rm": "R2"})
    );
    assert_eq!(task.fields["channel"], json!("branch"));
    assert_eq!(task.fields["category"], json!("loan"));
    // Evaluated again: the same task, not a second one, and no new event.
    let (mut stream, _) = engine.subscribe();
    b.clock.advance(Duration::minutes(15));
    engine.evaluate(sla).await.unwrap();
    assert_eq!(open_tasks(&engine, sla), expected);
    assert!(stream.try_recv().is_err(), "no change, no event");
    assert_eq!(
        engine
            .tasks(&Principal::local(), None, None, Some(sla))
            .unwrap()
            .len(),
        1
    );
    // The response lands in the data: the task closes itself (and says so on the stream).
    answer_ticket_3(&b.data_dir).await;
    b.clock.advance(Duration::minutes(15));
    let run = engine.evaluate(sla).await.unwrap();
    assert!(run.ok, "{run:?} {:?}", b.service.failed_refresh());
    assert!(open_tasks(&engine, sla).is_empty());
    let all = engine
        .tasks(&Principal::local(), None, None, Some(sla))
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].task.status, TaskStatus::Closed);
    assert_eq!(all[0].task.closed_at, Some(b.clock.now()));
    let event = stream.try_recv().expect("the closing is published");
    assert!(matches!(
        event.change,
        Change::Task {
            status: TaskStatus::Closed,
            ..
        }
    ));

    // New customers not contacted within a day (30-day window): 3 (opened 2024-01-10) is never
    // called; 7 (opened 2024-01-20) is called late, on 2024-01-23 02:00 UTC.
    let rule = "new_customer_not_contacted";
    let id = |c: &str, rm: &str| (format!("{rule}/{c}"), TaskStatus::Open, rm.to_string());
    b.clock.set(at("2024-01-12T02:00:00Z"));
    engine.evaluate(rule).await.unwrap();
    assert_eq!(open_tasks(&engine, rule), vec![id("3", "R2")]);
    b.clock.set(at("2024-01-22T04:00:00Z"));
    engine.evaluate(rule).await.unwrap();
    assert_eq!(
        open_tasks(&engine, rule),
        vec![id("3", "R2"), id("7", "R2")]
    );
    b.clock.set(at("2024-01-23T03:00:00Z")); // 7 has been called
    engine.evaluate(rule).await.unwrap();
    assert_eq!(open_tasks(&engine, rule), vec![id("3", "R2")]);
    b.clock.set(at("2024-02-15T04:00:00Z")); // 3 is past the 30-day window
    engine.evaluate(rule).await.unwrap();
    assert!(open_tasks(&engine, rule).is_empty());
    b.clock.set(at("2024-01-22T04:00:00Z")); // back in time: 3 and 7 match again
    engine.evaluate(rule).await.unwrap();
    let tasks = engine
        .tasks(&Principal::local(), None, None, Some(rule))
        .unwrap();
    assert_eq!(tasks.len(), 2, "reopened, not duplicated");
    assert!(
        tasks
            .iter()
            .all(|t| t.task.times_opened == 2 && t.task.status == TaskStatus::Open)
    );

    // Loans maturing within 30 days: loan 3 (customer 5, R3) on 2025-02-01.
    let rule = "loan_maturing_soon";
    b.clock.set(at("2025-01-10T00:00:00Z"));
    engine.evaluate(rule).await.unwrap();
    assert_eq!(
        open_tasks(&engine, rule),
        vec![(format!("{rule}/3"), TaskStatus::Open, "R3".to_string())]
    );
    // Scopes: the RM and the branch head see it; another RM and another region do not.
    let seen_by = |scope: &[(&str, &str)], owner: Option<&str>| {
        engine
            .tasks(&principal(scope), owner, Some(TaskStatus::Open), None)
            .unwrap()
            .len()
    };
    assert_eq!(seen_by(&[("rm", "R3")], None), 1);
    assert_eq!(seen_by(&[("branch", "兰州分行")], None), 1);
    assert_eq!(seen_by(&[("branch", "兰州分行")], Some("R3")), 1);
    assert_eq!(seen_by(&[("branch", "兰州分行")], Some("R1")), 0);
    assert_eq!(
        seen_by(&[("rm", "R2")], None),
        2,
        "R2's two contact tasks, not R3's loan"
    );
    assert_eq!(seen_by(&[("region", "华东")], None), 0);
    b.clock.set(at("2025-02-02T00:00:00Z"));
    engine.evaluate(rule).await.unwrap();
    assert!(open_tasks(&engine, rule).is_empty());
}

/// A webhook receiver on loopback: answers 500 to the first `failures` attempts of each delivery,
/// then 200, and keeps every request (headers, body).
async fn receiver(
    failures: usize,
) -> (
    String,
    Arc<tokio::sync::Mutex<Vec<(BTreeMap<String, String>, Vec<u8>)>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/kpilens", listener.local_addr().unwrap());
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let mut reader = BufReader::new(stream);
            let mut headers = BTreeMap::new();
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).await.unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
            let len: usize = headers["content-length"].parse().unwrap();
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await.unwrap();
            let n = attempts
                .entry(headers["x-kpilens-delivery"].clone())
                .or_default();
            *n += 1;
            let refuse = *n <= failures;
            kept.lock().await.push((headers, body));
            let status = if refuse {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let answer =
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
        }
    });
    (url, seen)
}

const HOOK_SECRET: &str = "hook-secret-0123456789-abcdefghijklmnopqrstuvwxyz";

#[tokio::test]
async fn the_http_routes_stream_changes_and_deliver_signed_webhooks_with_retries() {
    let (url, hooks) = receiver(2).await;
    let (_data, mut settings) = bank_settings().await;
    settings.alerts_clock_start = Some("2024-04-30T12:00:00+08:00".parse().unwrap());
    settings.webhook_url = Some(url);
    settings.webhook_secret = Some(HOOK_SECRET.into());
    // The receiver is this test, on loopback.
    settings.webhook_allow_private = true;
    settings.webhook_retry_ms = 20;
    let server = start(settings).await;

    // The stream first, as the head office.
    let mut sse = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let req = format!(
        "GET /api/v1/alerts/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nAccept: text/event-stream\r\n\r\n",
        server.auth
    );
    sse.write_all(req.as_bytes()).await.unwrap();
    let mut sse = BufReader::new(sse);
    let mut line = String::new();
    sse.read_line(&mut line).await.unwrap();
    assert!(line.contains("200"), "{line}");

    // Rules run only when asked (the scheduler is off in tests); a branch head may not ask.
    let bh = token("bh", "branch_head", json!({"branch": "兰州分行"}));
    let (status, body) = server
        .json_as(&bh, "POST", "/api/v1/alerts/evaluate", "")
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = server.post("/api/v1/alerts/evaluate", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"].as_object().unwrap().len(), 5);
    assert!(
        body["runs"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["ok"] == json!(true)),
        "{body}"
    );
    let (status, body) = server.post("/api/v1/alerts/evaluate?rule=nope", "").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_rule"))
    );

    // The stream carries the firing branch alert.
    let mut fired = None;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while fired.is_none() {
        line.clear();
        tokio::time::timeout_at(deadline, sse.read_line(&mut line))
            .await
            .expect("an event in time")
            .unwrap();
        if let Some(data) = line.strip_prefix("data: ") {
            let e: Value = serde_json::from_str(data.trim()).unwrap();
            if e["rule"] == json!("branch_overdue_ratio") && e["to"] == json!("firing") {
                fired = Some(e);
            }
        }
    }
    assert_eq!(
        fired.unwrap()["path"],
        json!({"region": "西北", "branch": "西安分行"})
    );

    // Reading: the head office sees both branches; 兰州's head sees only 兰州.
    let (status, all) = server.get("/api/v1/alerts?rule=branch_overdue_ratio").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["alerts"].as_array().unwrap().len(), 2);
    assert_eq!(all["alerts"][0]["state"], json!("firing"), "firing first");
    let (_, mine) = server
        .json_as(&bh, "GET", "/api/v1/alerts?rule=branch_overdue_ratio", "")
        .await;
    let mine = mine["alerts"].as_array().unwrap().clone();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["path"]["branch"], json!("兰州分行"));
    let (status, body) = server.get("/api/v1/alerts?state=burning").await;
    assert_eq!(status, 422, "{body}");
    let (status, body) = server.get("/api/v1/tasks?colour=red").await;
    assert_eq!(
        (status, body["error"]["field"].clone()),
        (422, json!("colour"))
    );

    // Tasks: ticket 3 (no first response) is R2's; R2 sees it, R1 does not.
    let r2 = token(
        "r2",
        "rm",
        json!({"region": "西北", "branch": "西安分行", "team": "T2", "rm": "R2"}),
    );
    let r1 = token("r1", "rm", json!({"rm": "R1"}));
    let (_, t2) = server
        .json_as(&r2, "GET", "/api/v1/tasks?status=open", "")
        .await;
    let (_, t1) = server
        .json_as(&r1, "GET", "/api/v1/tasks?status=open", "")
        .await;
    assert_eq!(t2["tasks"].as_array().unwrap().len(), 1, "{t2}");
    assert_eq!(t2["tasks"][0]["id"], json!("ticket_first_response_sla/3"));
    assert!(t1["tasks"].as_array().unwrap().is_empty(), "{t1}");
    let (_, owned) = server.get("/api/v1/tasks?owner=R2").await;
    assert_eq!(owned["tasks"].as_array().unwrap().len(), 1);

    // The webhook: every change delivered (alert changes and opened tasks), signed, each refused
    // twice and retried until taken.
    let (_, history) = server.get("/api/v1/alerts?history=1000").await;
    let (_, tasks) = server.get("/api/v1/tasks").await;
    let changes =
        history["history"].as_array().unwrap().len() + tasks["tasks"].as_array().unwrap().len();
    // 西安 firing, 华东 no data (兰州 and 西北 start ok: nothing to say), ticket 3's task.
    assert_eq!(changes, 3, "{history} {tasks}");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let per_delivery = loop {
        let mut per: BTreeMap<String, usize> = BTreeMap::new();
        for (h, _) in hooks.lock().await.iter() {
            *per.entry(h["x-kpilens-delivery"].clone()).or_default() += 1;
        }
        let done = per.len() == changes && per.values().all(|n| *n == 3);
        if done || tokio::time::Instant::now() > deadline {
            break per;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(per_delivery.len(), changes, "{per_delivery:?}");
    assert!(per_delivery.values().all(|n| *n == 3), "{per_delivery:?}");
    let got = hooks.lock().await;
    for (headers, body) in got.iter() {
        assert_eq!(
            headers["x-kpilens-signature"],
            kpilens::alerts::webhook::signature(HOOK_SECRET, body)
        );
        let e: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(e["seq"].to_string(), headers["x-kpilens-delivery"]);
        assert_eq!(headers["x-kpilens-event"], e["type"].as_str().unwrap());
    }
}

/// Issue 34, point 10: a webhook to an inside address, with a user and password in its URL, or
/// signed with a short secret is refused at start, saying why; an inside receiver is accepted
/// when asked for by name.
#[test]
fn webhook_urls_and_secrets_are_checked_at_start() {
    use kpilens::alerts::webhook::WebhookConfig;
    let secret = "s".repeat(32);
    let refused = |url: &str, secret: &str, allow: bool| {
        let settings = kpilens::config::Settings {
            webhook_url: Some(url.into()),
            webhook_secret: Some(secret.into()),
            webhook_allow_private: allow,
            ..Default::default()
        };
        WebhookConfig::from_settings(&settings).err()
    };
    for (url, part) in [
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.9/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:10.0.0.1]/hook", "private"),
        (
            "https://user:pass@hooks.example.com/x",
            "no user or password",
        ),
    ] {
        let why = refused(url, &secret, false).unwrap_or_else(|| panic!("{url} accepted"));
        assert!(why.contains(part), "{url}: {why}");
    }
    let short = refused("https://hooks.example.com/x", "k", false).expect("a 1-byte secret");
    assert!(short.contains("at least 32"), "{short}");
    assert_eq!(refused("https://hooks.example.com/x", &secret, false), None);
    assert_eq!(refused("http://10.1.2.3/hook", &secret, true), None);
}

/// Issue 34, point 10: a name is checked where it resolves, at every connect, so a receiver whose
/// name resolves to loopback (or comes to, by DNS rebinding) gets nothing unless inside receivers
/// were allowed; the same delivery goes through when they are.
#[tokio::test]
async fn webhook_names_resolving_inside_are_refused_at_each_delivery() {
    use kpilens::alerts::webhook::{WebhookConfig, client, deliver};
    let (url, seen) = receiver(0).await;
    // The receiver listens on 127.0.0.1; `localhost` resolves there through the system resolver.
    let url = url.replace("127.0.0.1", "localhost");
    let mut config = WebhookConfig {
        url,
        secret: HOOK_SECRET.into(),
        attempts: 2,
        first_retry: std::time::Duration::from_millis(10),
        allow_private: false,
    };
    let refused = deliver(&client(&config), &config, 1, "alert", b"{}").await;
    assert_eq!((refused.attempts, refused.status), (2, None), "{refused:?}");
    assert!(seen.lock().await.is_empty(), "the receiver was reached");

    config.allow_private = true;
    let delivered = deliver(&client(&config), &config, 2, "alert", b"{}").await;
    assert_eq!(delivered.status, Some(200), "{delivered:?}");
    assert_eq!(seen.lock().await.len(), 1);
}

//! The attacks of the hostile-load review, against the real server on a loopback socket: slow
//! uploads, half-sent headers and idle connections, one principal flooding the engine, an alert
//! stream held open through a shutdown. Each must hold with the server up and bounded.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::bank_settings;
use super::http::{exchange, start, token};
use super::security::{demo_users, spawn_demo};

/// Reads until the server closes the connection, or gives up after `within`: the bytes read and
/// whether the server closed it.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut raw = Vec::new();
    let closed = tokio::time::timeout(within, stream.read_to_end(&mut raw))
        .await
        .is_ok();
    (raw, closed)
}

fn status_of(raw: &[u8]) -> Option<u16> {
    std::str::from_utf8(raw)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

#[tokio::test]
async fn slow_uploads_hold_no_compute_slot_and_are_cut_off() {
    let (_data, mut settings) = bank_settings().await;
    // One compute slot: before the fix, one trickling upload held it and everyone got 503.
    settings.max_concurrent = 1;
    settings.body_timeout_ms = 1500;
    let s = start(settings).await;
    let auth = s.auth.clone();
    let uploads: Vec<_> = (0..8)
        .map(|_| {
            let auth = auth.clone();
            let addr = s.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /api/v1/query HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.unwrap();
                let started = Instant::now();
                // A byte every 100 ms until the server gives up on us.
                let mut raw = Vec::new();
                loop {
                    if stream.write_all(b" ").await.is_err() {
                        break;
                    }
                    match tokio::time::timeout(Duration::from_millis(100), stream.read_buf(&mut raw)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(_)) if raw.windows(4).any(|w| w == b"\r\n\r\n") => break,
                        _ => {}
                    }
                    assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
                }
                (status_of(&raw), started.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A cold query and a cached one while the uploads trickle: both answered at once.
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["branch"] }).to_string();
    for _ in 0..2 {
        let started = Instant::now();
        let r = exchange(
            s.addr,
            "POST",
            "/api/v1/query",
            &[("Authorization", &auth)],
            &q,
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert!(
            started.elapsed() < Duration::from_millis(1200),
            "not held by the uploads"
        );
    }
    for upload in uploads {
        let (status, elapsed) = upload.await.unwrap();
        assert_eq!(status, Some(408), "a body too slow is refused with 408");
        assert!(elapsed >= Duration::from_millis(1400), "{elapsed:?}");
    }
    let audit = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    assert_eq!(
        audit.matches("\"error\":\"body_timeout\"").count(),
        8,
        "each cut-off upload is audited"
    );
}

#[tokio::test]
async fn half_sent_headers_and_idle_connections_are_closed_and_connections_capped() {
    let (_data, mut settings) = bank_settings().await;
    settings.header_timeout_ms = 500;
    settings.max_connections = 8;
    settings.reserve_connections = 2;
    let s = start(settings).await;
    let before = open_files();
    let mut halves = Vec::new();
    for _ in 0..40 {
        let mut stream = TcpStream::connect(s.addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: kpilens\r\nX-Slow: ")
            .await
            .unwrap();
        halves.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Our 40 sockets, and at most 8 + 2 (the reserve) accepted by the server (the rest wait in
    // the backlog).
    let held = open_files().saturating_sub(before);
    assert!(
        held <= 40 + 8 + 2 + 4,
        "{held} file handles for 40 half-open clients"
    );
    // Someone else still gets in, as the half-sent ones are cut off.
    let started = Instant::now();
    let r = exchange(s.addr, "GET", "/healthz", &[], "").await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(8));
    for mut stream in halves {
        let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
        assert!(closed, "a half-sent header is closed by the server");
    }

    // A keep-alive connection that goes quiet after its answer is closed too.
    let mut stream = TcpStream::connect(s.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kpilens\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let (raw, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status_of(&raw), Some(200));
    assert!(closed, "an idle keep-alive connection is closed");
    assert!(started.elapsed() >= Duration::from_millis(400));
}

/// A socket from another loopback address (Linux answers all of 127/8): an attacker apart from
/// the users on 127.0.0.1.
async fn connect_from(
    source: [u8; 4],
    addr: std::net::SocketAddr,
    small_receive_buffer: bool,
) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    if small_receive_buffer {
        socket.set_recv_buffer_size(4096)?;
    }
    socket.bind((std::net::Ipv4Addr::from(source), 0).into())?;
    socket.connect(addr).await
}

/// Issue 34, point 1: forty sockets from one address pipeline 300 requests each in one write
/// and never read. The address gets its share of the connections and no more; each of its
/// connections is closed once a response could not be written for the write timeout; a
/// connection answers so many requests at most; and `/healthz` from elsewhere stays quick.
#[tokio::test]
async fn a_client_that_pipelines_and_never_reads_cannot_take_the_port() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_connections = 16;
    settings.max_connections_per_address = 8;
    settings.reserve_connections = 2;
    settings.write_timeout_ms = 1_000;
    settings.max_requests_per_connection = 1_000;
    let s = start(settings).await;
    // 28 MB of answers per connection: far beyond what the socket buffers hold.
    let pipelined = format!("GET /app/main.js HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).repeat(1_000);
    let mut hogs = Vec::new();
    for _ in 0..40 {
        let mut hog = connect_from([127, 0, 0, 2], s.addr, true)
            .await
            .expect("connect");
        // The server may close it before the whole write is taken: that is the point.
        let _ = tokio::time::timeout(
            Duration::from_millis(200),
            hog.write_all(pipelined.as_bytes()),
        )
        .await;
        hogs.push(hog);
    }
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let asked = Instant::now();
        let r = exchange(s.addr, "GET", "/healthz", &[], "").await;
        assert_eq!(r.status, 200);
        worst = worst.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst < Duration::from_secs(1),
        "/healthz took {worst:?} under the attack"
    );
    // Every hog is closed: at once past its address's share, else at the write timeout, with
    // most of its answers never written (reading now only drains what was in flight).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut refused = 0;
    for hog in &mut hogs {
        let (raw, closed) = read_until_closed(hog, Duration::from_secs(10)).await;
        assert!(closed, "a connection that never reads is closed");
        assert!(
            raw.len() < 14_000_000,
            "{} bytes: the server kept writing to a client that did not read",
            raw.len()
        );
        refused += usize::from(raw.is_empty());
    }
    assert!(
        refused >= 32,
        "{refused} of 40 refused past the address's share of 8"
    );

    // Pipelining from a client that reads: a thousand answers, the last with Connection:
    // close, and nothing more.
    let mut client = TcpStream::connect(s.addr).await.unwrap();
    let more = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", s.addr).repeat(1_005);
    client.write_all(more.as_bytes()).await.unwrap();
    let (raw, closed) = read_until_closed(&mut client, Duration::from_secs(10)).await;
    let text = String::from_utf8_lossy(&raw);
    assert!(closed, "closed after its last request");
    assert_eq!(text.matches("HTTP/1.1 200").count(), 1_000);
    assert_eq!(
        text.to_ascii_lowercase()
            .matches("connection: close")
            .count(),
        1
    );
}

/// While every ordinary connection is held (here by half-sent headers from another address),
/// a reserve connection still answers `/healthz` and a query, once each, and opens no stream.
#[tokio::test]
async fn the_reserve_lets_short_requests_in_when_every_connection_is_held() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_connections = 4;
    settings.reserve_connections = 2;
    settings.header_timeout_ms = 30_000;
    let s = start(settings).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut hog = connect_from([127, 0, 0, 3], s.addr, false).await.unwrap();
        hog.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .await
            .unwrap();
        held.push(hog);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        exchange(s.addr, "GET", "/healthz", &[], ""),
    )
    .await
    .expect("/healthz answered while every ordinary connection is held");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["region"] }).to_string();
    let r = s
        .call("POST", "/api/v1/query", &[("Authorization", &s.auth)], &q)
        .await;
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
    let r = exchange(
        s.addr,
        "GET",
        "/api/v1/events",
        &[("Authorization", &s.auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        serde_json::from_slice::<Value>(&r.body).unwrap()["error"]["code"],
        "busy"
    );
    drop(held);
}

/// Issue 34, point 2: one principal's event streams are capped (429), so are all of them
/// (503), and a stream ends at its maximum lifetime (the client reconnects).
#[tokio::test]
async fn event_streams_are_capped_per_principal_and_overall_and_end_in_time() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_streams_per_principal = 2;
    settings.max_streams = 3;
    settings.stream_max_lifetime_secs = 2;
    let s = start(settings).await;
    let rm = token("rm-streams", "analyst", json!({}));
    let open = |auth: String, path: &'static str| {
        let addr = s.addr;
        async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nAccept: text/event-stream\r\n\r\n"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut raw = vec![0u8; 4096];
            let n = stream.read(&mut raw).await.unwrap();
            (
                status_of(&raw[..n]),
                String::from_utf8_lossy(&raw[..n]).to_string(),
                stream,
            )
        }
    };
    let started = Instant::now();
    let (a, _, mut first) = open(rm.clone(), "/api/v1/events").await;
    let (b, _, _second) = open(rm.clone(), "/api/v1/alerts/stream").await;
    assert_eq!((a, b), (Some(200), Some(200)));
    let (c, body, _) = open(rm.clone(), "/api/v1/events").await;
    assert_eq!(c, Some(429), "{body}");
    assert!(body.contains("too_many_streams"), "{body}");
    let (d, _, _third) = open(s.auth.clone(), "/api/v1/events").await;
    assert_eq!(d, Some(200), "another principal's first stream");
    let (e, body, _) = open(token("rm-other", "analyst", json!({})), "/api/v1/events").await;
    assert_eq!(e, Some(503), "{body}");
    assert!(body.contains("streams_full"), "{body}");
    // The lifetime: the stream's body ends (the last chunk) after about two seconds.
    let mut raw = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = first.read(&mut buf).await.unwrap_or(0);
            raw.extend_from_slice(&buf[..n]);
            if n == 0 || raw.ends_with(b"0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its lifetime");
    assert!(started.elapsed() >= Duration::from_millis(1_500));
    // Its place is free again.
    let (f, _, _) = open(rm.clone(), "/api/v1/events").await;
    assert_eq!(f, Some(200));
}

#[tokio::test]
async fn one_principal_cannot_starve_the_others() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_concurrent = 4;
    settings.max_concurrent_per_principal = 1;
    settings.queue_wait_ms = 1;
    let s = start(settings).await;
    let cached = json!({ "metrics": ["loan_balance"], "dimensions": ["region"] });
    assert_eq!(s.query(cached.clone()).await.0, 200);
    let rm = token("rm-flood", "analyst", json!({}));
    let flood = futures::future::join_all((0..10).map(|i| {
        let (s, rm) = (&s, &rm);
        async move {
            let q = json!({ "metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["branch"],
                "time": { "grain": "day", "from": "2024-01-01", "to": format!("2024-05-{:02}", 10 + i) } });
            s.call("POST", "/api/v1/query", &[("Authorization", rm)], &q.to_string())
                .await
        }
    }));
    let head_office = async {
        let mut served = Vec::new();
        for _ in 0..5 {
            let (status, body) = s.query(cached.clone()).await;
            served.push((status, body["meta"]["served_by"].clone()));
        }
        served
    };
    let (flood, served) = tokio::join!(flood, head_office);
    assert!(
        served.iter().all(|(st, by)| *st == 200 && by == "cache"),
        "a cached answer takes no slot: {served:?}"
    );
    let busy: Vec<_> = flood.iter().filter(|r| r.status == 429).collect();
    assert!(flood.iter().all(|r| r.status == 200 || r.status == 429));
    assert!(
        !busy.is_empty(),
        "ten at once from one principal with a share of one"
    );
    for r in busy {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"]["code"], "principal_busy");
        assert_eq!(r.header("retry-after"), Some("1"));
    }
}

#[tokio::test]
async fn compute_slots_are_shared_within_a_request_and_capped_per_principal() {
    use kpilens::security::limits::{ComputeLease, ComputeSlots, Refusal};
    let slots = ComputeSlots::new(3, 2, Duration::from_millis(20));
    let a1 = slots.acquire("a").await.unwrap();
    let _a2 = slots.acquire("a").await.unwrap();
    assert!(matches!(
        slots.acquire("a").await,
        Err(Refusal::PrincipalBusy { share: 2, .. })
    ));
    let b1 = slots.acquire("b").await.unwrap();
    assert!(matches!(
        slots.acquire("c").await,
        Err(Refusal::Saturated { .. })
    ));
    drop(a1);
    let lease = ComputeLease::for_principal("c");
    lease.hold(&slots).await.unwrap();
    // The request's other computations share its slot: no second one is taken.
    lease.hold(&slots).await.unwrap();
    drop(b1);
    let _b2 = slots.acquire("b").await.unwrap();
    assert!(matches!(
        slots.acquire("d").await,
        Err(Refusal::Saturated { .. })
    ));
    drop(lease);
    slots.acquire("d").await.unwrap();
}

#[tokio::test]
async fn open_event_streams_do_not_hold_the_shutdown() {
    let (data, _) = super::demo_settings();
    let (mut child, addr) = spawn_demo(data.path(), &["--shutdown-grace-ms", "60000"]);
    let users = demo_users(addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    let mut streams = Vec::new();
    for path in ["/api/v1/alerts/stream", "/api/v1/events"] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {auth}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = vec![0u8; 4096];
        let n = stream.read(&mut raw).await.unwrap();
        assert_eq!(status_of(&raw[..n]), Some(200), "{path} is open");
        streams.push(stream);
    }
    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for stream in &mut streams {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(20)).await;
        assert!(closed, "the stream ends at shutdown");
    }
    let exit = child.wait().unwrap();
    assert!(exit.success(), "a clean exit: {exit}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shut down in {:?}, not after the 60 s grace",
        started.elapsed()
    );
}

#[tokio::test]
async fn extreme_dates_are_refused_by_name_not_a_panic() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let cases = [
        (
            json!({ "metrics": ["loan_balance"], "time": { "grain": "year", "from": "+262142-01-01", "to": "+262142-12-31" } }),
            "time.from",
        ),
        (
            json!({ "metrics": ["loan_balance"], "time": { "grain": "month", "from": "-262143-06-01", "to": "2024-01-31" }, "compare": ["previous_period"] }),
            "time.from",
        ),
        (
            json!({ "metrics": ["loan_balance"], "time": { "grain": "week", "from": "2024-01-01", "to": "2024-02-01", "as_of": "-262143-01-01" } }),
            "time.as_of",
        ),
        (
            json!({ "metrics": ["loan_balance"], "time": { "grain": "day", "from": "1480-01-01", "to": "2024-01-01" } }),
            "time.from",
        ),
        (
            json!({ "metrics": ["loan_balance"], "time": { "grain": "month", "from": "2024-01-01", "to": "2201-01-01" } }),
            "time.to",
        ),
    ];
    for (q, field) in cases {
        let (status, body) = s.query(q.clone()).await;
        assert_eq!(status, 422, "{q}: {body}");
        assert_eq!(body["error"]["field"], field, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("1900 to 2200"),
            "{body}"
        );
    }
    let r = s
        .raw("/api/v1/dashboards/executive?as_of=%2B262142-12-31", &[])
        .await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(r.status, 422, "{body}");
    assert_eq!(body["error"]["field"], "as_of");
    // Still serving.
    assert_eq!(s.query(json!({ "metrics": ["loan_balance"] })).await.0, 200);
}

/// Resident memory now, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test]
async fn a_tiny_query_cannot_build_a_huge_answer_outside_the_pool() {
    let (data, _) = super::demo_settings();
    let (mut child, addr) = spawn_demo(data.path(), &["--memory-mb", "512"]);
    let users = demo_users(addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    let catalog = exchange(addr, "GET", "/api/v1/catalog", &[], "").await;
    let catalog: Value = serde_json::from_slice(&catalog.body).unwrap();
    // Twenty metrics of one model, a day grain over the whole allowed range, both comparisons:
    // the 488-byte query of the review (there from 1480; now the range starts at 1900).
    let model_of = |m: &Value| m["models"][0].as_str().unwrap_or("").to_string();
    let metrics = catalog["metrics"].as_array().unwrap();
    let model = model_of(&metrics[0]);
    let names: Vec<&str> = metrics
        .iter()
        .filter(|m| model_of(m) == model)
        .filter(|m| {
            !["funnel", "cohort", "churn", "cumulative"].contains(&m["type"].as_str().unwrap_or(""))
        })
        .filter_map(|m| m["name"].as_str())
        .take(20)
        .collect();
    let q = json!({ "metrics": names, "dimensions": ["region"],
        "time": { "grain": "day", "from": "1900-01-01", "to": "2200-12-31" },
        "compare": ["previous_period", "same_period_last_year"] })
    .to_string();
    let before = rss_mib(child.id());
    let health = tokio::spawn(async move {
        // /healthz keeps answering at once while the four compose.
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            let r = exchange(addr, "GET", "/healthz", &[], "").await;
            assert_eq!(r.status, 200);
            worst = worst.max(t.elapsed());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        worst
    });
    let headers = [("Authorization", auth.as_str())];
    let answers = futures::future::join_all(
        (0..4).map(|_| exchange(addr, "POST", "/api/v1/query", &headers, &q)),
    )
    .await;
    // A running total by day over the same range is refused before it plans a table of days.
    let running = json!({ "metrics": ["disbursed_ytd"],
        "time": { "grain": "day", "from": "1900-01-01", "to": "2200-12-31" } })
    .to_string();
    let refused = exchange(addr, "POST", "/api/v1/query", &headers, &running).await;
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(
        (refused.status, &body["error"]["code"]),
        (422, &json!("answer_too_large")),
        "{body}"
    );
    let after = super::security::peak_rss_mib(child.id()).unwrap();
    let worst = health.await.unwrap();
    let _ = child.kill();
    let _ = child.wait();
    for r in &answers {
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        match r.status {
            200 => assert_eq!(body["meta"]["gaps_filled"], false, "too many to fill"),
            422 => {
                eprintln!("{body}");
                assert_eq!(body["error"]["code"], "answer_too_large", "{body}")
            }
            503 => assert_eq!(body["error"]["code"], "memory_limit"),
            s => panic!("{s}: {body}"),
        }
    }
    eprintln!(
        "four {}-metric day-grain queries ({:?}): RSS {before:.0} -> peak {after:.0} MiB; /healthz worst {worst:?}",
        names.len(),
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(after - before < 400.0, "RSS grew {:.0} MiB", after - before);
    assert!(worst < Duration::from_secs(2), "/healthz stalled {worst:?}");
}

#[tokio::test]
async fn tokens_with_extreme_times_are_judged_not_overflowed() {
    use super::http::TEST_SECRET;
    use kpilens::security::auth::{Claims, sign_hs256};
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let signed = |exp: i64, nbf: Option<i64>| {
        let claims = Claims {
            sub: "ana".into(),
            role: "analyst".into(),
            scope: Default::default(),
            exp,
            nbf,
            iss: None,
            aud: None,
        };
        format!("Bearer {}", sign_hs256(TEST_SECRET.as_bytes(), &claims))
    };
    let q = json!({ "metrics": ["loan_balance"] }).to_string();
    let now = chrono::Utc::now().timestamp();
    let cases = [
        // Valid until the end of time: refused as longer-lived than any token may be.
        (signed(i64::MAX, None), 401),
        (signed(now + 3600, None), 200),
        // A time before 1970 is not a valid NumericDate for the JWT library: refused, clearly.
        (signed(now + 3600, Some(i64::MIN)), 401),
        (signed(i64::MIN, None), 401),
        (signed(now + 3600, Some(i64::MAX)), 401),
        (signed(i64::MAX, Some(i64::MAX)), 401),
    ];
    for (auth, expected) in cases {
        let (status, body) = s.json_as(&auth, "POST", "/api/v1/query", &q).await;
        assert_eq!(status, expected, "{body}");
    }
}

const PEOPLE_CSV: &str = "person_id,name,phone,id_number,city\n1,王,4625588,1234567890,西安\n2,李四光,13812345678,110101198001010011,北京\n3,,,,北京\n";

/// A SQL model over `people` that passes only plain columns on (beside `people_errors`' view).
const PEOPLE_VIEW: &str = "models:
  people_view:
    source: { sql: people_view }
    primary_key: person_id
    dimensions:
      city: { column: city }
";

const PEOPLE_MODEL: &str = r#"
models:
  people:
    source: { csv: people.csv }
    primary_key: person_id
    personal_data: { name: name, phone: phone, id_number: id_number }
    dimensions:
      city: { column: city }
    drill_through:
      - person_id
      - { column: name, mask: name }
      - { column: phone, mask: phone }
      - { column: id_number, mask: id_number }
      - city
measures:
  people_reached: { model: people, agg: count_distinct, expr: phone }
  people_without_phone: { model: people, agg: count, where: "phone IS NULL" }
"#;

/// The load errors of the people fixture with `leaks` as `metrics/leaks.yaml`, beside a SQL model
/// that renames one personal column and computes from another.
async fn people_errors(leaks: &str) -> Vec<kpilens::catalog::CatalogError> {
    super::catalog_errors::load_errors(&[
        ("data/people.csv", PEOPLE_CSV),
        ("metrics/people.yaml", PEOPLE_MODEL),
        ("metrics/leaks.yaml", leaks),
        (
            "sql/people_view.sql",
            "SELECT person_id, phone AS tel, concat(name, city) AS label, city FROM people",
        ),
    ])
    .await
}

#[tokio::test]
async fn personal_data_declared_once_cannot_be_shown_by_any_definition() {
    let leaks = r#"
models:
  leaky_people:
    source: { csv: people.csv }
    primary_key: person_id
    personal_data: { name: name, phone: phone, id_number: id_number, email: all }
    dimensions:
      city: { column: city }
      who: { column: name }
    drill_through: [person_id, phone]
  quiet_people:
    source: { csv: people.csv }
    primary_key: person_id
    dimensions:
      tel: { column: phone }
  people_view:
    source: { sql: people_view }
    primary_key: person_id
    dimensions:
      tel: { column: tel }
      city: { column: city }
    drill_through: [person_id, label, city]
"#;
    let errors = people_errors(leaks).await;
    let has = |key: &str, part: &str| {
        super::catalog_errors::assert_has(&errors, "metrics/leaks.yaml", key, part)
    };
    has("models.leaky_people.dimensions.who.column", "personal data");
    // Issue 34, point 9: a second model over the file, declaring nothing, has the columns the
    // first declared personal.
    has("models.quiet_people.dimensions.tel.column", "personal data");
    has(
        "models.leaky_people.personal_data.email",
        "unknown column 'email'",
    );
    assert_eq!(
        errors
            .iter()
            .filter(|e| e.key.ends_with("personal_data.email"))
            .count(),
        1,
        "said once"
    );
    has(
        "models.leaky_people.drill_through[1]",
        "{ column: phone, mask: phone }",
    );
    // Inherited through the SQL model: renamed, and computed from a personal column.
    has(
        "models.people_view.dimensions.tel.column",
        "masked as phone",
    );
    has(
        "models.people_view.drill_through[1]",
        "{ column: label, mask: all }",
    );
    assert!(
        !errors.iter().any(|e| e.key.contains("dimensions.city")),
        "plain columns are fine: {errors:#?}"
    );

    let leaks = &format!(
        "{PEOPLE_VIEW}{}",
        r#"
measures:
  top_phone: { model: people, agg: max, expr: phone }
  by_phone: { model: people, agg: count, where: "phone = '4625588'" }
"#
    );
    let errors = people_errors(leaks).await;
    let has = |key: &str, part: &str| {
        super::catalog_errors::assert_has(&errors, "metrics/leaks.yaml", key, part)
    };
    has("measures.top_phone.expr", "may only count it");
    has("measures.by_phone.where", "may not filter on it");
    assert!(
        !errors
            .iter()
            .any(|e| e.key.contains("people_reached") || e.key.contains("people_without_phone")),
        "counting, and asking whether there is one, are fine: {errors:#?}"
    );

    let leaks = &format!(
        "{PEOPLE_VIEW}{}",
        r#"
alerts:
  leak:
    kind: record
    label: { en: leak }
    severity: info
    model: people_view
    key: person_id
    owner: city
    where: "city IS NOT NULL"
    show: [label]
    every: 1h
  guess:
    kind: record
    label: { en: guess }
    severity: info
    model: people
    key: person_id
    owner: city
    where: "id_number LIKE '110101%'"
    every: 1h
  no_phone:
    kind: record
    label: { en: no phone }
    severity: info
    model: people
    key: person_id
    owner: city
    where: "phone IS NULL"
    every: 1h
"#
    );
    let errors = people_errors(leaks).await;
    let has = |key: &str, part: &str| {
        super::catalog_errors::assert_has(&errors, "metrics/leaks.yaml", key, part)
    };
    has("alerts.leak.show[0]", "personal data");
    has("alerts.guess.where", "IS NULL");
    assert!(
        !errors.iter().any(|e| e.key.contains("no_phone")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn masks_give_nothing_away_for_short_values() {
    let project = super::temp_project(&[
        ("data/people.csv", PEOPLE_CSV),
        ("metrics/people.yaml", PEOPLE_MODEL),
    ]);
    let s = start(super::settings_for(project.path())).await;
    let analyst = token("ana", "analyst", json!({}));
    let body = json!({ "model": "people", "order": [{ "by": "person_id" }] }).to_string();
    let (status, page) = s
        .json_as(&analyst, "POST", "/api/v1/drill_through", &body)
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page["rows"],
        json!([
            [1, "*", "****", "********", "西安"],
            [2, "李**", "138****5678", "110101********0011", "北京"],
            [3, null, null, null, "北京"],
        ])
    );
}

#[tokio::test]
async fn file_sources_stay_inside_the_data_folder() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.csv"), "a,b\n1,2\n").unwrap();
    let project = super::temp_project(&[]);
    std::os::unix::fs::symlink(outside.path(), project.path().join("data/linked")).unwrap();
    let leaks = r#"
models:
  shells: { source: { csv: /etc/shells } }
  upward: { source: { csv: ../metrics/fixture.yaml } }
  linked: { source: { csv: linked/secret.csv } }
"#;
    std::fs::write(project.path().join("metrics/leaks.yaml"), leaks).unwrap();
    let errors =
        match kpilens::service::KpiService::open(&super::settings_for(project.path())).await {
            Ok(_) => panic!("a source outside the data folder was accepted"),
            Err(e) => e.0,
        };
    let has = |key: &str, part: &str| {
        super::catalog_errors::assert_has(&errors, "metrics/leaks.yaml", key, part)
    };
    has("models.shells.source", "not a path inside the data folder");
    has("models.upward.source", "without '..'");
    has("models.linked.source", "symbolic link");
}

#[test]
fn the_audit_trail_is_a_hash_chain_that_names_the_first_broken_line() {
    use kpilens::security::audit::{AuditLog, AuditRecord, Verified, verify};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let record = |i: usize| AuditRecord {
        time: format!("2026-12-01T00:00:{:02}.000Z", i % 60),
        principal: format!("p{i}"),
        route: "/api/v1/query".into(),
        status: 200,
        ..AuditRecord::default()
    };
    {
        let log = AuditLog::open(&path, 2048, 3, None).unwrap();
        for i in 0..20 {
            log.append(record(i)).unwrap();
        }
    }
    // A restart goes on with the same chain.
    let log = AuditLog::open(&path, 2048, 3, None).unwrap();
    for i in 20..30 {
        log.append(record(i)).unwrap();
    }
    let rotated = |i: usize| dir.path().join(format!("audit.log.{i}"));
    assert!(rotated(2).exists(), "rotated over several files");
    let Verified::Intact { lines, files, .. } = verify(&path).unwrap() else {
        panic!("an untouched trail verifies");
    };
    assert!(lines > 10 && files >= 3, "{lines} lines, {files} files");
    let cli = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_kpilens"))
            .args(["audit", "verify", "--file"])
            .arg(file)
            .output()
            .unwrap()
    };
    let ok = cli(&path);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("intact"));

    // One status changed in the middle file: the next line names it.
    let middle = std::fs::read_to_string(rotated(1)).unwrap();
    // (Its first line may be the log's own note of a retention removal.)
    let changed = middle
        .lines()
        .position(|l| l.contains("\"status\":200"))
        .unwrap();
    let tampered = middle.replacen("\"status\":200", "\"status\":403", 1);
    std::fs::write(rotated(1), tampered).unwrap();
    assert_eq!(
        verify(&path).unwrap(),
        Verified::Broken {
            file: rotated(1),
            line: changed as u64 + 2,
            reason: "its prev is not the hash of the line before: that line, or this one, was changed, inserted or removed".into(),
        }
    );
    let broken = cli(&path);
    assert!(!broken.status.success());
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains(&format!("audit.log.1:{}", changed + 2)),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    // A line removed breaks it too.
    std::fs::write(rotated(1), &middle).unwrap();
    assert!(matches!(verify(&path).unwrap(), Verified::Intact { .. }));
    let current = std::fs::read_to_string(&path).unwrap();
    let without_first: Vec<&str> = current.lines().skip(1).collect();
    std::fs::write(&path, without_first.join("\n") + "\n").unwrap();
    assert!(matches!(
        verify(&path).unwrap(),
        Verified::Broken { line: 1, .. }
    ));
}

#[test]
fn rotated_audit_files_are_also_kept_by_age() {
    use kpilens::security::audit::{AuditLog, AuditRecord};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let log = AuditLog::open(&path, 1024, 5, Some(Duration::from_secs(30 * 86_400))).unwrap();
    let line = AuditRecord {
        route: "x".repeat(200),
        ..AuditRecord::default()
    };
    for _ in 0..12 {
        log.append(line.clone()).unwrap();
    }
    let rotated = |i: usize| dir.path().join(format!("audit.log.{i}"));
    assert!(rotated(2).exists() && rotated(3).exists());
    // audit.log.3 is 40 days old: gone at the next rotation; the newer ones stay.
    let old = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(rotated(3))
        .unwrap()
        .set_modified(old)
        .unwrap();
    for _ in 0..4 {
        log.append(line.clone()).unwrap();
    }
    assert!(rotated(2).exists());
    for i in 1..=5 {
        let age = std::fs::metadata(rotated(i))
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default());
        assert!(
            age.is_err() || age.unwrap() < Duration::from_secs(86_400),
            "audit.log.{i} is the old file, kept"
        );
    }
}

/// Issue 34, point 3: the strings a client chooses are clipped in its audit line (with the hash
/// of the whole), the line names the client's address, and a flood of long requests cannot
/// rotate an earlier line away while the retention policy keeps its file.
#[tokio::test]
async fn audit_lines_are_bounded_and_name_the_client() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    // A 200 KB filter value (within the body limit) and a 20 KB name in the token.
    let huge = "x".repeat(200_000);
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["region"],
        "filters": [{ "dimension": "region", "op": "eq", "value": huge }] });
    let long_name = token(&"n".repeat(20_000), "analyst", json!({}));
    let r = exchange(
        s.addr,
        "POST",
        "/api/v1/query",
        &[("Authorization", &long_name)],
        &q.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let trail = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    let line = trail.lines().last().unwrap();
    assert!(line.len() < 4_096, "a {} byte audit line", line.len());
    let record: Value = serde_json::from_str(line).unwrap();
    assert_eq!(record["client"], "127.0.0.1", "{line}");
    assert!(line.contains("sha256"), "{line}");
}

#[test]
fn a_flood_of_lines_cannot_rotate_away_what_the_retention_policy_keeps() {
    use kpilens::security::audit::{
        AuditLog, AuditQuery, AuditRecord, TrailStart, Verified, verify,
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    // Two files kept by count, and 180 days by age: the age wins, nothing young is removed.
    let log = AuditLog::open(&path, 2048, 2, Some(Duration::from_secs(180 * 86_400))).unwrap();
    log.append(AuditRecord {
        principal: "exporter".into(),
        route: "/api/v1/export".into(),
        rows: Some(50_000),
        ..AuditRecord::default()
    })
    .unwrap();
    for _ in 0..100 {
        log.append(AuditRecord {
            principal: "flooder".into(),
            route: format!("/api/v1/query/{}", "y".repeat(100_000)),
            ..AuditRecord::default()
        })
        .unwrap();
    }
    let query = AuditQuery {
        principal: Some("exporter".into()),
        ..AuditQuery::default()
    };
    let (found, matched) = kpilens::security::audit::search(&path, &query, 10).unwrap();
    assert_eq!(
        (found.len(), matched),
        (1, 1),
        "the export is still on record"
    );
    let Verified::Intact { start, files, .. } = verify(&path).unwrap() else {
        panic!("intact");
    };
    assert_eq!(start, TrailStart::FirstLine);
    assert!(files > 2, "{files} files: more than the count, all young");
    // Searching holds the newest `limit` matches, not all of them.
    let flood = AuditQuery {
        principal: Some("flooder".into()),
        ..AuditQuery::default()
    };
    let (found, matched) = kpilens::security::audit::search(&path, &flood, 3).unwrap();
    assert_eq!((found.len(), matched), (3, 100));
    assert_eq!(found[2].seq, 101, "the newest last");
}

/// Issue 34, point 4: `audit verify` fails on a trimmed trail, naming what is missing: the
/// newest rotated file, a file in the middle (renumbered or not), the oldest file, the oldest
/// lines. A trail whose oldest files the retention policy removed verifies, saying so.
#[test]
fn audit_verify_names_what_was_cut_from_the_trail() {
    use kpilens::security::audit::{AuditLog, AuditRecord, TrailStart, Verified, verify};
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("original");
    std::fs::create_dir(&original).unwrap();
    {
        // By count (no age): rotated files beyond the newest 4 are removed, and recorded.
        let log = AuditLog::open(&original.join("audit.log"), 1024, 4, None).unwrap();
        for i in 0..60 {
            log.append(AuditRecord {
                principal: format!("p{i}"),
                route: "/api/v1/query".into(),
                filters: json!({ "pad": "z".repeat(200) }),
                ..AuditRecord::default()
            })
            .unwrap();
        }
    }
    let fresh = |name: &str| {
        let copy = dir.path().join(name);
        std::fs::create_dir(&copy).unwrap();
        for entry in std::fs::read_dir(&original).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
        }
        copy
    };
    let at = |d: &std::path::Path, i: usize| d.join(format!("audit.log.{i}"));
    let Verified::Intact { start, files, .. } = verify(&original.join("audit.log")).unwrap() else {
        panic!("the untouched trail verifies");
    };
    assert_eq!(files, 5);
    assert!(
        matches!(&start, TrailStart::AfterRemoval { first_kept, policy } if *first_kept > 1 && policy.contains("--audit-keep")),
        "{start:?}"
    );

    let newest = fresh("newest");
    std::fs::remove_file(at(&newest, 1)).unwrap();
    assert!(matches!(verify(&newest.join("audit.log")).unwrap(),
        Verified::Broken { file, line: 0, .. } if file == at(&newest, 1)));

    let middle = fresh("middle");
    std::fs::remove_file(at(&middle, 2)).unwrap();
    std::fs::rename(at(&middle, 3), at(&middle, 2)).unwrap();
    std::fs::rename(at(&middle, 4), at(&middle, 3)).unwrap();
    let Verified::Broken { file, reason, .. } = verify(&middle.join("audit.log")).unwrap() else {
        panic!("a file cut from the middle and the rest renumbered");
    };
    assert_eq!(file, at(&middle, 1));
    assert!(reason.contains("are missing"), "{reason}");

    let oldest = fresh("oldest");
    std::fs::remove_file(at(&oldest, 4)).unwrap();
    let Verified::Broken { file, reason, .. } = verify(&oldest.join("audit.log")).unwrap() else {
        panic!("the oldest file removed by hand");
    };
    assert_eq!(file, at(&oldest, 3));
    assert!(
        reason.contains("no removal by the retention policy"),
        "{reason}"
    );

    let lines = fresh("lines");
    let text = std::fs::read_to_string(at(&lines, 4)).unwrap();
    let rest: Vec<&str> = text.lines().skip(2).collect();
    std::fs::write(at(&lines, 4), rest.join("\n") + "\n").unwrap();
    assert!(matches!(
        verify(&lines.join("audit.log")).unwrap(),
        Verified::Broken { line: 1, .. }
    ));
}

/// Issue 34, point 8: brackets behind a quote inside a plain scalar (`a."`) are counted as the
/// parser nests them (100,000 took 16 s to parse); a file over 1 MiB and a dashboard of more
/// than 100 panels are refused by name, before they cost anything.
#[tokio::test]
async fn definition_files_are_bounded_before_they_are_parsed() {
    let quoted = format!("metrics:\n  a.\"b: {}", "[".repeat(100_000));
    let huge = "# a comment line, many times\n".repeat(40_000);
    let panels: String = (0..101)
        .map(|i| format!("  - {{ id: p{i}, type: kpi, metrics: [overdue_ratio] }}\n"))
        .collect();
    let wall = format!(
        "title: {{ zh: 墙, en: Wall }}\ntime: {{ grain: month, periods: 12, anchor: loan_month }}\npanels:\n{panels}"
    );
    let started = Instant::now();
    let errors = super::catalog_errors::load_errors(&[
        ("metrics/quoted.yaml", &quoted),
        ("metrics/huge.yaml", &huge),
    ])
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let has = |errors: &[kpilens::catalog::CatalogError], file: &str, key: &str, part: &str| {
        super::catalog_errors::assert_has(errors, file, key, part)
    };
    has(
        &errors,
        "metrics/quoted.yaml",
        "",
        "nest more than 64 levels deep at line 2",
    );
    has(&errors, "metrics/huge.yaml", "", "1024 KiB at most");
    // Dashboards are checked once the definitions validate.
    let errors = super::catalog_errors::load_errors(&[("dashboards/wall.yaml", &wall)]).await;
    has(&errors, "dashboards/wall.yaml", "panels", "100 at most");
}

/// A server reloading every 50 ms over a copy of the fixture project, `text` dropped into it as
/// `file`, and the first error the catalog status reports for it (within 10 s of the write).
async fn first_reload_error(
    file: &str,
    text: &str,
) -> (super::http::Server, tempfile::TempDir, Value, Instant) {
    let project = super::temp_project(&[]);
    let mut settings = super::settings_for(project.path());
    settings.reload_ms = 50;
    let s = start(settings).await;
    let started = Instant::now();
    std::fs::write(project.path().join(file), text).unwrap();
    let error = loop {
        let (_, status) = s.get("/api/v1/catalog/status").await;
        if let Some(e) = status["catalog"]["last_error"]["errors"].get(0) {
            break e.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(error["file"], file);
    (s, project, error, started)
}

#[tokio::test]
async fn a_deeply_nested_yaml_is_refused_unparsed_and_not_retried_every_tick() {
    let nested = format!("metrics: {}", "[".repeat(200_000));
    let (s, _project, error, started) = first_reload_error("metrics/nest.yaml", &nested).await;
    assert!(
        error["reason"]
            .as_str()
            .unwrap()
            .contains("more than 64 levels"),
        "{error}"
    );
    // Queries stay fast while it sits there, tick after tick.
    let q = json!({ "metrics": ["loan_balance"] });
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(s.query(q.clone()).await.0, 200);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(worst < Duration::from_millis(500), "a query took {worst:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// A definition file over the size cap dropped into a running server's project is reported by
/// name in the catalog status (it was skipped unread and never reloaded: the server said
/// nothing), while the last good catalog keeps answering.
#[tokio::test]
async fn an_oversized_definition_file_is_reported_by_the_running_server() {
    let huge = "# a comment line, many times\n".repeat(40_000);
    let (s, _project, error, _) = first_reload_error("metrics/huge.yaml", &huge).await;
    assert!(
        error["reason"]
            .as_str()
            .unwrap()
            .contains("1024 KiB at most"),
        "{error}"
    );
    let q = json!({ "metrics": ["loan_balance"] });
    assert_eq!(s.query(q).await.0, 200);
}

#[tokio::test]
async fn the_servers_own_metrics_are_prometheus_text_with_bounded_labels() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["region"] });
    assert_eq!(s.query(q.clone()).await.0, 200);
    assert_eq!(s.query(q).await.0, 200);
    // Paths a client chooses never become labels.
    for i in 0..5 {
        let path = format!("/api/v1/no-such-route-{i}");
        assert_eq!(s.call("GET", &path, &[], "").await.status, 404);
    }
    assert_eq!(
        s.call(
            "GET",
            "/api/v1/dashboards/nope",
            &[("Authorization", &s.auth)],
            ""
        )
        .await
        .status,
        404
    );
    let r = s.call("GET", "/metrics", &[], "").await;
    assert_eq!(r.status, 200, "token-free");
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = String::from_utf8(r.body).unwrap();
    for expected in [
        "kpilens_http_requests_total{method=\"POST\",route=\"/api/v1/query\",status=\"200\"} 2",
        "kpilens_http_requests_total{method=\"GET\",route=\"/api/v1/dashboards/{id}\",status=\"404\"} 1",
        "kpilens_http_request_duration_seconds_bucket{route=\"/api/v1/query\",le=\"+Inf\"} 2",
        "kpilens_query_duration_seconds_count{served_by=\"cache\"} 1",
        "kpilens_query_duration_seconds_count{served_by=\"engine\"} 1",
        "kpilens_cache_hits_total 1",
        "kpilens_cache_misses_total 1",
        "kpilens_engine_memory_bytes ",
        "kpilens_cache_bytes ",
        "kpilens_alerts_firing 0",
        "kpilens_data_refresh_failed 0",
    ] {
        assert!(text.contains(expected), "no '{expected}' in\n{text}");
    }
    assert!(!text.contains("no-such-route"), "{text}");
    // Valid for Prometheus itself (Debian's promtool; CI installs it and requires it).
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Err(_) if std::env::var_os("KPILENS_REQUIRE_PROMTOOL").is_none() => {
            eprintln!("promtool is not installed here: the format check is left to CI");
        }
        Err(e) => panic!("promtool is required here: {e}"),
    }
}

/// `kill -9`: no clean-up, no flush, no shutdown hooks.
fn kill_hard(child: &mut std::process::Child) {
    let _ = child.kill();
    let _ = child.wait();
}

async fn get_json(addr: std::net::SocketAddr, auth: &str, path: &str) -> Value {
    let r = exchange(addr, "GET", path, &[("Authorization", auth)], "").await;
    assert_eq!(
        r.status,
        200,
        "{path}: {}",
        String::from_utf8_lossy(&r.body)
    );
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn a_kill_during_rollup_writes_and_alert_runs_loses_and_duplicates_nothing() {
    let (data, _) = super::demo_settings();
    let store = data.path().join(".kpilens/rollups");
    // 1. Killed while the rollups are being written: as soon as the first one is stored.
    let (mut child, _) = {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kpilens"))
            .args(["demo", "--addr", "127.0.0.1:0", "--project"])
            .arg(super::repo_dir())
            .arg("--data")
            .arg(data.path())
            .arg("--audit-log")
            .arg(data.path().join("audit.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            let stored = std::fs::read_dir(&store)
                .map(|d| d.flatten().any(|e| e.path().join("manifest.json").exists()))
                .unwrap_or(false);
            if stored {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no rollup stored"
            );
            assert!(child.try_wait().unwrap().is_none(), "the server exited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (child, ())
    };
    kill_hard(&mut child);

    // 2. Restarted: everything stored loads or is rebuilt; then alerts run, and it is killed
    // again while they do (the scheduler runs every second from the start).
    let (mut child, addr) = spawn_demo(data.path(), &[]);
    let users = demo_users(addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    let status = get_json(addr, &auth, "/api/v1/catalog/status").await;
    for r in status["rollups"].as_array().unwrap() {
        assert!(r["refresh"]["store_error"].is_null(), "{r}");
    }
    let started = Instant::now();
    let before = loop {
        let tasks = get_json(addr, &auth, "/api/v1/tasks").await;
        if !tasks["tasks"].as_array().unwrap().is_empty() {
            break tasks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no task opened"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_millis(1100)).await;
    kill_hard(&mut child);

    // 3. Restarted once more: every task from before is there, none twice; the answers are
    // those of a server that never stored anything.
    let (mut child, addr) = spawn_demo(data.path(), &[]);
    let users = demo_users(addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = get_json(addr, &auth, "/api/v1/tasks").await;
    let ids = |v: &Value| -> Vec<String> {
        v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (before_ids, after_ids) = (ids(&before), ids(&after));
    let unique: std::collections::BTreeSet<_> = after_ids.iter().collect();
    assert_eq!(unique.len(), after_ids.len(), "a task listed twice");
    for id in &before_ids {
        assert!(after_ids.contains(id), "task {id} was lost");
    }
    let alerts = get_json(addr, &auth, "/api/v1/alerts").await;
    let instances: Vec<String> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}|{}", a["rule"], a["path"]))
        .collect();
    let unique: std::collections::BTreeSet<_> = instances.iter().collect();
    assert_eq!(unique.len(), instances.len(), "an alert instance twice");
    let q = json!({ "metrics": ["customer_churn_rate", "customer_count", "loan_balance"], "dimensions": ["region"],
        "time": { "grain": "month", "from": "2024-01-01", "to": "2025-12-31" } })
    .to_string();
    let headers = [("Authorization", auth.as_str())];
    let stored = exchange(addr, "POST", "/api/v1/query", &headers, &q).await;
    kill_hard(&mut child);
    let (mut fresh, fresh_addr) = spawn_demo(data.path(), &["--no-rollup-store"]);
    let users = demo_users(fresh_addr).await;
    let auth = format!("Bearer {}", users[0]["token"].as_str().unwrap());
    let headers = [("Authorization", auth.as_str())];
    let computed = exchange(fresh_addr, "POST", "/api/v1/query", &headers, &q).await;
    kill_hard(&mut fresh);
    let (stored, computed): (Value, Value) = (
        serde_json::from_slice(&stored.body).unwrap(),
        serde_json::from_slice(&computed.body).unwrap(),
    );
    // The same numbers (to float rounding: a rollup sums in another order than the models).
    let (stored, computed) = (
        stored["rows"].as_array().unwrap(),
        computed["rows"].as_array().unwrap(),
    );
    assert!(!stored.is_empty());
    assert_eq!(stored.len(), computed.len());
    for (a, b) in stored.iter().zip(computed) {
        for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
            assert!(super::close(x, y, 1e-9), "{a} vs {b}");
        }
    }
}

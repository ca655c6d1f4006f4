//! `POST /api/v1/export`: the same numbers as the JSON answer, in a workbook or a CSV, scoped
//! like the request, with a clear refusal past the row limit.

use std::io::Cursor;

use calamine::{Data, Reader, Xlsx};
use serde_json::{Value, json};

use super::bank_settings;
use super::http::{RawResponse, Server, start, token};

async fn export(server: &Server, auth: &str, body: Value) -> RawResponse {
    server
        .call(
            "POST",
            "/api/v1/export",
            &[("Authorization", auth)],
            &body.to_string(),
        )
        .await
}

/// An export refused with `status`, its JSON error's message containing `part`.
async fn refused(server: &Server, auth: &str, body: Value, status: u16, part: &str) -> Value {
    let file = export(server, auth, body).await;
    assert_eq!(
        file.status,
        status,
        "{}",
        String::from_utf8_lossy(&file.body)
    );
    let error: Value = serde_json::from_slice(&file.body).expect("a JSON error");
    let message = error["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(part), "{error}");
    error
}

/// Each sheet's cells, as calamine reads the workbook back.
fn sheets(bytes: &[u8]) -> Vec<(String, Vec<Vec<Data>>)> {
    let mut book = Xlsx::new(Cursor::new(bytes.to_vec())).expect("an xlsx workbook");
    book.sheet_names()
        .into_iter()
        .map(|name| {
            let range = book.worksheet_range(&name).expect("a sheet");
            (name, range.rows().map(<[Data]>::to_vec).collect())
        })
        .collect()
}

fn number(cell: &Data) -> Option<f64> {
    match cell {
        Data::Float(f) => Some(*f),
        Data::Int(i) => Some(*i as f64),
        _ => None,
    }
}

/// The workbook's rows equal the JSON answer's, value for value (dates as Excel dates).
fn assert_same(cells: &[Vec<Data>], answer: &Value) {
    let rows = answer["rows"].as_array().expect("rows");
    assert_eq!(
        cells.len(),
        1 + rows.len() + 1,
        "header, rows, totals: {cells:?}"
    );
    for (got, want) in cells[1..].iter().zip(rows) {
        for (g, w) in got.iter().zip(want.as_array().expect("row")) {
            match w {
                Value::Number(n) => {
                    assert!(
                        (number(g).expect("a number") - n.as_f64().unwrap()).abs() < 1e-9,
                        "{g:?} vs {w}"
                    );
                }
                Value::String(s) => match g {
                    Data::DateTime(d) => {
                        let (y, m, day, ..) = d.to_ymd_hms_milli();
                        assert_eq!(format!("{y:04}-{m:02}-{day:02}"), *s);
                    }
                    other => assert_eq!(other.to_string(), *s),
                },
                Value::Null => assert_eq!(*g, Data::Empty),
                other => panic!("unexpected {other}"),
            }
        }
    }
}

#[tokio::test]
async fn a_query_exports_as_its_json_answer_in_xlsx_and_csv() {
    let (_data, settings) = bank_settings().await;
    let server = start(settings).await;
    let query = json!({
        "metrics": ["overdue_ratio", "loan_balance"],
        "dimensions": ["branch"],
        "time": { "from": "2024-04-01", "to": "2024-04-30" },
    });
    let (status, answer) = server.query(query.clone()).await;
    assert_eq!(status, 200, "{answer}");

    let file = export(
        &server,
        &server.auth,
        json!({ "format": "xlsx", "query": query }),
    )
    .await;
    assert_eq!(file.status, 200, "{}", String::from_utf8_lossy(&file.body));
    assert_eq!(
        file.header("content-type"),
        Some("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    );
    assert_eq!(
        file.header("content-disposition"),
        Some("attachment; filename=\"kpilens-overdue_ratio_loan_balance.xlsx\"")
    );
    let book = sheets(&file.body);
    assert_eq!(book.len(), 1);
    let cells = &book[0].1;
    // Headers are the labels in the asked language (Chinese by default).
    assert_eq!(
        cells[0].iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        ["分行", "逾期贷款率", "贷款余额"]
    );
    assert_same(cells, &answer);
    let totals = cells.last().expect("totals");
    assert_eq!(totals[0].to_string(), "合计");
    assert_eq!(number(&totals[2]), answer["totals"][2].as_f64());

    let file = export(
        &server,
        &server.auth,
        json!({ "format": "csv", "lang": "en", "query": query }),
    )
    .await;
    assert_eq!(file.status, 200);
    assert_eq!(file.header("content-type"), Some("text/csv; charset=utf-8"));
    let text = String::from_utf8(file.body).expect("UTF-8");
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte order mark for Excel");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Branch,Overdue loan ratio,Loan balance");
    let rows = answer["rows"].as_array().unwrap();
    assert_eq!(lines.len(), 1 + rows.len() + 1);
    for (line, row) in lines[1..].iter().zip(rows) {
        let want: Vec<String> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        assert_eq!(*line, want.join(","));
    }
    assert!(lines.last().unwrap().starts_with("Total,"));
}

#[tokio::test]
async fn a_dashboard_exports_a_sheet_per_panel_and_a_scope_sees_only_its_own() {
    let (_data, settings) = bank_settings().await;
    let server = start(settings).await;
    let (status, board) = server.get("/api/v1/dashboards/risk").await;
    assert_eq!(status, 200);
    let panels = board["panels"].as_array().expect("panels");
    let file = export(
        &server,
        &server.auth,
        json!({ "format": "xlsx", "dashboard": "risk" }),
    )
    .await;
    assert_eq!(file.status, 200, "{}", String::from_utf8_lossy(&file.body));
    let book = sheets(&file.body);
    assert_eq!(book.len(), panels.len());
    for ((name, cells), panel) in book.iter().zip(panels) {
        assert!(
            panel["title"]["zh"]
                .as_str()
                .unwrap()
                .starts_with(name.as_str()),
            "{name}"
        );
        assert_eq!(
            cells.len() - 1 - usize::from(panel["result"]["totals"].is_array()),
            panel["result"]["rows"].as_array().unwrap().len(),
            "{name}"
        );
    }

    // A branch head's export holds the branch's numbers, as the branch head's JSON does.
    let branch_head = token("bh", "branch_head", json!({ "branch": "西安分行" }));
    let query = json!({ "metrics": ["loan_balance"], "dimensions": ["branch"], "time": { "from": "2024-04-01", "to": "2024-04-30" } });
    let (status, mine) = server
        .json_as(&branch_head, "POST", "/api/v1/query", &query.to_string())
        .await;
    assert_eq!(status, 200);
    let file = export(
        &server,
        &branch_head,
        json!({ "format": "xlsx", "query": query }),
    )
    .await;
    let cells = &sheets(&file.body)[0].1;
    assert_eq!(cells.len(), 3, "header, one branch, totals: {cells:?}");
    assert_eq!(cells[1][0].to_string(), "西安分行");
    assert_same(cells, &mine);

    // One panel as CSV; several as CSV is refused, saying why.
    let file = export(
        &server,
        &server.auth,
        json!({ "format": "csv", "dashboard": "risk", "panel": panels[0]["id"] }),
    )
    .await;
    assert_eq!(file.status, 200);
    let a = &server.auth;
    refused(
        &server,
        a,
        json!({ "format": "csv", "dashboard": "risk" }),
        422,
        "a CSV holds one table",
    )
    .await;
    let nope = json!({ "format": "xlsx", "dashboard": "risk", "panel": "nope" });
    refused(&server, a, nope, 422, "has no panel 'nope'").await;
    let anyone = json!({ "format": "xlsx", "dashboard": "risk" });
    assert_eq!(export(&server, "", anyone).await.status, 401);
}

#[tokio::test]
async fn a_drill_through_list_exports_every_row_masked_as_listed() {
    let (_data, settings) = bank_settings().await;
    let server = start(settings).await;
    let analyst = token("a", "analyst", json!({}));
    let list = json!({ "model": "customers", "page_size": 3 });
    let (status, first) = server
        .json_as(&analyst, "POST", "/api/v1/drill_through", &list.to_string())
        .await;
    assert_eq!(status, 200, "{first}");
    let total = first["total"].as_u64().unwrap() as usize;
    assert!(total > 3, "more than one page");
    let file = export(
        &server,
        &analyst,
        json!({ "format": "xlsx", "drill_through": list }),
    )
    .await;
    assert_eq!(file.status, 200, "{}", String::from_utf8_lossy(&file.body));
    let (name, cells) = &sheets(&file.body)[0];
    assert_eq!(name, "客户主数据");
    assert_eq!(cells.len(), 1 + total, "every row, not one page");
    // Names masked for a role without personal data, as in the JSON list.
    let names: Vec<String> = cells[1..].iter().map(|r| r[1].to_string()).collect();
    assert_eq!(names[0], first["rows"][0][1].as_str().unwrap());
    assert!(names.iter().all(|n| n.contains('*')), "{names:?}");
}

#[tokio::test]
async fn a_list_longer_than_the_row_limit_is_refused_saying_so() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_rows = 3;
    let server = start(settings).await;
    let a = &server.auth;
    let all = json!({ "format": "xlsx", "drill_through": { "model": "customers" } });
    let error = refused(
        &server,
        a,
        all,
        422,
        "an export lists at most 3 (--max-rows)",
    )
    .await;
    assert_eq!(error["error"]["code"], "export_too_large");
    // Exactly one source, and a known format.
    let none = json!({ "format": "xlsx" });
    refused(
        &server,
        a,
        none,
        422,
        "exactly one of 'query', 'drill_through' or 'dashboard'",
    )
    .await;
    let pdf = json!({ "format": "pdf", "dashboard": "risk" });
    refused(
        &server,
        a,
        pdf,
        400,
        "unknown variant `pdf`, expected `xlsx` or `csv`",
    )
    .await;
}

/// CSV exports never hand a spreadsheet a formula from the data: org members named like
/// formulas (`=HYPERLINK(...)` as a branch, `@SUM(A1)` as a team, `+cmd` as an RM, `-2+3` as a
/// region) come out as text (a leading `'`, quoted) in every export shape: a query, a dashboard
/// panel, a drill-through list. Negative numbers stay numbers.
#[tokio::test]
async fn csv_exports_neutralise_members_that_look_like_formulas() {
    let bank = tempfile::tempdir().unwrap();
    super::copy_dir(&super::repo_dir().join("tests/fixtures/bank"), bank.path());
    let org = std::fs::read_to_string(bank.path().join("org.csv")).unwrap();
    let hostile = org
        .replace(
            "西安分行",
            "\"=HYPERLINK(\"\"http://evil.example\"\",\"\"x\"\")\"",
        )
        .replace(",T1,", ",@SUM(A1),")
        .replace("王芳", "+cmd")
        .replace("西北", "-2+3");
    std::fs::write(bank.path().join("org.csv"), hostile).unwrap();
    let data = tempfile::tempdir().unwrap();
    let sources = kpilens::catalog::ProjectSources::read(&super::repo_dir()).unwrap();
    kpilens::metric_tests::materialize_fixture(&sources, bank.path(), data.path())
        .await
        .unwrap();
    let server = start(super::repo_project_over(data.path())).await;
    let april = json!({ "from": "2024-04-01", "to": "2024-04-30" });
    let shapes = [
        json!({ "format": "csv", "query": { "metrics": ["loan_balance", "overdue_ratio"],
            "dimensions": ["region", "branch", "team", "rm"], "time": april } }),
        json!({ "format": "csv", "dashboard": "risk", "panel": "overdue_by_region" }),
        json!({ "format": "csv", "drill_through": { "model": "customer" } }),
    ];
    for shape in shapes {
        let file = export(&server, &server.auth, shape.clone()).await;
        assert_eq!(file.status, 200, "{}", String::from_utf8_lossy(&file.body));
        let text = String::from_utf8(file.body.clone()).unwrap();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.trim_start_matches('\u{feff}').as_bytes());
        let mut neutralised = 0;
        for record in reader.records() {
            for cell in record.unwrap().iter() {
                let formula = cell.starts_with(['=', '+', '@', '\t', '\r'])
                    || (cell.starts_with('-') && cell.parse::<f64>().is_err());
                assert!(!formula, "{shape}: a formula reached the CSV: {cell:?}");
                neutralised += usize::from(cell.starts_with("'"));
            }
        }
        assert!(
            neutralised > 0,
            "{shape}: no hostile member in the export:\n{text}"
        );
    }
}

/// Issue 34, point 7: encoding an export takes a compute slot of the principal's share, even
/// of a cached answer (24 exports of one cached answer at once held the request runtime for
/// seconds). With a share of one and no queueing, exports at once from one principal are
/// partly refused (429 `principal_busy`), while another principal's question is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_of_a_cached_answer_take_the_principals_share() {
    let (_data, mut settings) = bank_settings().await;
    settings.max_concurrent_per_principal = 1;
    settings.queue_wait_ms = 1;
    let server = start(settings).await;
    let query = json!({
        "metrics": ["overdue_ratio", "loan_balance"],
        "dimensions": ["branch"],
        "time": { "grain": "day", "from": "2024-01-01", "to": "2024-06-30" },
    });
    let (status, answer) = server.query(query.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let (_, again) = server.query(query.clone()).await;
    assert_eq!(again["meta"]["served_by"], "cache");
    let body = json!({ "format": "xlsx", "query": query });
    let exports =
        futures::future::join_all((0..8).map(|_| export(&server, &server.auth, body.clone())));
    let other = token("another", "analyst", json!({}));
    let headers = [("Authorization", other.as_str())];
    let asked = json!({ "metrics": ["loan_balance"], "dimensions": ["region"] }).to_string();
    let question = server.call("POST", "/api/v1/query", &headers, &asked);
    let (exports, question) = tokio::join!(exports, question);
    assert_eq!(question.status, 200);
    assert!(exports.iter().all(|e| e.status == 200 || e.status == 429));
    assert!(exports.iter().any(|e| e.status == 200));
    let busy: Vec<Value> = exports
        .iter()
        .filter(|e| e.status == 429)
        .map(|e| serde_json::from_slice(&e.body).unwrap())
        .collect();
    assert!(
        !busy.is_empty(),
        "eight exports at once with a share of one"
    );
    assert!(
        busy.iter().all(|b| b["error"]["code"] == "principal_busy"),
        "{busy:?}"
    );
}

/// Coded values (码值) are shown by the labels their dimension declares, wherever a reader sees
/// them: the catalog and each answer's schema carry the labels (the values stay codes, so filters
/// and drills keep working), exports write the label in the asked language, listings and the
/// customer view carry their columns' labels.
#[tokio::test]
async fn coded_values_are_shown_by_their_labels() {
    let (_data, settings) = bank_settings().await;
    let server = start(settings).await;
    let (_, catalog) = server.get("/api/v1/catalog").await;
    let segment = catalog["dimensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "segment")
        .unwrap();
    assert_eq!(segment["value_labels"]["retail"]["zh"], "零售");

    let query = json!({ "metrics": ["loan_balance"], "dimensions": ["segment"] });
    let (status, answer) = server.query(query.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let field = &answer["schema"][0];
    assert_eq!(field["name"], "segment");
    assert_eq!(field["value_labels"]["corporate"]["en"], "Corporate");
    let codes: Vec<&str> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"retail"), "rows keep the codes: {codes:?}");

    for (lang, retail) in [("zh", "零售"), ("en", "Retail")] {
        let file = export(
            &server,
            &server.auth,
            json!({ "format": "csv", "lang": lang, "query": query }),
        )
        .await;
        assert_eq!(file.status, 200);
        let text = String::from_utf8(file.body).unwrap();
        let firsts: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap())
            .collect();
        assert!(firsts.contains(&retail), "{lang}: {firsts:?}");
        assert!(!firsts.contains(&"retail"), "{lang}: {firsts:?}");
    }

    let list = json!({ "model": "customers", "page_size": 2 }).to_string();
    let (status, page) = server
        .json_as(&server.auth, "POST", "/api/v1/drill_through", &list)
        .await;
    assert_eq!(status, 200, "{page}");
    let column = page["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "segment")
        .expect("customers list their segment");
    assert_eq!(column["value_labels"]["sme"]["zh"], "小微企业");

    let (status, profile) = server.get("/api/v1/customers/5").await;
    assert_eq!(status, 200, "{profile}");
    let labelled: Vec<String> = profile["sections"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["columns"].as_array().unwrap().iter())
        .filter(|c| c.get("value_labels").is_some())
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    for name in ["segment", "status", "classification", "product"] {
        assert!(labelled.iter().any(|n| n == name), "{name} in {labelled:?}");
    }
}

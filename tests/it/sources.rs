//! Files as they come: the demo bank's metric tests give the same numbers when every table is a
//! `;`-separated GBK export with `YYYYMMDD` dates and `?` for unknown, or an Excel workbook with
//! a title above the table; a bad value is named by file, line (cell) and column.

use std::collections::BTreeMap;
use std::path::Path;

use kpilens::config::Settings;
use rust_xlsxwriter::{ExcelDateTime, Format, Workbook};
use serde_yaml_ng::{Mapping, Value};

use super::catalog_errors::{assert_has, load_errors};
use super::{copy_dir, repo_dir};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Date,
    Timestamp,
    Other,
}

/// Each column's kind, from the fixture's ISO text.
fn kinds(header: &csv::StringRecord, rows: &[csv::StringRecord]) -> Vec<Kind> {
    (0..header.len())
        .map(|c| {
            let values: Vec<&str> = rows
                .iter()
                .filter_map(|r| r.get(c))
                .filter(|v| !v.is_empty())
                .collect();
            let date =
                |v: &&str| v.len() == 10 && v.as_bytes()[4] == b'-' && v.as_bytes()[7] == b'-';
            let stamp = |v: &&str| v.len() == 19 && v.as_bytes()[10] == b'T';
            if !values.is_empty() && values.iter().all(date) {
                Kind::Date
            } else if !values.is_empty() && values.iter().all(stamp) {
                Kind::Timestamp
            } else {
                Kind::Other
            }
        })
        .collect()
}

fn read_fixture(path: &Path) -> (csv::StringRecord, Vec<csv::StringRecord>) {
    let mut reader = csv::Reader::from_path(path).expect("fixture csv");
    let header = reader.headers().expect("header").clone();
    let rows = reader.records().map(|r| r.expect("record")).collect();
    (header, rows)
}

/// The demo project in a temporary folder with every Parquet model read from `<table>.<ext>`
/// with `read` options made by `read_for` from the columns' kinds, and the bank fixture
/// rewritten by `write` into that form.
fn project_with_sources(
    ext: &str,
    read_for: impl Fn(&[(String, Kind)]) -> Value,
    write: impl Fn(&Path, &csv::StringRecord, &[csv::StringRecord], &[Kind]),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_dir(&repo_dir().join("sql"), &dir.path().join("sql"));
    let fixture = repo_dir().join("tests/fixtures/bank");
    let out = dir.path().join("tests/fixtures/bank");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("metrics")).expect("mkdir");
    for entry in std::fs::read_dir(repo_dir().join("metrics")).expect("metrics") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read");
        let mut yaml: Value = serde_yaml_ng::from_str(&text).expect("yaml");
        if let Some(models) = yaml.get_mut("models").and_then(Value::as_mapping_mut) {
            for (_, model) in models.iter_mut() {
                let source = model.get_mut("source").expect("source");
                let Some(table) = source.get("parquet").and_then(Value::as_str) else {
                    continue;
                };
                let table = table.to_string();
                let (header, rows) = read_fixture(&fixture.join(format!("{table}.csv")));
                let kinds = kinds(&header, &rows);
                write(&out.join(format!("{table}.{ext}")), &header, &rows, &kinds);
                let columns: Vec<(String, Kind)> = header
                    .iter()
                    .map(str::to_string)
                    .zip(kinds.iter().copied())
                    .collect();
                let mut new = Mapping::new();
                let key = if ext == "xlsx" { "xlsx" } else { "csv" };
                new.insert(key.into(), format!("{table}.{ext}").into());
                new.insert("read".into(), read_for(&columns));
                *source = Value::Mapping(new);
            }
        }
        let name = path.file_name().expect("name");
        std::fs::write(
            dir.path().join("metrics").join(name),
            serde_yaml_ng::to_string(&yaml).expect("yaml"),
        )
        .expect("write");
    }
    dir
}

fn declared(columns: &[(String, Kind)], date: Value, timestamp: Value) -> Value {
    let mut declared = Mapping::new();
    for (name, kind) in columns {
        match kind {
            Kind::Date => declared.insert(name.as_str().into(), date.clone()),
            Kind::Timestamp => declared.insert(name.as_str().into(), timestamp.clone()),
            Kind::Other => None,
        };
    }
    Value::Mapping(declared)
}

async fn assert_metric_tests_pass(project: &Path) {
    let settings = Settings {
        project_dir: project.to_path_buf(),
        warm_up: false,
        alerts_tick_ms: 0,
        no_rollup_store: true,
        ..Settings::default()
    };
    let outcomes = kpilens::metric_tests::run_all(&settings)
        .await
        .expect("tests run");
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.failures.is_empty())
        .map(|o| format!("{}: {}", o.name, o.failures.join("\n")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n\n"));
    let repo = kpilens::metric_tests::run_all(&Settings {
        project_dir: repo_dir(),
        ..settings.clone()
    })
    .await
    .expect("repo tests run");
    assert_eq!(outcomes.len(), repo.len());
}

#[tokio::test]
async fn metric_tests_pass_over_gbk_semicolon_exports() {
    let project = project_with_sources(
        "txt",
        |columns| {
            let yaml = format!(
                "{{ delimiter: ';', encoding: gbk, null: ['?'], columns: {} }}",
                serde_json::to_string(
                    &serde_yaml_ng::from_value::<serde_json::Value>(declared(
                        columns,
                        serde_yaml_ng::from_str("{ type: date, format: yyyymmdd }").unwrap(),
                        serde_yaml_ng::from_str(
                            "{ type: timestamp, format: '%d/%m/%Y %H:%M:%S', time_zone: UTC }"
                        )
                        .unwrap(),
                    ))
                    .unwrap()
                )
                .unwrap()
            );
            serde_yaml_ng::from_str(&yaml).unwrap()
        },
        |path, header, rows, kinds| {
            let mut text = String::new();
            let quoted = |v: &str| format!("\"{}\"", v.replace('"', "\"\""));
            let line = |fields: Vec<String>| fields.join(";") + "\r\n";
            text += &line(header.iter().map(quoted).collect());
            for row in rows {
                let fields = row
                    .iter()
                    .zip(kinds)
                    .map(|(v, k)| match (v, k) {
                        ("", _) => "?".to_string(),
                        // Dates as the integers core systems export (no separators).
                        (v, Kind::Date) => v.replace('-', ""),
                        (v, Kind::Timestamp) => {
                            let t = chrono::NaiveDateTime::parse_from_str(v, "%Y-%m-%dT%H:%M:%S")
                                .expect("fixture timestamp");
                            t.format("%d/%m/%Y %H:%M:%S").to_string()
                        }
                        (v, Kind::Other) if v.parse::<f64>().is_ok() => v.to_string(),
                        (v, Kind::Other) => quoted(v),
                    })
                    .collect();
                text += &line(fields);
            }
            let (bytes, _, unmappable) = encoding_rs::GBK.encode(&text);
            assert!(!unmappable, "the fixture is all GBK");
            std::fs::write(path, bytes).expect("write");
        },
    );
    // GBK really is what the files hold: the Chinese names are not UTF-8.
    let org = std::fs::read(project.path().join("tests/fixtures/bank/org.txt")).unwrap();
    assert!(std::str::from_utf8(&org).is_err());
    assert_metric_tests_pass(project.path()).await;
}

#[tokio::test]
async fn metric_tests_pass_over_excel_workbooks() {
    let project = project_with_sources(
        "xlsx",
        |columns| {
            let mut read = Mapping::new();
            read.insert("sheet".into(), "数据".into());
            // A title and a blank row above the table, which starts in column B.
            read.insert(
                "range".into(),
                format!("B3:{}", column_letter(columns.len())).into(),
            );
            read.insert(
                "columns".into(),
                declared(
                    columns,
                    serde_yaml_ng::from_str("date").unwrap(),
                    serde_yaml_ng::from_str("{ type: timestamp, time_zone: UTC }").unwrap(),
                ),
            );
            Value::Mapping(read)
        },
        |path, header, rows, kinds| {
            let mut workbook = Workbook::new();
            let sheet = workbook.add_worksheet();
            sheet.set_name("数据").unwrap();
            sheet.write_string(0, 0, "kpilens fixture export").unwrap();
            let date = Format::new().set_num_format("yyyy-mm-dd");
            let stamp = Format::new().set_num_format("yyyy-mm-dd hh:mm:ss");
            for (c, name) in header.iter().enumerate() {
                sheet.write_string(2, 1 + c as u16, name).unwrap();
            }
            for (r, row) in rows.iter().enumerate() {
                let r = 3 + r as u32;
                for (c, (v, k)) in row.iter().zip(kinds).enumerate() {
                    let c = 1 + c as u16;
                    match (v, k) {
                        ("", _) => {}
                        (v, Kind::Date) => {
                            let d = ExcelDateTime::parse_from_str(v).unwrap();
                            sheet.write_datetime_with_format(r, c, &d, &date).unwrap();
                        }
                        (v, Kind::Timestamp) => {
                            let d = ExcelDateTime::parse_from_str(v).unwrap();
                            sheet.write_datetime_with_format(r, c, &d, &stamp).unwrap();
                        }
                        (v, Kind::Other) => match v.parse::<f64>() {
                            Ok(n) if !v.starts_with('0') || v == "0" || v.starts_with("0.") => {
                                sheet.write_number(r, c, n).unwrap();
                            }
                            _ => {
                                sheet.write_string(r, c, v).unwrap();
                            }
                        },
                    };
                }
            }
            workbook.save(path).unwrap();
        },
    );
    assert_metric_tests_pass(project.path()).await;
}

fn column_letter(count: usize) -> String {
    // Column B plus count - 1 (the fixture tables are narrower than 25 columns).
    ((b'B' + count as u8 - 1) as char).to_string()
}

/// One model over a small file, for the error messages.
fn model_over(file: &str, read: &str) -> String {
    format!(
        "models:\n  loans_file:\n    source: {{ csv: {file}, read: {read} }}\n    time: opened\n"
    )
}

/// The load error of a project with one model over `data/<file>` (text) read with `read`.
async fn file_error(file: &str, data: &str, read: &str, reason_part: &str) {
    let errors = load_errors(&[
        (&format!("data/{file}"), data),
        ("metrics/files.yaml", &model_over(file, read)),
    ])
    .await;
    assert_has(
        &errors,
        "metrics/files.yaml",
        "models.loans_file.source",
        reason_part,
    );
}

#[tokio::test]
async fn a_bad_value_is_named_by_file_line_and_column() {
    // `?` is a declared null; `n/a` is not, on the file's fourth line (CRLF line ends).
    file_error(
        "loans.asc",
        "id;opened;amount\r\n1;930705;100.5\r\n2;930711;?\r\n3;930712;n/a\r\n",
        "{ delimiter: ';', null: ['?'], columns: { opened: { type: date, format: yymmdd }, amount: float64 } }",
        "line 4, column 'amount': cannot read 'n/a' as float64 (if 'n/a' means unknown, list it under read.null)",
    )
    .await;
    file_error(
        "d.asc",
        "id;opened\n1;930230\n",
        "{ delimiter: ';', columns: { opened: { type: date, format: yymmdd } } }",
        "line 2, column 'opened': cannot read '930230' as date (not a valid date in the declared format)",
    )
    .await;
}

#[tokio::test]
async fn dialect_mistakes_say_what_to_declare() {
    // A semicolon file read with the default comma: one column, then a line with a comma in it.
    file_error(
        "l.csv",
        "id;opened\n1;2024-01-02\n2,5;2024-01-03\n",
        "{ header: true }",
        "line 3 has 2 fields where the first line has 1 (is read.delimiter right?)",
    )
    .await;
    let ok = "id,opened\n1,2024-01-02\n";
    file_error(
        "l.csv",
        ok,
        "{ columns: { openned: date } }",
        "read.columns names 'openned', which the file does not have (it has: id, opened)",
    )
    .await;
    file_error(
        "l.csv",
        ok,
        "{ sheet: Sheet1 }",
        "read.sheet and read.range apply to 'xlsx' sources",
    )
    .await;
    file_error(
        "l.csv",
        "1,2024-01-02\n",
        "{ header: false }",
        "read.header is false, so read.names must name the 2 columns",
    )
    .await;

    // GBK bytes read as UTF-8 (written as bytes: they are not text).
    let (gbk, _, _) = encoding_rs::GBK.encode("id,opened,branch\n1,2024-01-02,西安分行\n");
    let dir = super::temp_project(&[("metrics/files.yaml", &model_over("g.csv", "{ }"))]);
    std::fs::write(dir.path().join("data/g.csv"), &gbk).unwrap();
    let errors = match kpilens::service::KpiService::open(&super::settings_for(dir.path())).await {
        Ok(_) => panic!("a GBK file read as UTF-8 must fail"),
        Err(e) => e.0,
    };
    assert_has(
        &errors,
        "metrics/files.yaml",
        "models.loans_file.source",
        "line 2 is not valid UTF-8: declare its encoding, e.g. read.encoding: gbk",
    );
}

#[tokio::test]
async fn inference_keeps_identifiers_with_leading_zeros_as_text() {
    let dir = super::temp_project(&[
        (
            "data/accounts.csv",
            "account_no,opened,balance,limit\n0012,2024-01-02,10,1\n0345,2024-01-03,20.5,2\n",
        ),
        (
            "metrics/files.yaml",
            "models:\n  accounts_file:\n    source: { csv: accounts.csv, read: { null: [] } }\n    time: opened\nmeasures:\n  accounts_balance: { model: accounts_file, agg: sum, expr: balance }\n",
        ),
    ]);
    let service = kpilens::service::KpiService::open(&super::settings_for(dir.path()))
        .await
        .expect("loads");
    let catalog = service.state();
    let model = catalog
        .catalog()
        .models
        .get("accounts_file")
        .expect("model");
    let types: BTreeMap<String, String> = model
        .schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    assert_eq!(types["account_no"], "Utf8");
    assert_eq!(types["opened"], "Date32");
    assert_eq!(types["balance"], "Float64");
    assert_eq!(types["limit"], "Int64");
}

/// The real Berka files beside the repository (`../shared/data/berka`), as CI lays them out.
fn berka_data() -> Option<std::path::PathBuf> {
    let data = repo_dir().join("../shared/data/berka");
    if data.join("loan.asc").exists() {
        Some(data)
    } else {
        eprintln!("skipped: no Berka data at {}", data.display());
        None
    }
}

#[tokio::test]
async fn the_berka_example_serves_its_cockpit_from_its_own_folder() {
    let Some(data) = berka_data() else {
        return;
    };
    let state = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        project_dir: repo_dir().join("examples/berka"),
        data_dir: data,
        state_dir: Some(state.path().to_path_buf()),
        no_auth: true,
        warm_up: false,
        alerts_tick_ms: 0,
        ..Settings::default()
    };
    let server = super::http::start(settings).await;
    // The cockpit comes from the binary: the project has no web/ folder.
    let page = server.raw("/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(String::from_utf8_lossy(&page.body).contains("/app/main.js"));
    assert_eq!(server.raw("/app/main.js", &[]).await.status, 200);

    let (status, board) = server.get("/api/v1/dashboards/berka").await;
    assert_eq!(status, 200, "{board}");
    let panel = |id: &str| {
        board["panels"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["id"] == id))
            .cloned()
            .unwrap_or_else(|| panic!("no panel {id} in {board}"))
    };
    // Every panel answers; the window is 1993-1998 (six years to the last loan).
    for p in board["panels"].as_array().expect("panels") {
        assert!(p.get("error").is_none(), "{p}");
    }
    let volume = panel("loan_volume");
    let rows = volume["result"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 6, "{volume}");
    assert_eq!(rows[0][0], "1993-01-01");
    let total: f64 = rows.iter().map(|r| r[1].as_f64().expect("amount")).sum();
    assert_eq!(total, 103_261_740.0);

    // Drill: Prague's districts (one: Hl.m. Praha), loans granted there.
    let (status, answer) = server
        .query(serde_json::json!({
            "metrics": ["loans", "bad_loan_ratio"],
            "dimensions": ["district"],
            "filters": [{ "dimension": "region", "op": "eq", "value": "Prague" }],
        }))
        .await;
    assert_eq!(status, 200, "{answer}");
    let rows = answer["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "{answer}");
    assert_eq!(rows[0][0], "Hl.m. Praha");
}

#[tokio::test]
async fn validation_reads_the_data_for_errors_only_the_data_shows() {
    use kpilens::service::DataCheck;
    let dir = super::temp_project(&[
        ("data/rates.csv", "district;rate\n1;1.5\n2;?\n3;2.5\n"),
        (
            "metrics/files.yaml",
            "models:\n  rates_file:\n    source: { csv: rates.csv, read: { delimiter: ';' } }\n  rates:\n    source: { sql: rates }\n",
        ),
        (
            "sql/rates.sql",
            "SELECT district, CAST(rate AS DOUBLE) AS rate FROM rates_file",
        ),
    ]);
    // The definitions are fine: the cast fails only on the value '?', in the second row.
    let service = kpilens::service::KpiService::open(&super::settings_for(dir.path()))
        .await
        .expect("definitions validate");
    assert!(service.check_data(DataCheck::Sample(1)).await.is_empty());
    let errors = service.check_data(DataCheck::Sample(10_000)).await;
    assert_has(
        &errors,
        "metrics/files.yaml",
        "models.rates",
        "reading its data fails (within its first 10000 rows): Arrow error: Cast error: Cannot cast string '?' to value of Float64 type (if that value means unknown, list it under the file source's read.null",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(service.check_data(DataCheck::Full).await.len(), 1);
}

//! Banking semantics beyond the numbers the YAML metric tests pin (metrics/bank_tests.yaml): the
//! metric-test runner itself, the response's drill and calendar metadata, time zones and week
//! starts, the listing routes, and the CLI agreeing with the API.

use kpilens::config::Settings;
use kpilens::metric_tests::run_all;
use kpilens::service::KpiService;
use serde_json::{Value, json};

use super::{assert_num, bank_settings, fixture_service, records, repo_dir, request, run};

async fn bank(settings: impl FnOnce(Settings) -> Settings) -> (tempfile::TempDir, KpiService) {
    let (data, s) = bank_settings().await;
    let service = KpiService::open(&settings(s))
        .await
        .expect("demo project validates");
    (data, service)
}

#[tokio::test]
async fn the_demo_metric_tests_pass() {
    let outcomes = run_all(&Settings {
        project_dir: repo_dir(),
        ..Settings::default()
    })
    .await
    .expect("tests run");
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.passed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    assert!(outcomes.len() >= 12, "{} tests", outcomes.len());
}

#[tokio::test]
async fn a_wrong_expectation_fails_and_names_the_cell() {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["metrics", "sql", "tests/fixtures/bank"] {
        copy_tree(&repo_dir().join(sub), &dir.path().join(sub));
    }
    std::fs::write(
        dir.path().join("metrics/wrong_test.yaml"),
        r#"
tests:
  churn_is_not_that:
    fixture: tests/fixtures/bank
    query: { metrics: [customer_churn_rate], time: { grain: month, from: "2024-02-01", to: "2024-02-29" } }
    expect:
      rows: [{ period: "2024-02-01", customer_churn_rate: 0.3 }]
"#,
    )
    .expect("write");
    let outcomes = run_all(&Settings {
        project_dir: dir.path().to_path_buf(),
        ..Settings::default()
    })
    .await
    .expect("tests run");
    let wrong = outcomes
        .iter()
        .find(|o| o.name == "churn_is_not_that")
        .expect("ran");
    assert_eq!(
        wrong.failures,
        ["rows[0].customer_churn_rate: expected 0.3, got 0.2"]
    );
    assert!(
        outcomes
            .iter()
            .filter(|o| o.name != wrong.name)
            .all(|o| o.passed())
    );
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn drill_returns_parent_breadcrumbs_and_next_level() {
    let (_data, s) = bank(|s| s).await;
    let r = run(
        &s,
        json!({ "metrics": ["aum", "overdue_ratio"], "time": { "from": "2024-04-01", "to": "2024-04-30" },
        "drill": { "hierarchy": "org", "path": { "region": "西北", "branch": "西安分行" } } }),
    )
    .await;
    let rows = records(&r);
    // Teams of 西安分行: T1 (customers 1, 2), T2 (3 closed, 7).
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["team"], "T1");
    assert_num(&rows[0]["aum"], Some(150_000.0));
    assert_num(&rows[0]["overdue_ratio"], Some(300.0 / 400.0));
    assert_num(&rows[1]["aum"], Some(30_000.0));
    assert_num(&rows[1]["overdue_ratio"], Some(1.0));
    // Children sum to the parent; the ratio's parent is 400/500, not the mean 0.875.
    let drill = serde_json::to_value(r.result.drill.as_ref().expect("drill")).unwrap();
    assert_eq!(drill["level"], "team");
    assert_eq!(drill["next_level"], "rm");
    let schema: Vec<&str> = r.result.schema.iter().map(|f| f.name.as_str()).collect();
    let parent = &drill["parent"][0];
    let at = |name: &str| schema.iter().position(|c| *c == name).unwrap();
    assert_num(&parent[at("aum")], Some(180_000.0));
    assert_num(&parent[at("overdue_ratio")], Some(0.8));
    assert_eq!(parent[at("team")], Value::Null);
    let shares: f64 = rows.iter().map(|r| r["aum.share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-12);
    assert_eq!(
        drill["breadcrumbs"],
        json!([
            { "level": null, "member": null, "path": {} },
            { "level": "region", "member": "西北", "path": { "region": "西北" } },
            { "level": "branch", "member": "西安分行", "path": { "region": "西北", "branch": "西安分行" } }
        ])
    );
    // The totals are the parent too.
    let t = super::totals(&r);
    assert_num(&t["aum"], Some(180_000.0));
}

#[tokio::test]
async fn drill_errors_name_the_field() {
    let (_data, s) = bank(|s| s).await;
    let err = |q: Value| {
        let s = &s;
        async move {
            s.query(&kpilens::security::Principal::local(), &request(q))
                .await
                .expect_err("refused")
        }
    };
    let e = err(json!({ "metrics": ["aum"], "drill": { "hierarchy": "orgg", "path": {} } })).await;
    assert_eq!(
        (e.code, e.field.as_deref()),
        ("unknown_hierarchy", Some("drill.hierarchy"))
    );
    assert!(e.message.contains("did you mean 'org'"), "{}", e.message);
    let e = err(json!({ "metrics": ["aum"], "drill": { "hierarchy": "org", "path": { "branch": "西安分行" } } })).await;
    assert_eq!(e.field.as_deref(), Some("drill.path.branch"));
    let e = err(json!({ "metrics": ["aum"], "dimensions": ["team"],
        "drill": { "hierarchy": "org", "path": { "region": "西北" } } }))
    .await;
    assert_eq!(e.field.as_deref(), Some("dimensions[0]"));
    let e = err(
        json!({ "metrics": ["aum"], "drill": { "hierarchy": "org", "path": {
        "region": "西北", "branch": "西安分行", "team": "T1", "rm": "R1", "customer": 1 } } }),
    )
    .await;
    assert!(e.message.contains("drill-through"), "{}", e.message);
    let e = err(json!({ "metrics": ["credit_funnel", "aum"] })).await;
    assert_eq!(e.field.as_deref(), Some("metrics[0]"));
    let e = err(json!({ "metrics": ["customer_retention"], "time": { "grain": "week" } })).await;
    assert_eq!(e.field.as_deref(), Some("time.grain"));
    let e = err(json!({ "metrics": ["aum"], "compare": ["previous_period"] })).await;
    assert_eq!(e.field.as_deref(), Some("compare"));
}

#[tokio::test]
async fn partial_period_and_comparison_windows_are_in_meta() {
    let (_data, s) = bank(|s| s).await;
    let r = run(
        &s,
        json!({ "metrics": ["new_customers"], "compare": ["previous_period", "same_period_last_year"],
        "time": { "grain": "month", "from": "2024-03-01", "to": "2024-03-31", "as_of": "2024-03-06" } }),
    )
    .await;
    let meta = serde_json::to_value(&r.meta).unwrap();
    assert_eq!(
        meta["partial_period"],
        json!({ "from": "2024-03-01", "to": "2024-03-06", "days": 6 })
    );
    assert_eq!(meta["as_of"], "2024-03-06");
    assert_eq!(
        meta["comparisons"],
        json!([
            { "compare": "previous_period", "from": "2024-02-01", "to": "2024-02-06", "partial_days": 6 },
            { "compare": "same_period_last_year", "from": "2023-03-01", "to": "2023-03-06", "partial_days": 6 }
        ])
    );
    assert_eq!(meta["time_zone"], "Asia/Shanghai");
    assert_eq!(meta["week_start"], "monday");
}

#[tokio::test]
async fn leap_day_compares_with_february_28th() {
    let s = fixture_service().await;
    // c3 opened on 2024-02-29: last year's same day is 2023-02-28, the previous day 02-28.
    let r = run(
        &s,
        json!({ "metrics": ["new_customers"], "compare": ["same_period_last_year", "previous_period"],
        "time": { "grain": "day", "from": "2024-02-29", "to": "2024-02-29" } }),
    )
    .await;
    let meta = serde_json::to_value(&r.meta).unwrap();
    assert_eq!(meta["comparisons"][0]["from"], "2023-02-28");
    assert_eq!(meta["comparisons"][1]["to"], "2024-02-28");
    let row = &records(&r)[0];
    assert_num(&row["new_customers"], Some(1.0));
    assert_num(&row["new_customers.same_period_last_year"], Some(0.0));
    assert_num(&row["new_customers.previous_period.delta"], Some(1.0));
    assert_eq!(row["new_customers.previous_period.delta_pct"], Value::Null); // from zero
    // A ratio compares as a ratio of sums: March vs February (month end to month end).
    let r = run(
        &s,
        json!({ "metrics": ["overdue_ratio"], "compare": ["previous_period"],
        "time": { "grain": "month", "from": "2024-03-01", "to": "2024-03-31" } }),
    )
    .await;
    let row = &records(&r)[0];
    assert_num(&row["overdue_ratio"], Some(1300.0 / 1430.0));
    assert_num(&row["overdue_ratio.previous_period"], Some(300.0 / 1390.0));
    assert_num(
        &row["overdue_ratio.previous_period.delta"],
        Some(1300.0 / 1430.0 - 300.0 / 1390.0),
    );
}

#[tokio::test]
async fn time_zone_and_week_start_are_configurable() {
    // In UTC, opportunity 4's lead (2024-01-31 17:00 UTC) is January's, not February's.
    let (_data, utc) = bank(|s| Settings {
        time_zone: chrono_tz::UTC,
        week_start: chrono::Weekday::Sun,
        ..s
    })
    .await;
    let q = json!({ "metrics": ["credit_funnel"], "time": { "grain": "month", "from": "2024-01-01", "to": "2024-03-31" } });
    let r = run(&utc, q.clone()).await;
    let lead_jan = &records(&r)[0];
    assert_eq!(
        (lead_jan["period"].as_str(), lead_jan["step"].as_str()),
        (Some("2024-01-01"), Some("lead"))
    );
    assert_num(&lead_jan["credit_funnel"], Some(4.0));
    assert_eq!(r.result.rows.len(), 6, "no February leads in UTC");
    let meta = serde_json::to_value(&r.meta).unwrap();
    assert_eq!(
        (meta["time_zone"].as_str(), meta["week_start"].as_str()),
        (Some("UTC"), Some("sunday"))
    );
    // Weeks start on Sunday: customer 6 opened on Tuesday 2024-03-05, in the week of 03-03.
    let r = run(
        &utc,
        json!({ "metrics": ["new_customers"], "fill_gaps": false,
        "time": { "grain": "week", "from": "2024-03-01", "to": "2024-03-31" } }),
    )
    .await;
    assert_eq!(records(&r)[0]["period"], "2024-03-03");
    // The default (Asia/Shanghai, Monday) puts it in the week of 03-04.
    let (_d, shanghai) = bank(|s| s).await;
    let r = run(
        &shanghai,
        json!({ "metrics": ["new_customers"], "fill_gaps": false,
        "time": { "grain": "week", "from": "2024-03-01", "to": "2024-03-31" } }),
    )
    .await;
    assert_eq!(records(&r)[0]["period"], "2024-03-04");
}

#[tokio::test]
async fn members_and_drill_through_pages() {
    let (_data, s) = bank(|s| s).await;
    let params = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let m = s
        .members(
            &kpilens::security::Principal::local(),
            "org",
            "branch",
            &params(&[("region", "西北")]),
        )
        .await
        .unwrap();
    assert_eq!(m.members, [json!("兰州分行"), json!("西安分行")]);
    let m = s
        .members(
            &kpilens::security::Principal::local(),
            "org",
            "customer",
            &params(&[("rm", "R2")]),
        )
        .await
        .unwrap();
    assert_eq!(m.members, [json!(3), json!(7)]);
    let e = s
        .members(
            &kpilens::security::Principal::local(),
            "org",
            "branch",
            &params(&[("team", "T1")]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("team"));

    let page: kpilens::semantic::listing::DrillThroughRequest = serde_json::from_value(json!({
        "model": "customer", "drill": { "hierarchy": "org", "path": { "region": "西北" } },
        "page": 2, "page_size": 2 }))
    .unwrap();
    let p = s
        .drill_through(&kpilens::security::Principal::local(), &page)
        .await
        .unwrap();
    assert_eq!(p.total, 6); // customers 1, 2, 3, 4, 5, 7
    let ids: Vec<&Value> = p.rows.iter().map(|r| &r[0]).collect();
    assert_eq!(ids, [&json!(3), &json!(4)]);
    assert_eq!(p.columns[0].name, "customer_id");
    assert!(
        p.columns
            .iter()
            .all(|c| c.name != "phone" && c.name != "name")
    );
    let refused: kpilens::semantic::listing::DrillThroughRequest =
        serde_json::from_value(json!({ "model": "customer_month_snapshots" })).unwrap();
    let e = s
        .drill_through(&kpilens::security::Principal::local(), &refused)
        .await
        .unwrap_err();
    assert_eq!(e.code, "not_drillable");
    // Loans of one customer, at the leaf of the hierarchy.
    let loans: kpilens::semantic::listing::DrillThroughRequest = serde_json::from_value(json!({
        "model": "loans", "drill": { "hierarchy": "org", "path": { "region": "西北", "customer": 2 } } }))
    .unwrap();
    let p = s
        .drill_through(&kpilens::security::Principal::local(), &loans)
        .await
        .unwrap();
    assert_eq!((p.total, p.rows[0][2].clone()), (1, json!("consumer")));
}

/// A left join to a lookup that nothing reads is dropped only where the lookup's key is unique
/// over the data: with one customer listed twice in the master, the customer month view's join
/// repeats that customer's rows (as SQL says), so the bank's AUM grows by that customer's AUM;
/// with the master as it is, the join is gone from the plan and the numbers are the same.
#[tokio::test]
async fn unread_lookups_are_dropped_only_where_their_key_is_unique() {
    let month = json!({"metrics": ["aum"], "time": {"from": "2024-03-01", "to": "2024-03-31"}, "rollups": false});
    let total = |r: &kpilens::service::QueryResponse| records(r)[0]["aum"].clone();
    let (_data, service) = bank(|s| s).await;
    let plan = service
        .explain(
            &kpilens::security::Principal::local(),
            &request(month.clone()),
        )
        .await
        .unwrap();
    assert!(
        !plan.optimized_plan.contains("TableScan: customers"),
        "the unread join to the customer master stays:\n{}",
        plan.optimized_plan
    );
    let unique = total(&run(&service, month.clone()).await);
    let one = run(
        &service,
        json!({"metrics": ["aum"], "time": {"from": "2024-03-01", "to": "2024-03-31"},
               "filters": [{"dimension": "customer", "op": "eq", "value": 1}], "rollups": false}),
    )
    .await;
    let customer_one = total(&one);

    let fixture = tempfile::tempdir().unwrap();
    super::copy_dir(&repo_dir().join("tests/fixtures/bank"), fixture.path());
    let customers = fixture.path().join("customers.csv");
    let mut text = std::fs::read_to_string(&customers).unwrap();
    let first = text.lines().nth(1).unwrap().to_string();
    text.push_str(&format!("{first}\n"));
    std::fs::write(&customers, text).unwrap();
    let data = tempfile::tempdir().unwrap();
    let sources = kpilens::catalog::ProjectSources::read(&repo_dir()).unwrap();
    kpilens::metric_tests::materialize_fixture(&sources, fixture.path(), data.path())
        .await
        .unwrap();
    let (_, settings) = bank_settings().await;
    let doubled = KpiService::open(&Settings {
        data_dir: data.path().to_path_buf(),
        ..settings
    })
    .await
    .unwrap();
    let plan = doubled
        .explain(
            &kpilens::security::Principal::local(),
            &request(month.clone()),
        )
        .await
        .unwrap();
    assert!(plan.optimized_plan.contains("TableScan: customers"));
    let repeated = total(&run(&doubled, month).await);
    let (u, c, r) = (
        unique.as_f64().unwrap(),
        customer_one.as_f64().unwrap(),
        repeated.as_f64().unwrap(),
    );
    assert!(c > 0.0);
    assert_eq!(
        r,
        u + c,
        "unique {u}, customer 1 {c}, with customer 1 twice {r}"
    );
}

/// Churn from the models (not the rollup) gives the hand-checked numbers of
/// `metrics/bank_tests.yaml` — a customer who churns and returns, one who churns for good — and
/// with a grain runs one plan per period, one after another (memory for one pair of snapshots).
#[tokio::test]
async fn churn_from_the_models_runs_a_period_at_a_time_with_the_same_numbers() {
    let (_data, service) = bank(|s| s).await;
    let metrics = json!([
        "customer_churn_rate",
        "customers_active_at_start",
        "customers_churned",
        "customers_returned"
    ]);
    let by_month = json!({"metrics": metrics, "rollups": false, "fill_gaps": false,
        "time": {"grain": "month", "from": "2024-01-01", "to": "2024-04-30"}});
    let r = run(&service, by_month.clone()).await;
    assert!(r.meta.notes.rollups.is_empty(), "read the models");
    let got: Vec<_> = records(&r)
        .iter()
        .map(|row| {
            (
                row["period"].clone(),
                row["customers_active_at_start"].clone(),
                row["customers_churned"].clone(),
                row["customers_returned"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!("2024-02-01"), json!(5), json!(1), json!(0)),
            (json!("2024-03-01"), json!(4), json!(2), json!(1)),
            (json!("2024-04-01"), json!(4), json!(0), json!(1)),
        ]
    );
    let local = kpilens::security::Principal::local();
    let plan = service
        .explain(&local, &request(by_month.clone()))
        .await
        .unwrap();
    assert!(
        plan.optimized_plan.contains("Sequential: 4 inputs"),
        "{}",
        plan.optimized_plan
    );
    let profile = service.analyze(&local, &request(by_month)).await.unwrap();
    assert!(profile.contains("SequentialExec: 4 inputs"), "{profile}");

    // A quarter: Q1's end to Q2's (April 30th, the last snapshot); a range without a grain is one
    // pair, January's end to April's, planned whole.
    let quarter = run(
        &service,
        json!({"metrics": metrics, "rollups": false, "fill_gaps": false,
            "time": {"grain": "quarter", "from": "2024-01-01", "to": "2024-06-30"}}),
    )
    .await;
    let q2 = &records(&quarter)[0];
    assert_eq!(
        (
            &q2["period"],
            &q2["customers_active_at_start"],
            &q2["customers_churned"],
            &q2["customers_returned"]
        ),
        (&json!("2024-04-01"), &json!(4), &json!(0), &json!(1))
    );
    let range = run(
        &service,
        json!({"metrics": metrics, "rollups": false,
            "time": {"from": "2024-02-01", "to": "2024-04-30"}}),
    )
    .await;
    let whole = &records(&range)[0];
    assert_eq!(
        (
            &whole["customers_active_at_start"],
            &whole["customers_churned"]
        ),
        (&json!(5), &json!(1))
    );
}

/// Running totals read from the models give what the rollups give, at every grain (weeks read
/// days, a year reads its months), and the hand-checked values of `tests/fixtures/bank`: loans
/// of 120 (2023-07-01), 300 (2024-01-15), 600 (2024-02-01), 100 (2024-03-10).
#[tokio::test]
async fn running_totals_from_the_models_equal_the_rollups_at_every_grain() {
    let (_data, service) = bank(|s| s).await;
    let ask = |grain: Option<&str>, from: &str, to: &str, extra: Value| {
        let mut q = json!({"metrics": ["disbursed_ytd", "new_customers_3p", "new_customers_3p_avg"],
            "time": {"from": from, "to": to}});
        if let Some(g) = grain {
            q["time"]["grain"] = json!(g);
        }
        for (k, v) in extra.as_object().unwrap() {
            q[k] = v.clone();
        }
        q
    };
    let shapes = [
        ask(Some("month"), "2023-11-01", "2024-04-30", json!({})),
        ask(Some("quarter"), "2023-01-01", "2024-06-30", json!({})),
        ask(Some("year"), "2023-01-01", "2024-12-31", json!({})),
        ask(Some("week"), "2023-12-18", "2024-02-11", json!({})),
        ask(Some("day"), "2024-01-10", "2024-02-05", json!({})),
        ask(
            Some("month"),
            "2024-01-01",
            "2024-03-31",
            json!({"dimensions": ["branch"]}),
        ),
        ask(
            Some("month"),
            "2024-01-01",
            "2024-03-20",
            json!({"compare": ["previous_period", "same_period_last_year"]}),
        ),
    ];
    for q in shapes {
        let mut models = q.clone();
        models["rollups"] = json!(false);
        let (a, b) = (run(&service, q.clone()).await, run(&service, models).await);
        assert!(b.meta.notes.rollups.is_empty());
        assert_eq!(a.result.rows, b.result.rows, "{q}");
    }
    let models = |q: Value| {
        let mut q = q;
        q["rollups"] = json!(false);
        q
    };
    let ytd = |grain: &'static str, from: &'static str, to: &'static str| {
        let q = models(ask(Some(grain), from, to, json!({})));
        let service = &service;
        async move {
            let r = run(service, q).await;
            records(&r)
                .iter()
                .map(|r| r["disbursed_ytd"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        ytd("quarter", "2023-01-01", "2024-06-30").await,
        [0, 0, 120, 120, 1000, 1000].map(|v| json!(v))
    );
    assert_eq!(
        ytd("year", "2023-01-01", "2024-12-31").await,
        [json!(120), json!(1000)]
    );
    // Weeks start on Monday: the week of Jan 15th holds the 300; 2023's last week carries 120.
    assert_eq!(
        ytd("week", "2023-12-18", "2024-01-21").await,
        [120, 120, 0, 0, 300].map(|v| json!(v))
    );
    // Without a grain: the year to date on `to`; the totals of a query by month are the same.
    let range = run(
        &service,
        models(json!({"metrics": ["disbursed_ytd"], "time": {"from": "2024-02-01", "to": "2024-03-31"}})),
    )
    .await;
    assert_eq!(records(&range)[0]["disbursed_ytd"], json!(1000));
    let monthly = run(
        &service,
        models(ask(
            Some("month"),
            "2024-01-01",
            "2024-04-30",
            json!({"totals": true}),
        )),
    )
    .await;
    let totals = monthly.result.totals.as_ref().expect("totals");
    // A row in the schema's order (period, then the metrics): the year to date on April 30th,
    // and the rolling window of the last three months, February to April (2 customers).
    assert_eq!(
        serde_json::to_value(totals).unwrap(),
        json!([null, 1000, 2, 2.0 / 3.0])
    );

    // A rolling window needs periods; a running total needs the day it runs through.
    let refused = service
        .query(
            &kpilens::security::Principal::local(),
            &request(json!({"metrics": ["new_customers_3p"], "time": {"from": "2024-01-01", "to": "2024-03-31"}})),
        )
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("time.grain"),
        "{}",
        refused.message
    );
}

/// Targets under scopes and groupings they cannot answer: a branch head sees the branch's own
/// target; an RM (a level the targets are not set at) and a slice by segment (a dimension the
/// targets model lacks) get the actual with a null target, never another level's target or an
/// error; targets alone where they cannot answer, and the time gone without a grain, are
/// refused with the reason.
#[tokio::test]
async fn targets_follow_scopes_and_show_only_where_they_answer() {
    use kpilens::security::{Principal, Scope, ScopeMember};
    use std::collections::BTreeMap;
    let (_data, settings) = bank_settings().await;
    let service = KpiService::open(&settings).await.unwrap();
    let scoped = |level: &str, member: &str| Principal {
        name: format!("{level}-head"),
        role: "viewer".into(),
        scope: Scope(BTreeMap::from([(
            level.to_string(),
            ScopeMember::Text(member.to_string()),
        )])),
        personal_data: false,
    };
    let april = json!({"metrics": ["loan_balance", "loan_balance_target", "loan_balance_attainment"],
                       "time": {"from": "2024-04-01", "to": "2024-04-30"}});
    let ask = |who: Principal, q: Value| {
        let service = &service;
        async move { service.query(&who, &request(q)).await }
    };
    let rows = |r: &kpilens::service::QueryResponse| json!(records(r));

    let xian = ask(scoped("branch", "西安分行"), april.clone())
        .await
        .unwrap();
    assert_eq!(
        rows(&xian),
        json!([{"loan_balance": 500, "loan_balance_target": 625.0, "loan_balance_attainment": 0.8}])
    );
    let r1 = ask(scoped("rm", "R1"), april.clone()).await.unwrap();
    assert_eq!(
        rows(&r1),
        json!([{"loan_balance": 400, "loan_balance_target": null, "loan_balance_attainment": null}]),
        "R1 holds loans 1 and 2 (100 + 300); targets are set per branch"
    );
    let mut by_segment = april.clone();
    by_segment["dimensions"] = json!(["segment"]);
    let r = ask(Principal::local(), by_segment).await.unwrap();
    assert!(
        records(&r)
            .iter()
            .all(|row| row["loan_balance_target"].is_null()),
        "{:?}",
        rows(&r)
    );

    let alone = json!({"metrics": ["loan_balance_target"], "dimensions": ["segment"],
                       "time": {"from": "2024-04-01", "to": "2024-04-30"}});
    let e = ask(Principal::local(), alone).await.unwrap_err();
    assert!(e.message.contains("set per member of their level"), "{e:?}");
    let no_grain = json!({"metrics": ["loan_balance", "time_progress"],
                          "time": {"from": "2024-04-01", "to": "2024-04-30"}});
    let e = ask(Principal::local(), no_grain).await.unwrap_err();
    assert!(e.message.contains("ask with a time grain"), "{e:?}");
    let progress_only = json!({"metrics": ["time_progress"],
                               "time": {"grain": "month", "from": "2024-04-01", "to": "2024-04-30"}});
    let e = ask(Principal::local(), progress_only).await.unwrap_err();
    assert!(e.message.contains("paces other metrics"), "{e:?}");
}

#[tokio::test]
async fn a_day_whose_midnight_does_not_exist_starts_at_its_first_instant() {
    // Havana moves its clocks from 00:00 to 01:00 on 2024-03-10: the day starts at 01:00 local
    // (05:00 UTC). A range from that day is answered, as rollup refreshes already read it.
    let (_data, havana) = bank(|s| Settings {
        time_zone: chrono_tz::America::Havana,
        ..s
    })
    .await;
    let r = run(
        &havana,
        json!({ "metrics": ["credit_funnel"],
        "time": { "grain": "month", "from": "2024-03-10", "to": "2024-05-31" } }),
    )
    .await;
    assert!(
        records(&r)
            .iter()
            .all(|row| row["credit_funnel"] == json!(0)),
        "no lead from March 10 on: {:?}",
        records(&r)
    );
}

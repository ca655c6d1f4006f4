//! Rollups answer exactly what their models answer, the planner picks one only when it can, and
//! broken rollup definitions name file and key.

use std::collections::{BTreeMap, BTreeSet};

use kpilens::security::{Principal, Scope, ScopeMember};
use kpilens::service::{KpiService, QueryResponse};
use serde_json::{Value, json};

use super::catalog_errors::{assert_has, load_errors};
use super::{bank_settings, close, demo_settings, request};

async fn ask(service: &KpiService, who: &Principal, q: &Value) -> QueryResponse {
    service
        .query(who, &request(q.clone()))
        .await
        .unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn used(r: &QueryResponse) -> Vec<&str> {
    r.result.notes.rollups.iter().map(String::as_str).collect()
}

/// Asks `q` with and without rollups: the numbers agree, the first names `expected` in its meta,
/// the second none.
async fn same_both_ways(
    service: &KpiService,
    who: &Principal,
    q: Value,
    expected: &[&str],
    tolerance: f64,
) {
    let mut base_q = q.clone();
    base_q["rollups"] = json!(false);
    let rolled = ask(service, who, &q).await;
    let base = ask(service, who, &base_q).await;
    assert_eq!(used(&rolled), expected, "rollups used for {q}");
    assert!(
        used(&base).is_empty(),
        "rollups: false still used {:?}",
        used(&base)
    );
    let (a, b) = (json!(rolled.result.rows), json!(base.result.rows));
    assert!(!a.as_array().unwrap().is_empty(), "{q} has rows");
    assert!(close(&a, &b, tolerance), "{q}\nrollup {a}\nmodel  {b}");
    let (a, b) = (json!(rolled.result.totals), json!(base.result.totals));
    assert!(
        close(&a, &b, tolerance),
        "{q} totals\nrollup {a}\nmodel  {b}"
    );
    let (a, b) = (json!(rolled.result.drill), json!(base.result.drill));
    assert!(
        close(&a, &b, tolerance),
        "{q} drill\nrollup {a}\nmodel  {b}"
    );
}

/// The questions a cockpit asks of balances: every grain, ranges that start and end mid-period,
/// partial periods, filters, comparisons, drill-down, totals, mixed with metrics no rollup holds.
fn questions(
    (from, to): (&str, &str),
    (mid_from, mid_to): (&str, &str),
    (month_from, month_to): (&str, &str),
    region: &Value,
) -> Vec<(Value, Vec<&'static str>)> {
    let loans = vec!["loan_month_by_rm"];
    let both = vec!["customer_month_by_rm", "loan_month_by_rm"];
    let churn = vec!["customer_churn_by_rm"];
    let funnel = vec!["credit_funnel_by_opportunity"];
    vec![
        (
            json!({"metrics": ["overdue_ratio", "loan_balance"], "dimensions": ["region"],
                   "time": {"grain": "month", "from": from, "to": to}}),
            loans.clone(),
        ),
        (
            json!({"metrics": ["npl_ratio", "loan_balance"], "dimensions": ["product"],
                   "time": {"grain": "quarter", "from": from, "to": to},
                   "filters": [{"dimension": "segment", "op": "eq", "value": "retail"}],
                   "compare": ["previous_period"]}),
            loans.clone(),
        ),
        (
            json!({"metrics": ["aum", "deposit_balance", "overdue_balance"], "dimensions": ["segment"],
                   "time": {"grain": "week", "from": mid_from, "to": mid_to, "as_of": mid_to}}),
            both.clone(),
        ),
        (
            json!({"metrics": ["loan_balance"], "dimensions": ["branch"],
                   "time": {"grain": "day", "from": mid_from, "to": mid_to}}),
            loans.clone(),
        ),
        (
            json!({"metrics": ["npl_balance", "loan_balance"], "dimensions": ["team"],
                   "time": {"grain": "year", "from": from, "to": to},
                   "filters": [{"dimension": "classification", "op": "in",
                                "values": ["substandard", "doubtful", "loss", "normal"]}],
                   "compare": ["same_period_last_year"]}),
            loans.clone(),
        ),
        (
            json!({"metrics": ["overdue_ratio", "aum"], "time": {"from": mid_from, "to": mid_to}}),
            both.clone(),
        ),
        (
            json!({"metrics": ["overdue_ratio", "loan_balance"],
                   "time": {"grain": "month", "from": from, "to": to},
                   "drill": {"hierarchy": "org", "path": {"region": region}}}),
            loans.clone(),
        ),
        (
            // customer_count is a distinct count: a customer has one RM, segment, tier and status
            // at a month end, so its rollup sums groups exactly.
            json!({"metrics": ["aum", "customer_count", "overdue_ratio"], "dimensions": ["region"],
                   "time": {"grain": "month", "from": from, "to": to}}),
            both.clone(),
        ),
        (
            json!({"metrics": ["aum_per_customer", "customer_count"], "dimensions": ["tier"],
                   "time": {"grain": "quarter", "from": mid_from, "to": mid_to},
                   "filters": [{"dimension": "status", "op": "eq", "value": "active"}],
                   "compare": ["previous_period", "same_period_last_year"]}),
            vec!["customer_month_by_rm"],
        ),
        (
            json!({"metrics": ["products_per_customer"], "dimensions": ["branch"],
                   "time": {"grain": "month", "from": from, "to": to}}),
            vec!["customer_products_by_rm"],
        ),
        // Churn: consecutive month, quarter and year ends are held; other pairs read the model.
        (
            json!({"metrics": ["customer_churn_rate", "customers_churned", "customers_returned",
                               "customers_active_at_start"], "dimensions": ["segment"],
                   "time": {"grain": "month", "from": from, "to": to}}),
            churn.clone(),
        ),
        (
            json!({"metrics": ["customer_churn_rate", "customers_churned"], "dimensions": ["branch"],
                   "time": {"grain": "quarter", "from": mid_from, "to": to},
                   "filters": [{"dimension": "tier", "op": "in", "values": ["mass", "affluent"]}],
                   "compare": ["previous_period"]}),
            churn.clone(),
        ),
        (
            // The dashboards' KPI tile: one month, no grain, against the month before.
            json!({"metrics": ["customer_churn_rate", "customers_returned"],
                   "time": {"from": month_from, "to": month_to}, "compare": ["previous_period"]}),
            churn.clone(),
        ),
        (
            json!({"metrics": ["customers_churned", "customer_churn_rate", "customer_count", "aum"],
                   "time": {"grain": "month", "from": from, "to": to},
                   "drill": {"hierarchy": "org", "path": {"region": region}}}),
            vec!["customer_churn_by_rm", "customer_month_by_rm"],
        ),
        (
            // Mid-month bounds pair the end of January with the end of April: not held.
            json!({"metrics": ["customer_churn_rate"], "dimensions": ["region"],
                   "time": {"from": mid_from, "to": mid_to}}),
            vec![],
        ),
        // Event tables kept by local day: periods and ranges in the calendar's zone.
        (
            json!({"metrics": ["tickets", "sla_breach_rate", "first_response_hours"],
                   "dimensions": ["channel"],
                   "time": {"grain": "day", "from": from, "to": mid_to},
                   "compare": ["previous_period"]}),
            vec!["tickets_by_rm"],
        ),
        (
            json!({"metrics": ["first_response_hours", "tickets"], "dimensions": ["branch"],
                   "time": {"grain": "week", "from": from, "to": mid_to}}),
            vec!["tickets_by_rm"],
        ),
        (
            json!({"metrics": ["won_opportunities", "disbursed_amount", "loans_disbursed", "new_customers"],
                   "dimensions": ["region"],
                   "time": {"grain": "month", "from": from, "to": to},
                   "compare": ["same_period_last_year"]}),
            vec![
                "loans_by_rm",
                "new_customers_by_rm",
                "won_opportunities_by_rm",
            ],
        ),
        // Cohorts: sizes and active counts add up over dimensions that are the customer's.
        (
            json!({"metrics": ["customer_retention"], "time": {"from": from, "to": to}}),
            vec!["customer_retention_by_branch"],
        ),
        (
            json!({"metrics": ["customer_retention"], "dimensions": ["region"],
                   "time": {"from": mid_from, "to": to},
                   "filters": [{"dimension": "segment", "op": "eq", "value": "retail"}]}),
            vec!["customer_retention_by_branch"],
        ),
        (
            json!({"metrics": ["customer_retention"], "dimensions": ["tier"],
                   "time": {"from": from, "to": to}}),
            vec![],
        ),
        // Funnels: every entity with its steps; a range cuts leads, not later steps.
        (
            json!({"metrics": ["credit_funnel"], "dimensions": ["product"],
                   "time": {"from": from, "to": to}}),
            funnel.clone(),
        ),
        (
            json!({"metrics": ["credit_funnel"], "dimensions": ["region"],
                   "time": {"grain": "month", "from": from, "to": mid_to},
                   "filters": [{"dimension": "segment", "op": "in", "values": ["retail", "sme"]}]}),
            funnel.clone(),
        ),
        (
            json!({"metrics": ["credit_funnel"], "dimensions": ["stage"],
                   "time": {"from": from, "to": to}}),
            vec![],
        ),
        (
            // No rollup holds the customer: the model answers (without totals, which a rollup
            // could answer).
            json!({"metrics": ["loan_balance"], "dimensions": ["customer"], "totals": false,
                   "time": {"grain": "quarter", "from": from, "to": to}}),
            vec![],
        ),
    ]
}

fn first_region(r: &QueryResponse) -> Value {
    r.result.rows[0][r.result.column("region").unwrap()].clone()
}

#[tokio::test]
async fn rollups_give_the_models_numbers_on_the_hand_checked_bank() {
    let (_data, settings) = bank_settings().await;
    let service = KpiService::open(&settings).await.unwrap();
    let local = Principal::local();
    let regions = ask(
        &service,
        &local,
        &json!({"metrics": ["loan_balance"], "dimensions": ["region"], "time": {"from": "2024-01-01", "to": "2024-12-31"}}),
    )
    .await;
    let region = first_region(&regions);
    for (q, expected) in questions(
        ("2024-01-01", "2024-12-31"),
        ("2024-02-15", "2024-05-10"),
        ("2024-03-01", "2024-03-31"),
        &region,
    ) {
        same_both_ways(&service, &local, q, &expected, 1e-12).await;
    }
}

#[tokio::test]
async fn rollups_give_the_models_numbers_on_the_demo_bank_for_every_scope() {
    let (_data, settings) = demo_settings();
    let service = KpiService::open(&settings).await.unwrap();
    let catalog = service.state();
    assert!(catalog.catalog().rollups.values().all(|r| r.rows > 0));
    assert_eq!(
        catalog
            .catalog()
            .rollups
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "credit_funnel_by_opportunity",
            "customer_churn_by_rm",
            "customer_month_by_rm",
            "customer_products_by_rm",
            "customer_retention_by_branch",
            "loan_month_by_rm",
            "loans_by_rm",
            "new_customers_by_rm",
            "tickets_by_rm",
            "won_opportunities_by_rm",
        ])
    );
    assert!(
        catalog.catalog().rollups_not_built.is_empty(),
        "{:?}",
        catalog.catalog().rollups_not_built
    );
    let local = Principal::local();
    let regions = ask(
        &service,
        &local,
        &json!({"metrics": ["loan_balance"], "dimensions": ["region", "branch"], "time": {"from": "2025-12-01", "to": "2025-12-31"}}),
    )
    .await;
    let region = first_region(&regions);
    let branch = regions.result.rows[0][regions.result.column("branch").unwrap()].clone();
    let branch_head = Principal {
        name: "branch head".into(),
        role: "branch_head".into(),
        scope: Scope(BTreeMap::from([(
            "branch".to_string(),
            ScopeMember::Text(branch.as_str().unwrap().to_string()),
        )])),
        personal_data: false,
    };
    for who in [&local, &branch_head] {
        for (q, expected) in questions(
            ("2024-01-01", "2025-12-31"),
            ("2025-03-15", "2025-06-10"),
            ("2025-12-01", "2025-12-31"),
            &region,
        ) {
            same_both_ways(&service, who, q, &expected, 1e-9).await;
        }
    }
}

/// Every re-aggregatable kind (sums with and without `where`, first and last snapshots, counts,
/// min, max, averages as sum over count, distinct counts) on the golden fixture, where each
/// number is small enough to check by hand.
#[tokio::test]
async fn every_reaggregation_matches_the_model_on_the_golden_fixture() {
    let project = super::temp_project(&[(
        "metrics/rollups.yaml",
        "rollups:\n  loans_by_team:\n    model: loan_month\n    dimensions: [region, branch, team, segment]\n    \
         measures: [loan_balance, opening_loan_balance, overdue_balance, loan_rows, max_dpd, min_balance, balance_flow, avg_balance, loans_seen]\n  \
         customers_by_team:\n    model: customer_month\n    dimensions: [region, branch, team, status]\n    \
         measures: [aum, active_customers]\n",
    )]);
    let service = KpiService::open(&super::settings_for(project.path()))
        .await
        .unwrap();
    // A loan is in every month's rows: summing the months' distinct counts would count it again
    // in each, so the build refuses that measure, says why, and keeps the rest.
    let state = service.state();
    let refused = &state.catalog().rollups_not_built;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].key, "rollups.loans_by_team.measures[8]");
    assert!(
        refused[0].reason.contains(
            "'loans_seen' is a distinct count and some of its entities are counted more than once"
        ),
        "{}",
        refused[0].reason
    );
    let local = Principal::local();
    let all = [
        "loan_balance",
        "opening_loan_balance",
        "overdue_ratio",
        "loan_rows",
        "max_dpd",
        "min_balance",
        "balance_flow",
        "performing_share",
        "avg_balance",
    ];
    for grain in ["day", "month", "quarter", "year"] {
        for dims in [json!([]), json!(["region"]), json!(["team", "segment"])] {
            let q = json!({"metrics": all, "dimensions": dims,
                           "time": {"grain": grain, "from": "2024-01-01", "to": "2024-06-30"},
                           "compare": ["previous_period"]});
            same_both_ways(&service, &local, q, &["loans_by_team"], 1e-12).await;
            let q = json!({"metrics": ["customer_count", "aum_per_customer"], "dimensions": dims.as_array().unwrap().iter().filter(|d| *d != "segment").collect::<Vec<_>>(),
                           "time": {"grain": grain, "from": "2024-01-01", "to": "2024-06-30"},
                           "compare": ["previous_period"]});
            same_both_ways(&service, &local, q, &["customers_by_team"], 0.0).await;
        }
    }
    // A group is one model's measures under one snapshot rule: the balance (last snapshot) reads
    // the rollup while the refused distinct count (no snapshot) reads the model...
    let q = json!({"metrics": ["loan_balance", "loans_seen"], "dimensions": ["region"],
                   "time": {"grain": "month", "from": "2024-01-01", "to": "2024-06-30"}});
    same_both_ways(&service, &local, q, &["loans_by_team"], 0.0).await;
    // ...and a group with one measure the rollup lacks reads the model for all of them.
    let q = json!({"metrics": ["loan_rows", "loans_seen"], "dimensions": ["region"],
                   "time": {"grain": "month", "from": "2024-01-01", "to": "2024-06-30"}});
    same_both_ways(&service, &local, q, &[], 0.0).await;
}

#[tokio::test]
async fn broken_rollups_name_file_and_key() {
    let errors = load_errors(&[
        (
            "metrics/churn.yaml",
            "metrics:\n  churn_rate:\n    type: churn\n    model: customer_month\n    entity: customer_id\n    \
             active_when: \"status = 'active'\"\n",
        ),
        (
        "metrics/rollups.yaml",
        "rollups:\n  r1:\n    model: nowhere\n    dimensions: [region]\n    measures: [loan_rows]\n  \
         r2:\n    model: loan_month\n    dimensions: [region, colour, region]\n    measures: []\n  \
         r3:\n    model: loan_month\n    dimensions: []\n    measures: [aum, nothing]\n  \
         r4:\n    model: customer_month\n    dimensions: [region]\n    churn: aum\n  \
         r5:\n    model: loan_month\n    dimensions: [region]\n    churn: churn_rate\n  \
         r6:\n    model: customer_month\n    dimensions: [region]\n    measures: [aum]\n    funnel: nowhere\n    grains: [month]\n  \
         r7:\n    model: customer_month\n    dimensions: [region]\n",
        ),
    ])
    .await;
    assert_has(
        &errors,
        "metrics/rollups.yaml",
        "rollups.r1.model",
        "unknown model 'nowhere'",
    );
    assert_has(
        &errors,
        "metrics/rollups.yaml",
        "rollups.r2.dimensions[1]",
        "'colour' is not a dimension of model 'loan_month'",
    );
    assert_has(
        &errors,
        "metrics/rollups.yaml",
        "rollups.r2.dimensions[2]",
        "listed twice",
    );
    let file = "metrics/rollups.yaml";
    assert_has(&errors, file, "rollups.r2", "at least one measure");
    assert_has(
        &errors,
        file,
        "rollups.r3.measures[0]",
        "aggregates model 'customer_month'",
    );
    assert_has(
        &errors,
        file,
        "rollups.r3.measures[1]",
        "unknown measure 'nothing'",
    );
    assert_has(
        &errors,
        file,
        "rollups.r4.churn",
        "'aum' is a simple metric, not a churn metric",
    );
    assert_has(
        &errors,
        file,
        "rollups.r5.churn",
        "'churn_rate' counts model 'customer_month', not 'loan_month'",
    );
    assert_has(
        &errors,
        file,
        "rollups.r6",
        "a rollup holds measures, a churn, a funnel or a cohort metric",
    );
    assert_has(
        &errors,
        file,
        "rollups.r6.grains",
        "grains apply to churn rollups only",
    );
    assert_has(&errors, file, "rollups.r7", "at least one measure");
}

/// Filter options and drill members read from measure rollups (one group per combination of
/// their dimensions present in the model) are the models' members, for head office and a branch.
#[tokio::test]
async fn member_lists_from_rollups_are_the_models_members() {
    let (data, settings) = demo_settings();
    let with = KpiService::open(&settings).await.unwrap();
    let bare = tempfile::tempdir().unwrap();
    for dir in ["metrics", "sql", "dashboards"] {
        super::copy_dir(&super::repo_dir().join(dir), &bare.path().join(dir));
    }
    std::fs::write(bare.path().join("metrics/rollups.yaml"), "rollups: {}\n").unwrap();
    let without = KpiService::open(&kpilens::config::Settings {
        project_dir: bare.path().to_path_buf(),
        data_dir: data.path().to_path_buf(),
        ..settings.clone()
    })
    .await
    .unwrap();
    assert!(without.state().catalog().rollups.is_empty());
    let local = Principal::local();
    let none = BTreeMap::new();
    for id in ["executive", "retail", "risk", "service", "corporate_credit"] {
        let a = kpilens::dashboard::render(&with, &local, id, &none)
            .await
            .unwrap();
        let b = kpilens::dashboard::render(&without, &local, id, &none)
            .await
            .unwrap();
        assert_eq!(json!(a.filters), json!(b.filters), "{id} filters");
        assert!(a.filters.iter().all(|f| !f.options.is_empty()), "{id}");
    }
    let mut path = BTreeMap::new();
    for level in ["region", "branch", "team", "rm", "customer"] {
        let a = with.members(&local, "org", level, &path).await.unwrap();
        let b = without.members(&local, "org", level, &path).await.unwrap();
        assert_eq!(
            a.members, b.members,
            "org members at {level} under {path:?}"
        );
        let first = a.members[0].to_string().trim_matches('"').to_string();
        path.insert(level.to_string(), first);
    }
}

/// How each rollup of a service came to be current: name -> (how, dates it recomputed).
fn refreshes(service: &KpiService) -> BTreeMap<String, (&'static str, Vec<String>)> {
    service
        .state()
        .catalog()
        .rollups
        .values()
        .map(|r| {
            let dates = r
                .refresh
                .dates
                .iter()
                .map(|(f, t)| format!("{f}..{t}"))
                .collect();
            (r.name.clone(), (r.refresh.how, dates))
        })
        .collect()
}

/// Every rollup named in `expected` came to be current as said; every other one was loaded.
fn assert_refreshed(service: &KpiService, expected: &[(&str, &str, &[&str])], step: &str) {
    let all = refreshes(service);
    for (name, (how, dates)) in &all {
        let want = expected.iter().find(|(n, _, _)| n == name);
        let (want_how, want_dates) = want
            .map(|(_, h, d)| (*h, d.to_vec()))
            .unwrap_or(("loaded", vec![]));
        assert_eq!(
            (*how, dates.iter().map(String::as_str).collect::<Vec<_>>()),
            (want_how, want_dates),
            "{step}: rollup {name} ({:?})",
            service.state().catalog().rollups[name].refresh.reason
        );
    }
}

/// Asks every question of `questions` over the range with and without rollups.
async fn answers_agree(service: &KpiService, (from, to): (&str, &str), mid: (&str, &str)) {
    let local = Principal::local();
    let regions = ask(
        service,
        &local,
        &json!({"metrics": ["loan_balance"], "dimensions": ["region"], "time": {"from": from, "to": to}}),
    )
    .await;
    let region = first_region(&regions);
    for (q, expected) in questions((from, to), mid, (mid.0, mid.0), &region) {
        same_both_ways(service, &local, q, &expected, 1e-9).await;
    }
}

/// Rewrites a Parquet file with some columns replaced by SQL expressions over its rows (`[]`:
/// the same rows written again): a corrected month, a customer moved to another RM.
async fn rewrite_parquet(path: &std::path::Path, replace: &[(&str, &str)]) {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
    // Strings as the file has them (Utf8), not as views: every file of a table has one schema.
    let ctx = SessionContext::new_with_config(SessionConfig::new().set_bool(
        "datafusion.execution.parquet.schema_force_view_types",
        false,
    ));
    ctx.register_parquet("t", path.to_string_lossy(), ParquetReadOptions::default())
        .await
        .unwrap();
    let df = ctx.table("t").await.unwrap();
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| match replace.iter().find(|(c, _)| c == f.name()) {
            Some((c, e)) => format!("{e} AS \"{c}\""),
            None => format!("\"{}\"", f.name()),
        })
        .collect();
    let batches = ctx
        .sql(&format!("SELECT {} FROM t", columns.join(", ")))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batches[0].schema(),
        None,
    )
    .unwrap();
    for b in &batches {
        writer.write(b).unwrap();
    }
    writer.close().unwrap();
}

/// The demo bank with rollups and materialized models stored in a folder of their own (the data,
/// the store, the settings).
fn demo_settings_with_store() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    kpilens::config::Settings,
) {
    let (data, mut settings) = demo_settings();
    let store = tempfile::tempdir().unwrap();
    settings.rollup_store = Some(store.path().to_path_buf());
    settings.no_rollup_store = false;
    (data, store, settings)
}

/// Stored rollups: a start with nothing stored builds them all; the next loads them; a new
/// month's files update only that month where the model's rows are tied to their files' dates
/// (and rebuild funnels and cohorts); a corrected old month updates that month; a change to a
/// table not tied to dates (the customer master) rebuilds what reads it; an edit to one rollup's
/// definition rebuilds that one only. After each step the answers are the models'.
#[tokio::test]
async fn stored_rollups_load_update_and_rebuild_as_their_inputs_change() {
    let (data, _store, mut settings) = demo_settings_with_store();
    let held = tempfile::tempdir().unwrap();
    let last_month = |table: &str| data.path().join(table).join("2025-12-00000.parquet");
    for table in ["loan_month", "customer_month"] {
        std::fs::rename(last_month(table), held.path().join(table)).unwrap();
    }
    let every: Vec<String> = refreshes(&KpiService::open(&settings).await.unwrap())
        .into_iter()
        .map(|(name, (how, _))| {
            assert_eq!(how, "built", "{name} with an empty store");
            name
        })
        .collect();
    assert_eq!(every.len(), 10);

    let loaded = KpiService::open(&settings).await.unwrap();
    assert_refreshed(&loaded, &[], "a second start");
    answers_agree(
        &loaded,
        ("2024-01-01", "2025-11-30"),
        ("2025-03-15", "2025-06-10"),
    )
    .await;

    for table in ["loan_month", "customer_month"] {
        std::fs::rename(held.path().join(table), last_month(table)).unwrap();
    }
    let december: &[&str] = &["2025-12-31..2025-12-31"];
    let appended = KpiService::open(&settings).await.unwrap();
    assert_refreshed(
        &appended,
        &[
            ("customer_churn_by_rm", "updated", december),
            ("customer_month_by_rm", "updated", december),
            ("customer_products_by_rm", "updated", december),
            ("loan_month_by_rm", "updated", december),
            ("customer_retention_by_branch", "built", &[]),
        ],
        "a month appended",
    );
    answers_agree(
        &appended,
        ("2024-01-01", "2025-12-31"),
        ("2025-11-15", "2025-12-31"),
    )
    .await;

    rewrite_parquet(
        &data.path().join("loan_month/2024-06-00000.parquet"),
        &[("balance", "balance * 1.5")],
    )
    .await;
    let june: &[&str] = &["2024-06-30..2024-06-30"];
    let corrected = KpiService::open(&settings).await.unwrap();
    assert_refreshed(
        &corrected,
        &[
            ("customer_products_by_rm", "updated", june),
            ("loan_month_by_rm", "updated", june),
        ],
        "an old month corrected",
    );
    answers_agree(
        &corrected,
        ("2024-01-01", "2025-12-31"),
        ("2024-05-15", "2024-07-10"),
    )
    .await;

    // The same customers, written again: where the master is joined in for the org, any date
    // may change, so what reads it is built again; new customers are counted by the master's
    // own opening dates, so that rollup is updated over them.
    let customers = data.path().join("customers/part-00000.parquet");
    rewrite_parquet(&customers, &[]).await;
    let master = KpiService::open(&settings).await.unwrap();
    for (name, (how, dates)) in refreshes(&master) {
        let state = master.state();
        let rollup = &state.catalog().rollups[&name];
        let reads = state.catalog().models[&rollup.base]
            .reads
            .contains("customers");
        let expected = match name.as_str() {
            "new_customers_by_rm" => "updated",
            _ if reads => "built",
            _ => "loaded",
        };
        assert_eq!(how, expected, "{name}: {:?}", rollup.refresh.reason);
        if how == "updated" {
            assert_eq!(dates.len(), 1, "{name}: the master's opening dates");
        }
    }
    answers_agree(
        &master,
        ("2024-01-01", "2025-12-31"),
        ("2025-03-15", "2025-06-10"),
    )
    .await;

    // One rollup's definition edited (a measure less), another's description: only the first
    // is built again.
    let project = tempfile::tempdir().unwrap();
    for dir in ["metrics", "sql", "dashboards"] {
        super::copy_dir(&super::repo_dir().join(dir), &project.path().join(dir));
    }
    let rollups = std::fs::read_to_string(project.path().join("metrics/rollups.yaml")).unwrap();
    let edited = rollups
        .replacen("description:", "description: (edited)", 1)
        .replace(
            "measures: [tickets, sla_breaches, first_response_hours]",
            "measures: [tickets, sla_breaches]",
        );
    // And one that cannot be built: a customer's status changes between months.
    let edited = format!(
        "{edited}\n  retention_by_status:\n    model: customer_month\n    cohort: customer_retention\n    dimensions: [status]\n"
    );
    std::fs::write(project.path().join("metrics/rollups.yaml"), edited).unwrap();
    settings.project_dir = project.path().to_path_buf();
    let edited = KpiService::open(&settings).await.unwrap();
    assert_refreshed(
        &edited,
        &[("tickets_by_rm", "built", &[])],
        "definitions edited",
    );
    assert_eq!(
        edited.state().catalog().rollups["tickets_by_rm"]
            .refresh
            .reason
            .as_deref(),
        Some("its definition, or a definition or SQL model it reads, changed")
    );
    let failure = |service: &KpiService| {
        let catalog = service.state();
        let failed: Vec<_> = catalog.catalog().rollups_not_built.iter().collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].key, "rollups.retention_by_status");
        failed[0].reason.clone()
    };
    assert!(failure(&edited).contains("the dimensions change between an entity's rows"));
    // Not tried again over the same data and definitions, and says so.
    let again = KpiService::open(&settings).await.unwrap();
    assert_refreshed(&again, &[], "a start after a failed build");
    let reason = failure(&again);
    assert!(
        reason.contains("the dimensions change") && reason.contains("at its last build"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_rollup_refused_for_memory_in_an_earlier_run_is_retried_once_the_server_listens() {
    let (_data, store, mut settings) = demo_settings_with_store();
    drop(KpiService::open(&settings).await.unwrap());
    // As an earlier run under this pool records a build the pool refused.
    let name = "loan_month_by_rm";
    let manifest_path = store.path().join(name).join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    manifest["failed"] = json!({ "reason": "building the rollup failed: resources exhausted",
        "memory_mb": settings.memory_mb, "out_of_memory": true, "process": 1 });
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();

    // A server does not spend its start on it: it starts without it, saying when it is retried.
    let service = KpiService::open_for_serving(&settings).await.unwrap();
    let catalog = service.state();
    assert!(!catalog.catalog().rollups.contains_key(name));
    let deferred = catalog
        .catalog()
        .rollups_not_built
        .iter()
        .find(|e| e.reason.contains("background"))
        .expect("the deferral is reported");
    assert!(
        deferred.key.contains(name) || deferred.reason.contains("earlier run"),
        "{deferred:?}"
    );
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["region"],
        "time": { "grain": "month", "from": "2025-01-01", "to": "2025-06-30" } });
    let before = super::run(&service, q.clone()).await;
    assert!(!before.meta.notes.rollups.contains(name));

    // Once it listens, it builds it; answers now come from it, with the models' numbers.
    service.build_pending_rollups().await;
    let catalog = service.state();
    assert_eq!(catalog.catalog().rollups[name].refresh.how, "built");
    assert!(
        catalog.catalog().rollups_not_built.is_empty(),
        "{:?}",
        catalog.catalog().rollups_not_built
    );
    let q = json!({ "metrics": ["loan_balance"], "dimensions": ["branch"],
        "time": { "grain": "month", "from": "2025-01-01", "to": "2025-06-30" } });
    let after = super::run(&service, q.clone()).await;
    assert!(after.meta.notes.rollups.contains(name));
    let mut from_models = q;
    from_models["rollups"] = json!(false);
    let from_models = super::run(&service, from_models).await;
    assert!(super::close(
        &json!(after.result.rows),
        &json!(from_models.result.rows),
        1e-9
    ));
    // A command that is not a server (validate, query) retries it at once, as before.
    drop(service);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let cli = KpiService::open(&settings).await.unwrap();
    assert_eq!(cli.state().catalog().rollups[name].refresh.how, "built");
    drop(cli);
    // Settings the rows do not depend on leave every stored rollup as it is.
    settings.max_year = 2100;
    settings.max_concurrent = 2;
    assert_refreshed(
        &KpiService::open(&settings).await.unwrap(),
        &[],
        "other limits",
    );
}

/// Every question of `questions`, with and without rollups, answered alike by both services.
async fn same_answers(a: &KpiService, b: &KpiService) {
    let local = Principal::local();
    let regions = ask(
        a,
        &local,
        &json!({"metrics": ["loan_balance"], "dimensions": ["region"], "time": {"from": "2024-01-01", "to": "2025-12-31"}}),
    )
    .await;
    let region = first_region(&regions);
    let asked = questions(
        ("2024-01-01", "2025-12-31"),
        ("2025-03-15", "2025-06-10"),
        ("2025-03-15", "2025-03-15"),
        &region,
    );
    for (q, _) in asked {
        for rollups in [true, false] {
            let mut q = q.clone();
            q["rollups"] = json!(rollups);
            let (x, y) = (ask(a, &local, &q).await, ask(b, &local, &q).await);
            for (part, x, y) in [
                ("rows", json!(x.result.rows), json!(y.result.rows)),
                ("totals", json!(x.result.totals), json!(y.result.totals)),
                ("drill", json!(x.result.drill), json!(y.result.drill)),
            ] {
                assert!(close(&x, &y, 1e-9), "{q} {part}\nstored {x}\ninline {y}");
            }
        }
    }
}

/// The RM customer 1 is counted at in December 2025.
async fn rm_of_customer_1(service: &KpiService) -> Value {
    let r = ask(
        service,
        &Principal::local(),
        &json!({"metrics": ["customer_count"], "dimensions": ["rm"],
                "filters": [{"dimension": "customer", "op": "eq", "value": 1}],
                "time": {"from": "2025-12-01", "to": "2025-12-31"}, "rollups": false}),
    )
    .await;
    assert_eq!(r.result.rows.len(), 1, "{:?}", r.result.rows);
    r.result.rows[0][r.result.column("rm").unwrap()].clone()
}

/// The customer view is materialized (`materialize` in metrics/models.yaml): stored once per
/// data version. A service reading it from its stored rows answers every
/// question as one computing the view in each query (no store), with and without rollups; the
/// next start loads the stored rows; a customer moved to another RM in the master is counted at
/// the new RM after the change, with the view stored again and the copy before kept.
#[tokio::test]
async fn a_materialized_model_answers_as_its_view_and_follows_the_data() {
    let (data, store, settings) = demo_settings_with_store();
    let inline_settings = kpilens::config::Settings {
        no_rollup_store: true,
        ..settings.clone()
    };
    let status = |service: &KpiService| -> Vec<(String, &'static str, usize)> {
        service
            .state()
            .catalog()
            .materialized
            .iter()
            .map(|m| (m.view.clone(), m.how, m.rows))
            .collect()
    };
    let stored_files = || -> usize {
        std::fs::read_dir(store.path().join("_models/customer_view"))
            .unwrap()
            .count()
    };
    let stored = KpiService::open(&settings).await.unwrap();
    let customers = stored.state().catalog().materialized[0].rows;
    assert_eq!(
        status(&stored),
        [("customer_view".to_string(), "built", customers)]
    );
    assert!(customers > 1000, "{customers} customers");
    let inline = KpiService::open(&inline_settings).await.unwrap();
    let state = inline.state();
    let why = &state.catalog().materialized[0];
    assert_eq!((why.how, why.rows), ("inline", 0));
    assert!(
        why.reason.as_ref().unwrap().contains("no rollup store"),
        "{why:?}"
    );

    same_answers(&stored, &inline).await;

    let again = KpiService::open(&settings).await.unwrap();
    assert_eq!(
        status(&again),
        [("customer_view".to_string(), "loaded", customers)]
    );
    assert_eq!(stored_files(), 1);

    // Customer 1 moves to another RM.
    let before = rm_of_customer_1(&again).await;
    let books = ask(
        &again,
        &Principal::local(),
        &json!({"metrics": ["customer_count"], "dimensions": ["rm"], "time": {"from": "2025-12-01", "to": "2025-12-31"}}),
    )
    .await;
    let target = books
        .result
        .rows
        .iter()
        .map(|r| r[books.result.column("rm").unwrap()].clone())
        .find(|rm| *rm != before)
        .unwrap();
    let target_rm = target.as_str().unwrap();
    rewrite_parquet(
        &data.path().join("customers/part-00000.parquet"),
        &[(
            "rm_id",
            &format!("CASE WHEN customer_id = 1 THEN '{target_rm}' ELSE rm_id END"),
        )],
    )
    .await;
    let moved = KpiService::open(&settings).await.unwrap();
    assert_eq!(
        status(&moved),
        [("customer_view".to_string(), "built", customers)]
    );
    assert_eq!(
        stored_files(),
        2,
        "the copy before is kept for requests still reading it"
    );
    assert_eq!(rm_of_customer_1(&moved).await, target);
    let inline = KpiService::open(&inline_settings).await.unwrap();
    same_answers(&moved, &inline).await;
}

/// A rollup build past its time budget is cancelled: reported as not built with the budget in
/// its reason, its memory back in the pool, its queries answered from the models. The next
/// start (a larger budget) builds it.
#[tokio::test]
async fn a_rollup_build_past_its_budget_is_cancelled_and_its_queries_read_the_models() {
    let (_data, _store, mut settings) = demo_settings_with_store();
    // No build of a rollup over the demo bank plans, runs and stores in a millisecond.
    settings.rollup_build_timeout_ms = 1;
    let service = KpiService::open(&settings).await.unwrap();
    let catalog = service.state();
    assert!(
        catalog.catalog().rollups.is_empty(),
        "{:?}",
        catalog.catalog().rollups.keys()
    );
    assert!(!catalog.catalog().rollups_not_built.is_empty());
    for e in &catalog.catalog().rollups_not_built {
        assert!(
            e.reason.contains("past its budget of 1 ms") && e.key.starts_with("rollups."),
            "{e:?}"
        );
    }
    // The cancelled builds' memory: back once their aborted tasks are dropped (by the engine's
    // low-priority threads, beside the other tests).
    let cancelled = std::time::Instant::now();
    while service.engine_memory() > 0 {
        assert!(
            cancelled.elapsed() < std::time::Duration::from_secs(10),
            "{} bytes held 10 s after the builds were cancelled",
            service.engine_memory()
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let q = json!({ "metrics": ["loan_balance", "overdue_ratio"], "dimensions": ["region"],
        "time": { "grain": "month", "from": "2025-01-01", "to": "2025-06-30" } });
    let from_models = ask(&service, &Principal::local(), &q).await;
    assert!(used(&from_models).is_empty());
    drop(service);

    settings.rollup_build_timeout_ms = 300_000;
    let service = KpiService::open(&settings).await.unwrap();
    assert!(service.state().catalog().rollups_not_built.is_empty());
    let from_rollup = ask(&service, &Principal::local(), &q).await;
    assert!(!used(&from_rollup).is_empty());
    assert!(close(
        &json!(from_rollup.result.rows),
        &json!(from_models.result.rows),
        1e-9
    ));
}

//! Broken definitions: every error names the file, the key and the reason.

use std::process::Command;

use kpilens::catalog::CatalogError;
use kpilens::service::KpiService;

use super::{settings_for, temp_project};

/// The errors of opening a project the way `kpilens validate` and `serve` do.
pub async fn load_errors(changes: &[(&str, &str)]) -> Vec<CatalogError> {
    let project = temp_project(changes);
    match KpiService::open(&settings_for(project.path())).await {
        Ok(_) => panic!("expected the project to fail validation"),
        Err(e) => e.0,
    }
}

#[track_caller]
pub fn assert_has(errors: &[CatalogError], file: &str, key: &str, reason_part: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.file == file && e.key == key && e.reason.contains(reason_part)),
        "no error {file}: {key}: …{reason_part}… in {errors:#?}"
    );
}

#[tokio::test]
async fn yaml_syntax_error_names_file_and_line() {
    let errors = load_errors(&[("metrics/broken.yaml", "metrics:\n  x: { type: simple\n")]).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "metrics/broken.yaml");
    assert!(errors[0].reason.contains("line"), "{:?}", errors[0]);
}

#[tokio::test]
async fn unknown_key_and_bad_enum_name_the_key_path() {
    let errors = load_errors(&[(
        "metrics/typo.yaml",
        "metrics:\n  typo_metric:\n    type: simple\n    measrue: loan_balance\n",
    )])
    .await;
    assert_eq!(errors[0].file, "metrics/typo.yaml");
    assert_eq!(errors[0].key, "metrics.typo_metric.measrue");
    assert!(errors[0].reason.contains("measrue"), "{:?}", errors[0]);

    let errors = load_errors(&[("metrics/kind.yaml", "metrics:\n  k:\n    type: median\n")]).await;
    assert_eq!(errors[0].key, "metrics.k.type");
}

#[tokio::test]
async fn dangling_references_and_unknown_columns() {
    let errors = load_errors(&[(
        "metrics/refs.yaml",
        r#"
measures:
  bad_column: { model: loan_month, agg: sum, expr: balanse }
  bad_model: { model: loan_months, agg: count }
  bad_where: { model: loan_month, agg: sum, expr: balance, where: "dpd + 1" }
  sum_of_text: { model: customer_month, agg: sum, expr: status }
metrics:
  bad_ratio: { type: ratio, numerator: nope, denominator: loan_balance }
  missing_field: { type: ratio, numerator: loan_balance }
  wrong_field: { type: simple, measure: loan_balance, expr: "1" }
  bad_derived: { type: derived, expr: "aum / nobody" }
"#,
    )])
    .await;
    let f = "metrics/refs.yaml";
    assert_has(&errors, f, "measures.bad_column.expr", "balanse");
    assert_has(
        &errors,
        f,
        "measures.bad_model.model",
        "unknown model 'loan_months'",
    );
    assert_has(&errors, f, "measures.bad_where.where", "not a boolean");
    assert_has(&errors, f, "measures.sum_of_text.expr", "needs a number");
    // Measure errors stop validation before metrics; fix them and the metric errors show.
    let errors = load_errors(&[(
        "metrics/refs.yaml",
        r#"
metrics:
  bad_ratio: { type: ratio, numerator: nope, denominator: loan_balance }
  missing_field: { type: ratio, numerator: loan_balance }
  wrong_field: { type: simple, measure: loan_balance, expr: "1" }
  bad_derived: { type: derived, expr: "aum / nobody" }
"#,
    )])
    .await;
    assert_has(
        &errors,
        f,
        "metrics.bad_ratio.numerator",
        "unknown measure 'nope'",
    );
    assert_has(
        &errors,
        f,
        "metrics.missing_field.denominator",
        "required for type 'ratio'",
    );
    assert_has(
        &errors,
        f,
        "metrics.wrong_field.expr",
        "not a field of type 'simple'",
    );
    assert_has(&errors, f, "metrics.bad_derived.expr", "nobody");
}

#[tokio::test]
async fn duplicates_across_files_and_cycles() {
    let errors = load_errors(&[(
        "metrics/zz_dup.yaml",
        "metrics:\n  aum: { type: simple, measure: aum }\n",
    )])
    .await;
    assert_has(
        &errors,
        "metrics/zz_dup.yaml",
        "metrics.aum",
        "already declared in metrics/fixture.yaml",
    );

    let errors = load_errors(&[(
        "metrics/cycle.yaml",
        "metrics:\n  a_metric: { type: derived, expr: b_metric + 1 }\n  b_metric: { type: derived, expr: a_metric * 2 }\n",
    )])
    .await;
    assert!(
        errors
            .iter()
            .any(|e| e.reason.contains("cycle") && e.reason.contains("a_metric")),
        "{errors:#?}"
    );

    let errors = load_errors(&[
        ("sql/loop_a.sql", "SELECT * FROM loop_b"),
        ("sql/loop_b.sql", "SELECT * FROM loop_a"),
    ])
    .await;
    assert!(
        errors
            .iter()
            .any(|e| e.file == "sql/loop_a.sql" && e.reason.contains("cycle")),
        "{errors:#?}"
    );
}

#[tokio::test]
async fn model_level_checks_against_real_schemas() {
    let errors = load_errors(&[(
        "metrics/models2.yaml",
        r#"
models:
  bad_time:
    source: { csv: org.csv }
    time: team
  missing_file:
    source: { parquet: nowhere }
  bad_join:
    source: { csv: customer_month.csv }
    joins:
      owner: { model: customer_month, on: customer_id }
    dimensions:
      owner_status: { via: owner.status }
      both: { column: status, via: owner.status }
      ghost: { via: nojoin.region }
"#,
    )])
    .await;
    let f = "metrics/models2.yaml";
    assert_has(&errors, f, "models.missing_file.source", "nowhere");
    // Later phases report once the file sources exist; fix and look again.
    let errors = load_errors(&[(
        "metrics/models2.yaml",
        r#"
models:
  bad_time:
    source: { csv: org.csv }
    time: team
  bad_join:
    source: { csv: customer_month.csv }
    joins:
      owner: { model: customer_month, on: customer_id }
    dimensions:
      both: { column: status, via: owner.status }
      ghost: { via: nojoin.region }
      Upper: { column: status }
"#,
    )])
    .await;
    assert_has(
        &errors,
        f,
        "models.bad_time.time",
        "not a date or timestamp",
    );
    assert_has(
        &errors,
        f,
        "models.bad_join.joins.owner.model",
        "no primary_key",
    );
    assert_has(
        &errors,
        f,
        "models.bad_join.dimensions.both",
        "exactly one of 'column' or 'via'",
    );
    assert_has(
        &errors,
        f,
        "models.bad_join.dimensions.ghost.via",
        "unknown join 'nojoin'",
    );
    assert_has(&errors, f, "models.bad_join.dimensions.Upper", "snake_case");
}

#[tokio::test]
async fn dimension_type_conflicts_and_hierarchy_levels() {
    let errors = load_errors(&[(
        "metrics/conflict.yaml",
        "models:\n  other:\n    source: { csv: customer_month.csv }\n    dimensions:\n      region: { column: aum }\nhierarchies:\n  geo: [region, planet]\n",
    )])
    .await;
    assert!(
        errors.iter().any(|e| e.key.ends_with("dimensions.region")
            && e.reason.contains("one dimension name must mean one type")),
        "{errors:#?}"
    );
}

/// Runs `kpilens validate` on a project folder (its data in `data/`).
fn validate_command(project: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kpilens"))
        .args(["validate", "--project"])
        .arg(project)
        .arg("--data")
        .arg(project.join("data"))
        .output()
        .expect("run kpilens")
}

#[test]
fn validate_command_exits_non_zero_and_names_file_and_key() {
    let broken = temp_project(&[(
        "metrics/typo.yaml",
        "metrics:\n  x: { type: ratio, numerator: nope, denominator: loan_balance }\n",
    )]);
    let out = validate_command(broken.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("metrics/typo.yaml: metrics.x.numerator: unknown measure 'nope'"),
        "{stderr}"
    );

    let ok = temp_project(&[]);
    let out = validate_command(ok.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: catalog"));
}

#[tokio::test]
async fn churn_funnel_cohort_and_tests_are_validated() {
    let errors = load_errors(&[(
        "metrics/kinds.yaml",
        r#"
metrics:
  churn_no_rule: { type: churn, model: customer_month, entity: customer_id }
  churn_bad_rule: { type: churn, model: customer_month, entity: customer_id, active_when: "aum + 1" }
  funnel_bad_window: { type: funnel, model: customer_month, entity: customer_id, step: status, steps: [active, dormant], window: 90 days }
  funnel_one_step: { type: funnel, model: customer_month, entity: nobody, step: status, steps: [active], window: 9d }
  cohort_weekly: { type: cohort, model: customer_month, entity: customer_id, active_when: "status = 'active'", period: week }
  cohort_by_text: { type: cohort, model: customer_month, entity: customer_id, active_when: "status = 'active'", cohort_by: region }
  ratio_zero: { type: ratio, numerator: loan_balance, denominator: loan_balance, empty: zero }
  misplaced: { type: simple, measure: loan_balance, steps: [a, b] }
  funnel_in_periods: { type: funnel, model: customer_month, entity: customer_id, step: status, steps: [active, dormant], window: 3 }
  running_balance: { type: cumulative, measure: loan_balance, reset: year }
  running_distinct: { type: cumulative, measure: loans_seen, reset: year }
  running_both: { type: cumulative, measure: balance_flow, reset: year, window: 3 }
  running_span: { type: cumulative, measure: balance_flow, window: 90d }
  running_mean_since_reset: { type: cumulative, measure: balance_flow, reset: year, average: true }
  running_nothing: { type: cumulative, measure: balance_flow }
  simple_reset: { type: simple, measure: balance_flow, reset: year }
"#,
    )])
    .await;
    let f = "metrics/kinds.yaml";
    assert_has(
        &errors,
        f,
        "metrics.churn_no_rule.active_when",
        "required for type 'churn'",
    );
    assert_has(
        &errors,
        f,
        "metrics.churn_bad_rule.active_when",
        "not a boolean",
    );
    assert_has(
        &errors,
        f,
        "metrics.funnel_bad_window.window",
        "not a duration",
    );
    assert_has(
        &errors,
        f,
        "metrics.funnel_one_step.entity",
        "no column 'nobody'",
    );
    assert_has(
        &errors,
        f,
        "metrics.cohort_weekly.period",
        "monthly, quarterly or yearly",
    );
    assert_has(&errors, f, "metrics.cohort_by_text.cohort_by", "not a date");
    assert_has(&errors, f, "metrics.ratio_zero.empty", "null, not zero");
    assert_has(
        &errors,
        f,
        "metrics.misplaced.steps",
        "not a field of type 'simple'",
    );
    for (key, reason) in [
        ("metrics.funnel_in_periods.window", "not a duration"),
        ("metrics.running_balance.measure", "is a balance"),
        ("metrics.running_distinct.measure", "not a sum or a count"),
        ("metrics.running_both.window", "not both"),
        ("metrics.running_span.window", "not a number of periods"),
        (
            "metrics.running_mean_since_reset.average",
            "over a `window`",
        ),
        (
            "metrics.running_nothing.reset",
            "required for type 'cumulative'",
        ),
        ("metrics.simple_reset.reset", "not a field of type 'simple'"),
    ] {
        assert_has(&errors, f, key, reason);
    }

    // Each phase reports all its errors; a later phase runs once the earlier ones pass.
    let errors = load_errors(&[(
        "metrics/models2.yaml",
        "models:\n  events:\n    source: { csv: customer_month.csv }\n    time: month_end\n    drill_through: [customer_id, phone]\n",
    )])
    .await;
    assert_has(
        &errors,
        "metrics/models2.yaml",
        "models.events.drill_through[1]",
        "unknown column 'phone'",
    );
    let errors = load_errors(&[(
        "metrics/tests.yaml",
        "tests:\n  bad_query:\n    fixture: data\n    query: { metrics: [loan_balance], limt: 3 }\n    expect: { rows: [] }\n",
    )])
    .await;
    assert_has(
        &errors,
        "metrics/tests.yaml",
        "tests.bad_query.query.limt",
        "unknown field",
    );
}

#[tokio::test]
async fn materialize_only_sql_models_by_their_columns_one_way() {
    let errors = load_errors(&[(
        "metrics/stored.yaml",
        r#"
models:
  org_stored: { source: { csv: org.csv }, materialize: true }
  customer_sorted:
    source: { sql: customer_view }
    primary_key: customer_id
    materialize: { order_by: [region, regoin] }
"#,
    )])
    .await;
    let file = "metrics/stored.yaml";
    assert_has(
        &errors,
        file,
        "models.org_stored.materialize",
        "only a SQL model",
    );
    assert_has(
        &errors,
        file,
        "models.customer_sorted.materialize.order_by[1]",
        "unknown column 'regoin'",
    );
    assert_has(
        &errors,
        file,
        "models.customer_sorted.materialize",
        "model 'customer' reads sql/customer_view.sql too",
    );
}

#[tokio::test]
async fn targets_and_attainment_name_what_is_wrong() {
    let errors = load_errors(&[(
        "metrics/targets.yaml",
        r#"
measures:
  plan: { model: loan_month, agg: sum, expr: balance }
  org_rows: { model: org, agg: count }
metrics:
  no_level: { type: target, measure: plan }
  bad_level: { type: target, measure: plan, level: product }
  not_on_model: { type: target, measure: org_rows, level: branch }
  zero_target: { type: target, measure: plan, level: branch, empty: zero }
  vs_not_a_target: { type: attainment, actual: overdue_ratio, target: loan_balance }
  vs_nothing: { type: attainment, actual: nothing, target: zero_target }
  stray: { type: time_progress, measure: plan }
"#,
    )])
    .await;
    let file = "metrics/targets.yaml";
    assert_has(
        &errors,
        file,
        "metrics.no_level.level",
        "required for type 'target'",
    );
    assert_has(
        &errors,
        file,
        "metrics.bad_level.level",
        "no level of a hierarchy",
    );
    assert_has(
        &errors,
        file,
        "metrics.not_on_model.level",
        "has no dimension 'branch'",
    );
    assert_has(&errors, file, "metrics.zero_target.empty", "never 0");
    assert_has(
        &errors,
        file,
        "metrics.vs_not_a_target.target",
        "not a target",
    );
    assert_has(
        &errors,
        file,
        "metrics.vs_nothing.actual",
        "unknown metric 'nothing'",
    );
    assert_has(
        &errors,
        file,
        "metrics.stray.measure",
        "not a field of type 'time_progress'",
    );
}

#[tokio::test]
async fn funnel_step_labels_name_only_its_steps() {
    let errors = load_errors(&[(
        "metrics/labels.yaml",
        r#"
metrics:
  labelled_funnel:
    type: funnel
    model: customer_month
    entity: customer_id
    step: status
    steps: [active, dormant]
    step_labels: { actve: { zh: 活跃, en: Active } }
    window: 90d
"#,
    )])
    .await;
    assert_has(
        &errors,
        "metrics/labels.yaml",
        "metrics.labelled_funnel.step_labels.actve",
        "'actve' is not one of the steps (active, dormant)",
    );
}

#[tokio::test]
async fn a_sql_model_that_does_not_plan_lists_the_columns_it_could_read() {
    let errors = load_errors(&[(
        "sql/customer_view.sql",
        "SELECT c.customer_id, c.segmnt FROM customers c",
    )])
    .await;
    assert_has(
        &errors,
        "sql/customer_view.sql",
        "",
        "No field named c.segmnt",
    );
    assert_has(
        &errors,
        "sql/customer_view.sql",
        "",
        "columns of the tables it reads: customers: customer_id,",
    );
}

/// Value labels are for coded text values, and one value has one label whichever model declares
/// the dimension.
#[tokio::test]
async fn value_labels_need_a_text_dimension_and_agree_across_models() {
    let errors = load_errors(&[(
        "metrics/coded.yaml",
        r#"
models:
  coded_a:
    source: { csv: customer_month.csv }
    dimensions:
      aum_code: { column: aum, value_labels: { "1": { en: One } } }
      coded_status: { column: status, value_labels: { active: { en: Active } } }
  coded_b:
    source: { csv: customer_month.csv }
    dimensions:
      coded_status: { column: status, value_labels: { active: { en: Live } } }
"#,
    )])
    .await;
    assert_has(
        &errors,
        "metrics/coded.yaml",
        "models.coded_a.dimensions.aum_code.value_labels",
        "value labels are for coded text values",
    );
    assert_has(
        &errors,
        "metrics/coded.yaml",
        "models.coded_b.dimensions.coded_status.value_labels.active",
        "labelled differently",
    );
}

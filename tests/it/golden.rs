//! Golden values on the hand-checkable fixture (tests/fixtures/golden). Every expected number is
//! worked out in the comments from the CSV rows.
//!
//! loan_month (loan, customer, month_end, balance, dpd):
//!   Jan 31: L1 c1 100 0 | L2 c2 300 10
//!   Feb 29: L1 90 0 | L2 300 40 | L3 c3 1000 0
//!   Mar 31: L1 80 0 | L2 300 70 | L3 1000 5 | L4 c4 50 0 | L5 c5 null 0
//!   (April: no rows)
//!   May 31: L1 70 0 | L3 900 0
//!   Jun 30: L1 0 0
//! customers: c1 T1/B1/North (opened 2023-05-01), c2 T2/B1/North (2024-01-15),
//!   c3 T3/B2/South sme (2024-02-29), c4 T3/B2/South (2024-03-10), c5 no RM (2024-03-31).

use serde_json::json;

use super::{assert_num, fixture_service, records, run, totals};

#[tokio::test]
async fn ratio_by_month_with_zero_denominator_and_empty_month() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["loan_balance", "overdue_balance", "overdue_ratio"],
            "time": { "grain": "month", "from": "2024-01-01", "to": "2024-06-30" }
        }),
    )
    .await;
    let rows = records(&r);
    let periods: Vec<&str> = rows.iter().map(|r| r["period"].as_str().unwrap()).collect();
    // April has no snapshot rows at all: gap filling adds it, balances carried forward, the
    // ratio of empty parts null.
    assert_eq!(
        periods,
        [
            "2024-01-01",
            "2024-02-01",
            "2024-03-01",
            "2024-04-01",
            "2024-05-01",
            "2024-06-01"
        ]
    );
    let expect = [
        (400.0, 300.0, Some(0.75)),
        (1390.0, 300.0, Some(300.0 / 1390.0)),
        (1430.0, 1300.0, Some(1300.0 / 1430.0)), // L5's null balance is ignored
        (1430.0, 1300.0, None),                  // empty April: carried balances, null ratio
        (970.0, 0.0, Some(0.0)),                 // no overdue loan: 0, not null
        (0.0, 0.0, None),                        // zero denominator: null, not an error
    ];
    for (row, (bal, od, ratio)) in rows.iter().zip(expect) {
        assert_num(&row["loan_balance"], Some(bal));
        assert_num(&row["overdue_balance"], Some(od));
        assert_num(&row["overdue_ratio"], ratio);
    }
    // Totals over the range are at its last snapshot (Jun 30), not a sum over months.
    let t = totals(&r);
    assert_num(&t["loan_balance"], Some(0.0));
    assert_num(&t["overdue_ratio"], None);
    assert_eq!(t["period"], serde_json::Value::Null);
}

#[tokio::test]
async fn balances_are_never_summed_over_months() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["loan_balance", "opening_loan_balance", "balance_flow", "overdue_ratio"],
            "time": { "grain": "quarter", "from": "2024-01-01", "to": "2024-06-30" }
        }),
    )
    .await;
    let rows = records(&r);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["period"], "2024-01-01");
    // Q1 closes on Mar 31: 80 + 300 + 1000 + 50 = 1430 (a sum over months would be 3220).
    assert_num(&rows[0]["loan_balance"], Some(1430.0));
    assert_num(&rows[0]["opening_loan_balance"], Some(400.0)); // Jan 31, pick: first
    assert_num(&rows[0]["balance_flow"], Some(3220.0)); // the additive measure does sum
    assert_num(&rows[0]["overdue_ratio"], Some(1300.0 / 1430.0));
    assert_eq!(rows[1]["period"], "2024-04-01");
    assert_num(&rows[1]["loan_balance"], Some(0.0)); // Q2 closes on Jun 30
    assert_num(&rows[1]["opening_loan_balance"], Some(970.0)); // May 31
}

#[tokio::test]
async fn ratio_of_sums_at_every_level_not_mean_of_ratios() {
    let s = fixture_service().await;
    let q1 = json!({ "from": "2024-01-01", "to": "2024-03-31" });
    let by_team = run(
        &s,
        json!({ "metrics": ["overdue_ratio"], "dimensions": ["team"], "time": q1 }),
    )
    .await;
    let teams = records(&by_team);
    assert_eq!(teams.len(), 4);
    assert_eq!(teams[0]["team"], "T1");
    assert_num(&teams[0]["overdue_ratio"], Some(0.0)); // L1 80, not overdue
    assert_eq!(teams[1]["team"], "T2");
    assert_num(&teams[1]["overdue_ratio"], Some(1.0)); // L2 300, overdue
    assert_num(&teams[2]["overdue_ratio"], Some(1000.0 / 1050.0));
    assert!(teams[3]["team"].is_null()); // c5 has no RM: null team, sorted last
    assert_num(&teams[3]["overdue_ratio"], None); // its only balance is null

    let by_branch = run(
        &s,
        json!({ "metrics": ["overdue_ratio"], "dimensions": ["branch"], "time": q1 }),
    )
    .await;
    let b1 = &records(&by_branch)[0];
    assert_eq!(b1["branch"], "B1");
    // B1 = T1 + T2: 300 / 380 = 0.789…, while the mean of its teams' ratios is 0.5.
    assert_num(&b1["overdue_ratio"], Some(300.0 / 380.0));
    assert_num(&totals(&by_branch)["overdue_ratio"], Some(1300.0 / 1430.0));
}

#[tokio::test]
async fn region_breakdown_with_null_member_and_totals() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["loan_balance", "overdue_balance", "overdue_ratio"],
            "dimensions": ["region"],
            "time": { "from": "2024-01-01", "to": "2024-03-31" }
        }),
    )
    .await;
    let rows = records(&r);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["region"], "North");
    assert_num(&rows[0]["loan_balance"], Some(380.0));
    assert_num(&rows[0]["overdue_ratio"], Some(300.0 / 380.0));
    assert_eq!(rows[1]["region"], "South");
    assert_num(&rows[1]["loan_balance"], Some(1050.0));
    assert_num(&rows[1]["overdue_ratio"], Some(1000.0 / 1050.0));
    assert!(rows[2]["region"].is_null());
    assert_num(&rows[2]["loan_balance"], None); // only L5, whose balance is null
    assert_num(&rows[2]["overdue_balance"], Some(0.0));
    assert_num(&rows[2]["overdue_ratio"], None);
    let t = totals(&r);
    assert!(t["region"].is_null());
    assert_num(&t["loan_balance"], Some(1430.0));
    assert_num(&t["overdue_ratio"], Some(1300.0 / 1430.0));
}

#[tokio::test]
async fn simple_aggregates_count_distinct_avg_min_max() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["loan_rows", "loans_seen", "avg_balance", "max_dpd", "min_balance"],
            "time": { "from": "2024-01-01", "to": "2024-03-31" }
        }),
    )
    .await;
    let row = &records(&r)[0];
    assert_num(&row["loan_rows"], Some(10.0)); // 2 + 3 + 5 rows
    assert_num(&row["loans_seen"], Some(5.0)); // L1..L5
    assert_num(&row["avg_balance"], Some(3220.0 / 9.0)); // the null balance is not counted
    assert_num(&row["max_dpd"], Some(70.0));
    assert_num(&row["min_balance"], Some(50.0));
    assert!(
        r.result.totals.is_none(),
        "no grain and no dimensions: the one row is the total"
    );
}

#[tokio::test]
async fn semi_additive_counts_and_derived_division_by_zero() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["aum", "customer_count", "aum_per_customer"],
            "time": { "grain": "month", "from": "2024-01-01", "to": "2024-03-31" }
        }),
    )
    .await;
    let rows = records(&r);
    // Jan: c1 100 + c2 50, both active. Feb: 110 + 60 + 1000, c2 dormant.
    // Mar: 120 + 5 + 1100 + null (c4), active c1 c3 c4.
    let expect = [
        (150.0, 2.0, 75.0),
        (1170.0, 2.0, 585.0),
        (1225.0, 3.0, 1225.0 / 3.0),
    ];
    assert_eq!(rows.len(), 3);
    for (row, (aum, n, per)) in rows.iter().zip(expect) {
        assert_num(&row["aum"], Some(aum));
        assert_num(&row["customer_count"], Some(n));
        assert_num(&row["aum_per_customer"], Some(per));
    }
    let by_team = run(
        &s,
        json!({
            "metrics": ["aum", "customer_count", "aum_per_customer"],
            "dimensions": ["team"],
            "time": { "from": "2024-03-01", "to": "2024-03-31" }
        }),
    )
    .await;
    let teams = records(&by_team);
    assert_eq!(teams[1]["team"], "T2");
    assert_num(&teams[1]["aum"], Some(5.0));
    assert_num(&teams[1]["customer_count"], Some(0.0)); // c2 closed
    assert_num(&teams[1]["aum_per_customer"], None); // 5 / 0 is null, not infinity or an error
    assert_num(&teams[2]["aum_per_customer"], Some(550.0)); // T3: 1100 / 2
}

#[tokio::test]
async fn metrics_from_three_models_join_without_fan_out() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({
            "metrics": ["loan_balance", "aum", "new_customers"],
            "dimensions": ["region"],
            "time": { "from": "2024-01-01", "to": "2024-03-31" }
        }),
    )
    .await;
    let rows = records(&r);
    assert_eq!(rows.len(), 3);
    // North: loans 80 + 300; AUM at Mar 31 120 + 5; opened in Q1: c2.
    assert_num(&rows[0]["loan_balance"], Some(380.0));
    assert_num(&rows[0]["aum"], Some(125.0));
    assert_num(&rows[0]["new_customers"], Some(1.0));
    // South: 1000 + 50; 1100 + null; c3 and c4.
    assert_num(&rows[1]["loan_balance"], Some(1050.0));
    assert_num(&rows[1]["aum"], Some(1100.0));
    assert_num(&rows[1]["new_customers"], Some(2.0));
    // No region: L5 (null balance); no AUM rows; c5.
    assert_num(&rows[2]["loan_balance"], None);
    assert_num(&rows[2]["aum"], None);
    assert_num(&rows[2]["new_customers"], Some(1.0));
    let t = totals(&r);
    assert_num(&t["loan_balance"], Some(1430.0));
    assert_num(&t["aum"], Some(1225.0));
    assert_num(&t["new_customers"], Some(4.0));
}

#[tokio::test]
async fn derived_over_a_ratio() {
    let s = fixture_service().await;
    let r = run(&s, json!({ "metrics": ["performing_share"], "time": { "from": "2024-01-01", "to": "2024-03-31" } })).await;
    assert_num(
        &records(&r)[0]["performing_share"],
        Some(1.0 - 1300.0 / 1430.0),
    );
}

#[tokio::test]
async fn filters_typed_and_null_aware() {
    let s = fixture_service().await;
    let q1 = json!({ "from": "2024-01-01", "to": "2024-03-31" });
    let one = |r: &kpilens::service::QueryResponse| records(r)[0]["loan_balance"].clone();

    let north = run(
        &s,
        json!({ "metrics": ["loan_balance"], "time": q1,
        "filters": [{ "dimension": "region", "op": "eq", "value": "North" }] }),
    )
    .await;
    assert_num(&one(&north), Some(380.0));
    // ne keeps rows whose region is null: L3 (Feb, Mar), L4, and L5 of the RM-less c5.
    let not_north = run(
        &s,
        json!({ "metrics": ["loan_balance", "loan_rows"], "time": q1,
        "filters": [{ "dimension": "region", "op": "ne", "value": "North" }] }),
    )
    .await;
    assert_num(&records(&not_north)[0]["loan_rows"], Some(4.0));
    assert_num(&records(&not_north)[0]["loan_balance"], Some(1050.0));
    let in_list = run(
        &s,
        json!({ "metrics": ["loan_balance"], "time": q1,
        "filters": [{ "dimension": "region", "op": "in", "values": ["South", "West"] }] }),
    )
    .await;
    assert_num(&one(&in_list), Some(1050.0));
    let no_region = run(
        &s,
        json!({ "metrics": ["loan_rows"], "time": q1,
        "filters": [{ "dimension": "region", "op": "is_null" }] }),
    )
    .await;
    assert_num(&records(&no_region)[0]["loan_rows"], Some(1.0));
    let teams = run(
        &s,
        json!({ "metrics": ["loan_balance"], "time": q1,
        "filters": [{ "dimension": "team", "op": "between", "values": ["T1", "T2"] }] }),
    )
    .await;
    assert_num(&one(&teams), Some(380.0));
    let not_in = run(
        &s,
        json!({ "metrics": ["loan_rows"], "time": q1,
        "filters": [{ "dimension": "region", "op": "not_in", "values": ["North", "South"] }] }),
    )
    .await;
    assert_num(&records(&not_in)[0]["loan_rows"], Some(1.0));
}

#[tokio::test]
async fn calendar_buckets_leap_day_weeks_and_inclusive_ranges() {
    let s = fixture_service().await;
    let days = run(
        &s,
        json!({ "metrics": ["new_customers"],
        "time": { "grain": "day", "from": "2024-02-01", "to": "2024-02-29" } }),
    )
    .await;
    let rows = records(&days);
    // Gap filling: every day of February 2024, counts zero except the leap day (c3 opened).
    assert_eq!(rows.len(), 29);
    assert_eq!(rows[28]["period"], "2024-02-29");
    assert_num(&rows[28]["new_customers"], Some(1.0));
    assert!(rows[..28].iter().all(|r| r["new_customers"] == 0));

    let weeks = run(
        &s,
        json!({ "metrics": ["new_customers"], "fill_gaps": false,
        "time": { "grain": "week", "from": "2024-01-01", "to": "2024-03-31" } }),
    )
    .await;
    let periods: Vec<_> = records(&weeks)
        .iter()
        .map(|r| r["period"].clone())
        .collect();
    // Weeks start on Monday: 01-15 is a Monday; 02-29 a Thursday; 03-10 and 03-31 Sundays.
    assert_eq!(
        periods,
        [
            json!("2024-01-15"),
            json!("2024-02-26"),
            json!("2024-03-04"),
            json!("2024-03-25")
        ]
    );

    let years = run(
        &s,
        json!({ "metrics": ["new_customers"], "time": { "grain": "year" } }),
    )
    .await;
    let rows = records(&years);
    assert_eq!(
        (rows[0]["period"].clone(), rows[1]["period"].clone()),
        (json!("2023-01-01"), json!("2024-01-01"))
    );
    assert_num(&rows[1]["new_customers"], Some(4.0));

    // `to` is inclusive: c5 opened on 03-31.
    let to_30 = run(&s, json!({ "metrics": ["new_customers"], "time": { "from": "2024-03-01", "to": "2024-03-30" } })).await;
    assert_num(&records(&to_30)[0]["new_customers"], Some(1.0));
    let to_31 = run(&s, json!({ "metrics": ["new_customers"], "time": { "from": "2024-03-01", "to": "2024-03-31" } })).await;
    assert_num(&records(&to_31)[0]["new_customers"], Some(2.0));
}

#[tokio::test]
async fn empty_range_gives_no_rows_and_empty_totals() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({ "metrics": ["loan_balance", "loan_rows", "overdue_ratio"],
        "dimensions": ["region"], "time": { "from": "2024-04-01", "to": "2024-04-30" } }),
    )
    .await;
    assert!(r.result.rows.is_empty());
    let t = totals(&r);
    assert_num(&t["loan_balance"], None);
    assert_num(&t["loan_rows"], Some(0.0));
    assert_num(&t["overdue_ratio"], None);
}

#[tokio::test]
async fn snapshot_date_comes_from_the_model_not_the_filtered_rows() {
    let s = fixture_service().await;
    // The sme customer's loan L3 last appears on May 31; Q2 closes on Jun 30, where it has no
    // row. Its Q2 balance must not fall back to May's 900.
    let r = run(&s, json!({ "metrics": ["loan_balance"], "time": { "grain": "quarter", "from": "2024-04-01", "to": "2024-06-30" },
        "filters": [{ "dimension": "segment", "op": "eq", "value": "sme" }] })).await;
    // Gap filling gives Q2 a row; with no earlier value in range to carry, its balance is null.
    assert_eq!(r.result.rows.len(), 1, "got {:?}", r.result.rows);
    assert_num(&records(&r)[0]["loan_balance"], None);
}

#[tokio::test]
async fn order_and_limit() {
    let s = fixture_service().await;
    let r = run(
        &s,
        json!({ "metrics": ["loan_balance"], "dimensions": ["team"],
        "time": { "from": "2024-01-01", "to": "2024-03-31" },
        "order": [{ "by": "loan_balance", "desc": true }], "limit": 2 }),
    )
    .await;
    let rows = records(&r);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["team"], "T3"); // 1050
    assert_eq!(rows[1]["team"], "T2"); // 300
    assert!(r.result.truncated);
    let schema: Vec<_> = r
        .result
        .schema
        .iter()
        .map(|f| (f.name.as_str(), f.data_type))
        .collect();
    assert_eq!(schema, [("team", "string"), ("loan_balance", "integer")]);
}

#[tokio::test]
async fn explained_sql_computes_the_same_numbers() {
    let s = fixture_service().await;
    let q = json!({ "metrics": ["overdue_ratio", "aum", "new_customers"], "dimensions": ["region"],
        "time": { "grain": "month", "from": "2024-01-01", "to": "2024-06-30" }, "totals": false,
        "fill_gaps": false });
    let answer = run(&s, q.clone()).await;
    let explained = s
        .explain(&kpilens::security::Principal::local(), &super::request(q))
        .await
        .expect("explain");
    let batches = s
        .state()
        .execute_sql(&explained.sql)
        .await
        .expect("the SQL runs");
    let columns: Vec<kpilens::semantic::OutputColumn> = answer
        .result
        .schema
        .iter()
        .map(|f| kpilens::semantic::OutputColumn::new(&f.name, f.role))
        .collect();
    let via_sql = kpilens::semantic::rows_of(&batches, &columns);
    assert!(!via_sql.is_empty());
    assert_eq!(via_sql, answer.result.rows, "SQL:\n{}", explained.sql);
    // The planner's scans name the SQL model; the engine inlines it, so the optimiser plans the
    // query and the model's joins together (the model is not run as a black box).
    assert!(
        explained.optimized_plan.contains("TableScan: customers")
            && explained.optimized_plan.contains("TableScan: org")
            && !explained
                .optimized_plan
                .contains("TableScan: customer_view"),
        "{}",
        explained.optimized_plan
    );
}

/// 较年初 over years of snapshots (this test's own loan_month, checked by hand):
///   2022-12-31: L1 c1 40
///   2023-11-30: L1 50 | 2023-12-30: L1 60, L2 c2 200    (the year's last snapshot is Dec 30)
///   2024-01-31: L1 100, L2 300 | 2024-02-29: L1 90, L2 300, L3 c3 1000   (leap day)
///   2024-12-31: L1 70, L3 900 | 2025-01-31: L1 75, L3 950
/// Year ends: 2022 40 (North); 2023 260 (North); 2024 970 (North 70, South 900).
#[tokio::test]
async fn year_start_compares_every_period_with_the_last_snapshot_of_the_year_before() {
    let loans = "loan_id,customer_id,month_end,balance,dpd\n\
        1,1,2022-12-31,40,0\n1,1,2023-11-30,50,0\n1,1,2023-12-30,60,0\n2,2,2023-12-30,200,0\n\
        1,1,2024-01-31,100,0\n2,2,2024-01-31,300,0\n1,1,2024-02-29,90,0\n2,2,2024-02-29,300,0\n\
        3,3,2024-02-29,1000,0\n1,1,2024-12-31,70,0\n3,3,2024-12-31,900,0\n\
        1,1,2025-01-31,75,0\n3,3,2025-01-31,950,0\n";
    let project = super::temp_project(&[("data/loan_month/part-0.csv", loans)]);
    let s = kpilens::service::KpiService::open(&super::settings_for(project.path()))
        .await
        .unwrap();

    // By month within a year: every month against 2023's year end (Dec 30), 260.
    let r = run(
        &s,
        json!({ "metrics": ["loan_balance"], "compare": ["year_start"], "totals": true,
                "time": { "grain": "month", "from": "2024-01-01", "to": "2024-02-29" } }),
    )
    .await;
    let rows = records(&r);
    assert_eq!(rows.len(), 2);
    for (row, (now, delta)) in rows.iter().zip([(400.0, 140.0), (1390.0, 1130.0)]) {
        assert_num(&row["loan_balance"], Some(now));
        assert_num(&row["loan_balance.year_start"], Some(260.0));
        assert_num(&row["loan_balance.year_start.delta"], Some(delta));
        assert_num(
            &row["loan_balance.year_start.delta_pct"],
            Some(delta / 260.0),
        );
    }
    let t = totals(&r);
    assert_num(&t["loan_balance"], Some(1390.0));
    assert_num(&t["loan_balance.year_start"], Some(260.0));

    // Across a year boundary, by region: December 2024 meets 2023's end, January 2025 2024's.
    // South had no loans at the end of 2023: no comparison value, no delta.
    let r = run(
        &s,
        json!({ "metrics": ["loan_balance"], "dimensions": ["region"], "compare": ["previous_year_end"],
                "time": { "grain": "month", "from": "2024-12-01", "to": "2025-01-31" } }),
    )
    .await;
    /// (period, region, value, year-start value, delta)
    type Row = (String, String, Option<f64>, Option<f64>, Option<f64>);
    let got: Vec<Row> = records(&r)
        .iter()
        .map(|row| {
            (
                row["period"].as_str().unwrap().to_string(),
                row["region"].as_str().unwrap_or("").to_string(),
                row["loan_balance"].as_f64(),
                row["loan_balance.year_start"].as_f64(),
                row["loan_balance.year_start.delta"].as_f64(),
            )
        })
        .collect();
    let expect = |p: &str, region: &str, now, then: Option<f64>| {
        (
            p.to_string(),
            region.to_string(),
            Some(now),
            then,
            then.map(|t| now - t),
        )
    };
    assert_eq!(
        got,
        vec![
            expect("2024-12-01", "North", 70.0, Some(260.0)),
            expect("2024-12-01", "South", 900.0, None),
            expect("2025-01-01", "North", 75.0, Some(70.0)),
            expect("2025-01-01", "South", 950.0, Some(900.0)),
        ]
    );

    // Without a grain, the range's end against the year before it; an as-of date in January.
    let r = run(
        &s,
        json!({ "metrics": ["loan_balance"], "compare": ["year_start"],
                "time": { "from": "2024-06-01", "to": "2025-03-31", "as_of": "2025-01-31" } }),
    )
    .await;
    let t = &records(&r)[0];
    assert_num(&t["loan_balance"], Some(1025.0));
    assert_num(&t["loan_balance.year_start"], Some(970.0));
    assert_num(&t["loan_balance.year_start.delta"], Some(55.0));

    // A flow has no year-start value: refused, naming the comparison and what to use instead.
    let err = s
        .query(
            &kpilens::security::Principal::local(),
            &super::request(
                json!({ "metrics": ["balance_flow"], "compare": ["year_start"],
                "time": { "grain": "month", "from": "2024-01-01", "to": "2024-02-29" } }),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(err.field.as_deref(), Some("compare[0]"));
    assert!(err.message.contains("same_period_last_year"), "{err}");
    // And an alert rule that would compare a flow so is refused when it is loaded.
    let rule = "alerts:\n  flow_up:\n    kind: kpi\n    label: { en: up }\n    severity: info\n    metric: balance_flow\n    grain: month\n    when: { up_pct: 10, vs: year_start }\n    every: 1h\n";
    let errors = super::catalog_errors::load_errors(&[("metrics/rule.yaml", rule)]).await;
    super::catalog_errors::assert_has(
        &errors,
        "metrics/rule.yaml",
        "alerts.flow_up.when.vs",
        "a flow",
    );
}

/// 日均: average balances over daily snapshots (this test's own deposit_day, checked by hand).
///   Jan 29: c1 100, c2 50 | Jan 30: c1 100, c2 50, c3 30 | Jan 31: c1 130
///   Feb 1: c1 100, c3 60 | Feb 2: c1 100, c3 60 | (Feb 3: no file) | Feb 4: c1 100, c2 80, c3 60
/// Per-date totals: Jan 150, 180, 130 (mean 460/3); Feb 160, 160, 240 (mean 560/3: the mean over
/// the three dates present). North (c1, c2): Jan 150, 150, 130; Feb 100, 100, 180. South (c3):
/// Jan 0, 30, 0 (a date without its rows counts as 0); Feb 60, 60, 60.
#[tokio::test]
async fn average_balances_are_means_of_per_date_totals_over_the_dates_present() {
    let days = "customer_id,day,balance\n\
        1,2024-01-29,100\n2,2024-01-29,50\n1,2024-01-30,100\n2,2024-01-30,50\n3,2024-01-30,30\n\
        1,2024-01-31,130\n1,2024-02-01,100\n3,2024-02-01,60\n1,2024-02-02,100\n3,2024-02-02,60\n\
        1,2024-02-04,100\n2,2024-02-04,80\n3,2024-02-04,60\n";
    let defs = r#"
models:
  deposit_day:
    source: { csv: deposit_day.csv }
    time: day
    joins:
      customer: { model: customer, on: customer_id }
    dimensions:
      region: { via: customer.region }
      branch: { via: customer.branch }
measures:
  deposit_avg: { model: deposit_day, agg: sum, expr: balance, semi_additive: { over: time, pick: average } }
  c1_deposit_avg: { model: deposit_day, agg: sum, expr: balance, where: "customer_id = 1", semi_additive: { over: time, pick: average } }
metrics:
  deposit_avg: { type: simple, measure: deposit_avg }
  c1_share: { type: ratio, numerator: c1_deposit_avg, denominator: deposit_avg }
"#;
    let project =
        super::temp_project(&[("data/deposit_day.csv", days), ("metrics/daily.yaml", defs)]);
    let s = kpilens::service::KpiService::open(&super::settings_for(project.path()))
        .await
        .unwrap();
    let by_month = run(
        &s,
        json!({ "metrics": ["deposit_avg", "c1_share"], "totals": true,
                "time": { "grain": "month", "from": "2024-01-01", "to": "2024-02-29" } }),
    )
    .await;
    let rows = records(&by_month);
    assert_num(&rows[0]["deposit_avg"], Some(460.0 / 3.0));
    assert_num(&rows[1]["deposit_avg"], Some(560.0 / 3.0));
    // A ratio of two averages over the same dates: the ratio of the sums (c1: 330 and 300).
    assert_num(&rows[0]["c1_share"], Some(330.0 / 460.0));
    assert_num(&rows[1]["c1_share"], Some(300.0 / 560.0));
    // The whole range: six dates.
    assert_num(&totals(&by_month)["deposit_avg"], Some(1020.0 / 6.0));
    let averages = by_month
        .meta
        .notes
        .averages
        .as_ref()
        .expect("stated in meta");
    assert_eq!(averages.metrics, ["deposit_avg", "c1_share"]);

    // By region, and the parent (the bank) is the mean of its own per-date totals.
    let r = run(
        &s,
        json!({ "metrics": ["deposit_avg"], "dimensions": ["region"], "totals": true,
                "time": { "grain": "month", "from": "2024-01-01", "to": "2024-02-29" } }),
    )
    .await;
    let got: Vec<(String, String, f64)> = records(&r)
        .iter()
        .map(|row| {
            (
                row["period"].as_str().unwrap().to_string(),
                row["region"].as_str().unwrap().to_string(),
                row["deposit_avg"].as_f64().unwrap(),
            )
        })
        .collect();
    let want = [
        ("2024-01-01", "North", 430.0 / 3.0),
        ("2024-01-01", "South", 10.0),
        ("2024-02-01", "North", 380.0 / 3.0),
        ("2024-02-01", "South", 60.0),
    ];
    assert_eq!(got.len(), want.len());
    for ((p, region, v), (wp, wr, wv)) in got.iter().zip(want) {
        assert_eq!((p.as_str(), region.as_str()), (wp, wr));
        assert!((v - wv).abs() < 1e-9, "{p} {region}: {v} vs {wv}");
    }

    // A partial month: as of Jan 30, the mean over Jan 29 and 30.
    let r = run(
        &s,
        json!({ "metrics": ["deposit_avg"],
                "time": { "grain": "month", "from": "2024-01-01", "to": "2024-01-31", "as_of": "2024-01-30" } }),
    )
    .await;
    assert_num(&records(&r)[0]["deposit_avg"], Some(165.0));
    // A drill from the bank to regions: children and the parent's subtotal.
    let r = run(
        &s,
        json!({ "metrics": ["deposit_avg"], "drill": { "hierarchy": "org", "path": {} },
                "time": { "from": "2024-02-01", "to": "2024-02-29" } }),
    )
    .await;
    let rows = records(&r);
    let north = rows.iter().find(|r| r["region"] == "North").unwrap();
    assert_num(&north["deposit_avg"], Some(380.0 / 3.0));
    // Averaging a max makes no sense: refused by name.
    let errors = super::catalog_errors::load_errors(&[
        ("data/deposit_day.csv", days),
        (
            "metrics/daily.yaml",
            &defs.replace(
                "agg: sum, expr: balance, semi_additive",
                "agg: max, expr: balance, semi_additive",
            ),
        ),
    ])
    .await;
    super::catalog_errors::assert_has(
        &errors,
        "metrics/daily.yaml",
        "measures.deposit_avg.semi_additive.pick",
        "agg must be sum or count",
    );
}

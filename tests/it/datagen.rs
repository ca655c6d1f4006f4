//! The demo bank: deterministic, and shaped like the story the cockpit tells. Also checks that
//! the repository's own metrics/ validate and answer over it.

use std::path::Path;

use kpilens::datagen::{GenerateOptions, RISING_OVERDUE, generate};
use kpilens::service::KpiService;
use serde_json::json;

use super::{records, run};

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for table in std::fs::read_dir(dir).unwrap() {
        let table = table.unwrap().path();
        for f in std::fs::read_dir(&table).unwrap() {
            let f = f.unwrap().path();
            out.push((
                f.strip_prefix(dir).unwrap().display().to_string(),
                std::fs::read(&f).unwrap(),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn same_seed_same_bank_other_seed_other_bank() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let opts = |out: &Path, seed| GenerateOptions {
        out: out.to_path_buf(),
        scale: 0.05,
        seed,
        daily_days: kpilens::datagen::DAILY_DAYS,
    };
    let ra = generate(&opts(a.path(), 7)).unwrap();
    generate(&opts(b.path(), 7)).unwrap();
    generate(&opts(c.path(), 8)).unwrap();
    assert_eq!(file_bytes(a.path()), file_bytes(b.path()));
    assert_ne!(file_bytes(a.path()), file_bytes(c.path()));
    let rows: std::collections::BTreeMap<_, _> = ra.tables.iter().cloned().collect();
    assert_eq!(rows["customers"], 500);
    for t in [
        "org",
        "customer_month",
        "loans",
        "loan_month",
        "opportunity_events",
        "tickets",
    ] {
        assert!(rows[t] > 0, "{t} is empty");
    }
}

#[tokio::test]
async fn demo_metrics_validate_and_tell_the_demo_story() {
    let (_data, settings) = super::demo_settings();
    let s = KpiService::open(&settings)
        .await
        .unwrap_or_else(|e| panic!("repository metrics/ do not validate:\n{e}"));

    // Rising overdue ratios in the chosen branches: last quarter well above the first.
    let r = run(&s, json!({ "metrics": ["overdue_ratio"], "dimensions": ["branch"], "time": { "grain": "quarter" },
        "filters": [{ "dimension": "branch", "op": "in", "values": RISING_OVERDUE }] })).await;
    let rows = records(&r);
    let at = |p: &str| {
        rows.iter()
            .filter(|r| r["period"] == p)
            .map(|r| r["overdue_ratio"].as_f64().unwrap())
            .sum::<f64>()
    };
    assert!(at("2025-10-01") > 2.0 * at("2024-01-01"), "{rows:?}");
    let all = run(&s, json!({ "metrics": ["overdue_ratio", "npl_ratio"], "time": { "from": "2025-12-01", "to": "2025-12-31" } })).await;
    let bank = records(&all)[0]["overdue_ratio"].as_f64().unwrap();
    assert!(bank > 0.001 && bank < 0.2, "bank-wide overdue ratio {bank}");

    // Skewed branch sizes: the biggest branch has several times the customers of the smallest.
    let r = run(&s, json!({ "metrics": ["customer_count"], "dimensions": ["branch"], "time": { "from": "2025-12-01", "to": "2025-12-31" },
        "order": [{ "by": "customer_count", "desc": true }] })).await;
    let counts: Vec<f64> = records(&r)
        .iter()
        .map(|r| r["customer_count"].as_f64().unwrap())
        .collect();
    assert!(counts[0] > 4.0 * counts[counts.len() - 1], "{counts:?}");

    // Balances by month are semi-additive; AUM per customer is sane; the new-customer push is in Q1.
    let r = run(&s, json!({ "metrics": ["aum", "customer_count", "aum_per_customer", "new_customers", "loan_balance", "deposit_balance"],
        "time": { "grain": "month", "from": "2025-01-01", "to": "2025-12-31" } })).await;
    let rows = records(&r);
    assert_eq!(rows.len(), 12);
    let new = |i: usize| rows[i]["new_customers"].as_f64().unwrap();
    assert!(
        new(0) > new(7),
        "January acquisition {} vs August {}",
        new(0),
        new(7)
    );
    for row in &rows {
        assert!(row["aum"].as_f64().unwrap() > row["deposit_balance"].as_f64().unwrap());
    }
}

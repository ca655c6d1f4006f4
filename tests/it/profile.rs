//! The 360° customer view (`GET /api/v1/customers/{id}`) over the hand-checked bank fixture
//! (tests/fixtures/bank/README.md): every section's rows worked out from the CSVs, scopes giving
//! the same 404 as a customer that does not exist, personal data masked by role, a broken
//! `profile:` named by file and key.

use serde_json::{Value, json};

use crate::bank_settings;
use crate::catalog_errors::{assert_has, load_errors};
use crate::http::{start, token};

fn section<'a>(profile: &'a Value, id: &str) -> &'a Value {
    profile["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no section {id}: {profile}"))
}

/// A section's rows as objects by column name.
fn rows(profile: &Value, id: &str) -> Vec<serde_json::Map<String, Value>> {
    let s = section(profile, id);
    let names: Vec<&str> = s["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    s["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            names
                .iter()
                .zip(r.as_array().unwrap())
                .map(|(n, v)| (n.to_string(), v.clone()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn one_customers_page_holds_every_section_worked_out_by_hand() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let rm3 = token("rm3", "rm", json!({ "rm": "R3" }));
    let (status, p) = s.json_as(&rm3, "GET", "/api/v1/customers/5", "").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["customer"], 5);
    assert_eq!(p["key"], "customer_id");

    // The card: the RM role may see personal data.
    let card = &rows(&p, "card")[0];
    assert_eq!(card["customer_id"], 5);
    assert_eq!(card["name"], "陈五");
    // The CSV fixture's phone column reads as a number.
    assert_eq!(card["phone"].to_string().trim_matches('"'), "13800000005");
    assert_eq!(card["segment"], "corporate");
    assert_eq!(card["opened_on"], "2022-01-01");
    assert_eq!(card["closed_on"], Value::Null);
    let rel = &rows(&p, "relationship")[0];
    assert_eq!(
        (
            &rel["rm_name"],
            &rel["team"],
            &rel["branch"],
            &rel["region"]
        ),
        (
            &json!("张伟"),
            &json!("T3"),
            &json!("兰州分行"),
            &json!("西北")
        )
    );

    // Deposits and AUM over the four month ends, oldest first.
    let balances = rows(&p, "balances");
    let months: Vec<&Value> = balances.iter().map(|r| &r["month_end"]).collect();
    assert_eq!(
        months,
        ["2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30"]
            .map(|m| json!(m))
            .iter()
            .collect::<Vec<_>>()
    );
    assert!(
        balances
            .iter()
            .all(|r| r["deposit_balance"] == 7_000_000.0 && r["aum"] == 10_000_000.0)
    );
    assert_eq!(section(&p, "balances")["truncated"], false);

    // Now: the latest month end's status, loans and products.
    let status_now = rows(&p, "status");
    assert_eq!(status_now.len(), 1);
    assert_eq!(status_now[0]["status"], "active");
    assert_eq!(
        status_now[0]["tier"], "private",
        "AUM 10M is private banking"
    );
    assert_eq!(section(&p, "status")["at"], "2024-04-30");
    let loans = rows(&p, "loans");
    assert_eq!(loans.len(), 1, "{loans:?}");
    assert_eq!(
        (
            &loans[0]["loan_id"],
            &loans[0]["product"],
            &loans[0]["classification"],
            &loans[0]["dpd"]
        ),
        (
            &json!(3),
            &json!("working_capital"),
            &json!("normal"),
            &json!(0)
        )
    );
    assert_eq!(loans[0]["balance"], 600.0);
    let products: Vec<Value> = rows(&p, "products")
        .iter()
        .map(|r| r["product"].clone())
        .collect();
    assert_eq!(
        products,
        [json!("deposit"), json!("wealth"), json!("working_capital")]
    );

    // The timeline: the complaint and the six stages of opportunity 1, newest first; no contacts.
    let timeline = p["timeline"].as_array().unwrap();
    let seen: Vec<(&str, &str)> = timeline
        .iter()
        .map(|e| (e["section"].as_str().unwrap(), e["at"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [
            "tickets",
            "opportunities",
            "opportunities",
            "opportunities",
            "opportunities",
            "opportunities",
            "opportunities"
        ]
    );
    assert!(seen[0].1.starts_with("2024-02-10T01:00"), "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 >= w[1].1),
        "newest first: {seen:?}"
    );
    let stages: Vec<&Value> = timeline[1..].iter().map(|e| &e["values"][2]).collect();
    assert_eq!(
        stages,
        [
            "disbursement",
            "contract",
            "approval",
            "application",
            "due_diligence",
            "lead"
        ]
        .map(|s| json!(s))
        .iter()
        .collect::<Vec<_>>()
    );
    assert!(rows(&p, "contacts").is_empty());
}

#[tokio::test]
async fn another_rms_customer_is_the_same_404_as_none_and_personal_data_is_masked_by_role() {
    let (_data, settings) = bank_settings().await;
    let s = start(settings).await;
    let rm3 = token("rm3", "rm", json!({ "rm": "R3" }));
    // Customer 1 is R1's: for R3 exactly as if there were no customer 1.
    let (status, other) = s.json_as(&rm3, "GET", "/api/v1/customers/1", "").await;
    assert_eq!(status, 404, "{other}");
    let (status, none) = s.json_as(&rm3, "GET", "/api/v1/customers/999", "").await;
    assert_eq!(status, 404);
    assert_eq!(
        other["error"]["code"], none["error"]["code"],
        "{other} {none}"
    );
    assert_eq!(
        other["error"]["message"]
            .as_str()
            .unwrap()
            .replace('1', "#"),
        none["error"]["message"]
            .as_str()
            .unwrap()
            .replace("999", "#")
    );
    // The head office sees customer 1.
    let (status, _) = s.get("/api/v1/customers/1").await;
    assert_eq!(status, 200);
    // Not an id at all: said so, naming the field.
    let (status, bad) = s.get("/api/v1/customers/abc").await;
    assert_eq!(status, 422, "{bad}");
    assert_eq!(bad["error"]["field"], "id", "{bad}");

    // A branch head without personal data: the card masked, nothing else changed.
    let bh = token("bh", "branch_head", json!({ "branch": "兰州分行" }));
    let (status, p) = s.json_as(&bh, "GET", "/api/v1/customers/5", "").await;
    assert_eq!(status, 200, "{p}");
    let card = &rows(&p, "card")[0];
    assert_eq!(card["name"], "陈*");
    assert_eq!(card["phone"], "138****0005");
    assert_eq!(card["id_number"], "110101********0055");
    assert_eq!(card["segment"], "corporate");
    let masked: Vec<&Value> = section(&p, "card")["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["masked"] == true)
        .map(|c| &c["name"])
        .collect();
    assert_eq!(
        masked,
        [&json!("name"), &json!("phone"), &json!("id_number")]
    );
    assert_eq!(rows(&p, "loans").len(), 1);

    // Every call is in the audit log with who asked.
    let audit = std::fs::read_to_string(s.dir.path().join("audit.log")).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("/api/v1/customers/5") && l.contains("\"bh\"")),
        "{audit}"
    );
}

#[tokio::test]
async fn a_broken_profile_is_named_by_file_and_key() {
    let broken = [
        (
            "model: nowhere",
            "profile.sections[0].model",
            "unknown model 'nowhere'",
        ),
        (
            "first section a table",
            "profile.sections[0]",
            "the first section is the customer's own row",
        ),
        (
            "a chart of text",
            "profile.sections[1].columns[0]",
            "is not a number",
        ),
        (
            "an unknown column",
            "profile.sections[1].columns[0]",
            "neither a column nor a dimension of model 'customer_month'",
        ),
    ];
    let yaml = |case: &str| -> String {
        let (first_model, first_show) = match case {
            "model: nowhere" => ("nowhere", "fields"),
            "first section a table" => ("customer", "table"),
            _ => ("customer", "fields"),
        };
        let chart_column = match case {
            "a chart of text" => "status",
            "an unknown column" => "balance_typo",
            _ => "aum",
        };
        format!(
            "profile:\n  key: customer_id\n  sections:\n    - {{ id: card, model: {first_model}, show: {first_show}, columns: [segment] }}\n    - {{ id: balances, model: customer_month, show: chart, columns: [{chart_column}] }}\n"
        )
    };
    for (case, key, reason) in broken {
        let errors = load_errors(&[("metrics/profile.yaml", &yaml(case))]).await;
        assert_has(&errors, "metrics/profile.yaml", key, reason);
    }
    // Declared twice: both files named.
    let errors = load_errors(&[
        ("metrics/profile.yaml", &yaml("")),
        ("metrics/profile_again.yaml", &yaml("")),
    ])
    .await;
    assert!(
        errors
            .iter()
            .any(|e| e.key == "profile" && e.reason.contains("declared twice")),
        "{errors:?}"
    );
}

//! What a rule observes. A KPI rule asks the service the metric for the period holding the
//! latest data (or the clock's date, if earlier), per member of its level, with the comparison
//! its condition needs. A record rule lists the model's rows meeting its condition, with the
//! clock's `now()` and `current_date()` substituted, so tests and the demo control time.

use chrono::{DateTime, Utc};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::Expr;
use datafusion::prelude::{ident, lit};
use serde_json::{Map, Value, json};

use super::state::Observation;
use crate::catalog::{AlertCheck, AlertRule, Condition};
use crate::security::{Principal, Scope};
use crate::semantic::calendar::period_start;
use crate::semantic::{ColumnRole, OutputColumn, QueryRequest, rows_of};
use crate::service::{KpiService, VersionMemo};

/// Rules run as this principal: the whole bank; what a reader sees is scoped when listed.
fn evaluator() -> Principal {
    Principal {
        name: "alerts".into(),
        role: "system".into(),
        scope: Scope::all(),
        personal_data: false,
    }
}

pub async fn kpi(
    service: &KpiService,
    rule: &AlertRule,
    now: DateTime<Utc>,
) -> Result<Vec<(Map<String, Value>, Observation)>, String> {
    let AlertCheck::Kpi {
        metric,
        path,
        grain,
        condition,
        ..
    } = &rule.check
    else {
        unreachable!("a kpi rule");
    };
    let catalog = service.catalog();
    // One data state for the as-of date and the query: each table's files listed once.
    let seen = VersionMemo::default();
    let calendar = service.calendar();
    let today = now.with_timezone(&calendar.time_zone).date_naive();
    // The period holding the latest data: the demo's data ends before today's clock.
    let anchor = catalog
        .models_of(metric)
        .into_iter()
        .find(|m| catalog.models[m].time.is_some())
        .ok_or_else(|| format!("'{metric}' has no time axis"))?;
    let latest = service
        .latest_date(&catalog, &anchor, &seen)
        .await
        .map_err(|e| e.message)?;
    let Some(latest) = latest else {
        return Ok(Vec::new());
    };
    let as_of = latest.min(today);
    let from = period_start(as_of, *grain, calendar.week_start);
    let compare = match condition {
        Condition::UpPct { vs, .. } | Condition::DownPct { vs, .. } => vec![vs.as_str()],
        _ => vec![],
    };
    let req: QueryRequest = serde_json::from_value(json!({
        "metrics": [metric],
        "dimensions": path,
        "time": {"grain": grain.as_str(), "from": from, "to": as_of, "as_of": as_of},
        "compare": compare,
        "totals": false,
        "fill_gaps": false,
    }))
    .map_err(|e| e.to_string())?;
    let response = service
        .query_seeing(&evaluator(), &req, &seen)
        .await
        .map_err(|e| e.message)?;
    let result = &response.result;
    let col = |name: &str| result.column(name);
    let value_at = col(metric).ok_or("the answer lacks the metric")?;
    let compared_at = compare.first().and_then(|c| col(&format!("{metric}.{c}")));
    // `<metric>.<comparison>.delta_pct`, as `compare::merge` names it.
    let pct_at = compare
        .first()
        .and_then(|c| col(&format!("{metric}.{c}.delta_pct")));
    let period = from.to_string();
    let mut out = Vec::new();
    for row in &result.rows {
        let member: Map<String, Value> = path
            .iter()
            .filter_map(|l| col(l).map(|i| (l.clone(), row[i].clone())))
            .collect();
        let value = row[value_at].as_f64();
        let compared = compared_at.and_then(|i| row[i].as_f64());
        let pct = pct_at.and_then(|i| row[i].as_f64());
        let holds = match (condition, value, pct) {
            (_, None, _) => None,
            (Condition::Above(x), Some(v), _) => Some(v > *x),
            (Condition::Below(x), Some(v), _) => Some(v < *x),
            (Condition::UpPct { pct: x, .. }, Some(_), Some(p)) => Some(p * 100.0 >= *x),
            (Condition::DownPct { pct: x, .. }, Some(_), Some(p)) => Some(-p * 100.0 >= *x),
            (_, Some(_), None) => None,
        };
        let observation = match (holds, value) {
            (Some(holds), Some(value)) => Observation::Value {
                value,
                compared,
                holds,
                period: period.clone(),
            },
            _ => Observation::NoData {
                period: Some(period.clone()),
            },
        };
        out.push((member, observation));
    }
    Ok(out)
}

/// One row meeting a record rule.
pub struct RecordRow {
    pub key: Value,
    pub owner: Value,
    pub path: Map<String, Value>,
    pub fields: Map<String, Value>,
}

/// The rows meeting the rule (at most `limit`) and whether that is all of them.
pub async fn records(
    service: &KpiService,
    rule: &AlertRule,
    now: DateTime<Utc>,
    limit: usize,
) -> Result<(Vec<RecordRow>, bool), String> {
    let AlertCheck::Record {
        model,
        condition,
        key,
        owner,
        path,
        show,
        ..
    } = &rule.check
    else {
        unreachable!("a record rule");
    };
    let catalog = service
        .catalog_for(&std::collections::BTreeSet::from([model.clone()]))
        .await
        .map_err(|e| e.message)?;
    let model = &catalog.models[model];
    let mut dims = path.clone();
    if !dims.contains(owner) {
        dims.push(owner.clone());
    }
    let (df, exprs) = crate::semantic::planner::filtered_rows(&catalog, model, &dims, &[])
        .await
        .map_err(|e| e.message)?;
    let today = now
        .with_timezone(&service.calendar().time_zone)
        .date_naive();
    let condition = at_clock(condition.clone(), now, today)?;
    let mut select = vec![
        ident(key).alias("__key"),
        exprs[owner].clone().alias("__owner"),
    ];
    for level in path {
        select.push(exprs[level].clone().alias(format!("__path_{level}")));
    }
    for c in show {
        select.push(ident(c).alias(format!("__show_{c}")));
    }
    let df = df
        .filter(condition)
        .and_then(|d| d.select(select))
        .and_then(|d| d.sort(vec![ident("__key").sort(true, false)]))
        .and_then(|d| d.limit(0, Some(limit + 1)))
        .map_err(|e| crate::text::first_line(&e))?;
    let batches = service
        .run_frame(&catalog, df)
        .await
        .map_err(|e| e.message)?;
    let mut columns = vec![
        OutputColumn::new("__key", ColumnRole::Key),
        OutputColumn::new("__owner", ColumnRole::Key),
    ];
    columns.extend(
        path.iter()
            .map(|l| OutputColumn::new(format!("__path_{l}"), ColumnRole::Dimension)),
    );
    columns.extend(
        show.iter()
            .map(|c| OutputColumn::new(format!("__show_{c}"), ColumnRole::Dimension)),
    );
    let mut rows = rows_of(&batches, &columns);
    let complete = rows.len() <= limit;
    rows.truncate(limit);
    Ok((
        rows.into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let key = r.next().unwrap_or(Value::Null);
                let owner = r.next().unwrap_or(Value::Null);
                let path = path.iter().cloned().zip(r.by_ref()).collect();
                let fields = show.iter().cloned().zip(r).collect();
                RecordRow {
                    key,
                    owner,
                    path,
                    fields,
                }
            })
            .collect(),
        complete,
    ))
}

/// The condition with `now()` and `current_date()` replaced by the alert clock's values.
fn at_clock(condition: Expr, now: DateTime<Utc>, today: chrono::NaiveDate) -> Result<Expr, String> {
    let instant = now
        .timestamp_nanos_opt()
        .ok_or("the clock is out of the nanosecond range")?;
    let days =
        (today - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32;
    condition
        .transform_up(|e| match &e {
            Expr::ScalarFunction(f) if f.name() == "now" => Ok(Transformed::yes(lit(
                ScalarValue::TimestampNanosecond(Some(instant), Some("+00:00".into())),
            ))),
            Expr::ScalarFunction(f) if f.name() == "current_date" => {
                Ok(Transformed::yes(lit(ScalarValue::Date32(Some(days)))))
            }
            _ => Ok(Transformed::no(e)),
        })
        .map(|t| t.data)
        .map_err(|e| crate::text::first_line(&e))
}

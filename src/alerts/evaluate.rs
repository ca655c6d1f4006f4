//! What a rule observes. A KPI rule asks the service the metric for the period holding the
//! latest data (or the clock's date, if earlier), per member of its level, with the comparison
//! its condition needs. A record rule lists the model's rows meeting its condition, with the
//! clock's `now()` and `current_date()` substituted, so tests and the demo control time.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::AlertError;
use super::state::Observation;
use crate::catalog::{AlertCheck, AlertRule, Condition};
use crate::security::{Principal, Scope};
use crate::semantic::calendar::period_start;
use crate::semantic::records::RecordListing;
use crate::semantic::{QueryError, QueryRequest};
use crate::service::{KpiService, RequestContext};

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
) -> Result<Vec<(Map<String, Value>, Observation)>, AlertError> {
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
    let catalog = service.state();
    // One data state for the as-of date and the query: each table's files listed once.
    let seen = RequestContext::for_principal(&evaluator());
    let calendar = service.calendar();
    let today = now.with_timezone(&calendar.time_zone).date_naive();
    // The period holding the latest data: the demo's data ends before today's clock.
    let anchor = catalog
        .catalog()
        .models_of(metric)
        .into_iter()
        .find(|m| catalog.catalog().models[m].time.is_some())
        .ok_or_else(|| AlertError::Rule(format!("'{metric}' has no time axis")))?;
    let latest = service.latest_date(&catalog, &anchor, &seen).await?;
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
    .map_err(|e| QueryError::internal(format!("the rule's query: {e}")))?;
    let response = service.query_seeing(&evaluator(), &req, &seen).await?;
    let result = &response.result;
    let col = |name: &str| result.column(name);
    let value_at =
        col(metric).ok_or_else(|| QueryError::internal("the answer lacks the metric"))?;
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
) -> Result<(Vec<RecordRow>, bool), AlertError> {
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
    let listing = RecordListing {
        model,
        condition,
        key,
        owner,
        path,
        show,
        now,
        today: service.local_date(now),
        limit,
    };
    let (rows, complete) = service
        .records(&listing, &RequestContext::for_principal(&evaluator()))
        .await?;
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

//! KPI tiles: the latest value of a metric, its previous period, the change, a red/amber/green
//! status from the metric's thresholds and direction, and a sparkline of the window.

use serde::Serialize;
use serde_json::Value;

use crate::catalog::{Catalog, Metric, Panel};
use crate::semantic::{PERIOD, QueryResult};
use crate::spec::{Direction, FormatSpec, Label};

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Green,
    Amber,
    Red,
}

/// The latest value against one more comparison.
#[derive(Debug, Clone, Serialize)]
pub struct TileChange {
    pub compare: &'static str,
    pub base: Value,
    pub delta: Value,
    pub delta_pct: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tile {
    pub id: String,
    pub metric: String,
    pub label: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSpec>,
    pub direction: Direction,
    /// First day of the latest period.
    pub period: Value,
    pub value: Value,
    pub previous: Value,
    pub delta: Value,
    pub delta_pct: Value,
    /// The panel's further changes (`year_start`: 较年初, `same_period_last_year`: 同比).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<TileChange>,
    /// Null when the metric declares no thresholds (or the value is null).
    pub status: Option<Status>,
    /// The window's values, oldest first, to 4 significant digits (a drawing, not a figure).
    pub spark: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
}

impl Tile {
    /// Reads a tile off its panel's result: a series with the previous-period comparison.
    pub fn of(catalog: &Catalog, panel: &Panel, result: &QueryResult) -> Tile {
        let metric = &panel.metrics[0];
        let mut tile = Tile::empty(catalog, panel);
        let col = |suffix: &str| result.column(&format!("{metric}{suffix}"));
        let cell = |row: &[Value], ix: Option<usize>| {
            ix.and_then(|i| row.get(i)).cloned().unwrap_or(Value::Null)
        };
        let value_ix = col("");
        tile.spark = result
            .rows
            .iter()
            .map(|r| round_significant(&cell(r, value_ix), 4))
            .collect();
        if let Some(last) = result.rows.last() {
            tile.period = cell(last, result.column(PERIOD));
            tile.value = cell(last, value_ix);
            tile.previous = cell(last, col(".previous_period"));
            tile.delta = cell(last, col(".previous_period.delta"));
            tile.delta_pct = cell(last, col(".previous_period.delta_pct"));
            tile.changes = panel
                .compare
                .iter()
                .map(|c| {
                    let name = c.as_str();
                    TileChange {
                        compare: name,
                        base: cell(last, col(&format!(".{name}"))),
                        delta: cell(last, col(&format!(".{name}.delta"))),
                        delta_pct: cell(last, col(&format!(".{name}.delta_pct"))),
                    }
                })
                .collect();
            tile.status = tile
                .value
                .as_f64()
                .and_then(|v| status(&catalog.metrics[metric], v));
        }
        tile
    }

    /// A tile whose query failed: its error instead of numbers.
    pub fn failed(catalog: &Catalog, panel: &Panel, error: Value) -> Tile {
        Tile {
            error: Some(error),
            ..Tile::empty(catalog, panel)
        }
    }

    fn empty(catalog: &Catalog, panel: &Panel) -> Tile {
        let m = &catalog.metrics[&panel.metrics[0]];
        Tile {
            id: panel.id.clone(),
            metric: m.name.clone(),
            label: panel.title.clone(),
            format: Some(m.format.clone()),
            direction: m.direction,
            period: Value::Null,
            value: Value::Null,
            previous: Value::Null,
            delta: Value::Null,
            delta_pct: Value::Null,
            changes: Vec::new(),
            status: None,
            spark: Vec::new(),
            error: None,
        }
    }
}

/// Red at or past `alert`, amber at or past `warn`, else green; "past" as the direction says
/// (above for lower-is-better, below for higher-is-better). Neutral metrics have no status.
pub fn status(metric: &Metric, value: f64) -> Option<Status> {
    let t = metric.thresholds.as_ref()?;
    let past = |limit: f64| match metric.direction {
        Direction::LowerIsBetter => value >= limit,
        Direction::HigherIsBetter => value <= limit,
        Direction::Neutral => false,
    };
    match metric.direction {
        Direction::Neutral => None,
        _ if past(t.alert) => Some(Status::Red),
        _ if past(t.warn) => Some(Status::Amber),
        _ => Some(Status::Green),
    }
}

fn round_significant(v: &Value, digits: i32) -> Value {
    match v.as_f64() {
        Some(x) if x != 0.0 && x.is_finite() => {
            let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
            let r = (x * scale).round() / scale;
            if r.fract() == 0.0 && r.abs() < 9e15 {
                Value::from(r as i64)
            } else {
                serde_json::Number::from_f64(r).map_or(Value::Null, Value::Number)
            }
        }
        _ => v.clone(),
    }
}

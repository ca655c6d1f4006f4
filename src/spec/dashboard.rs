//! The YAML of one `dashboards/*.yaml` file: a cockpit page of panels over catalog metrics.
//! Shape only; the catalog validates references (metrics, dimensions, hierarchies, models).

use serde::{Deserialize, Serialize};

use super::{Grain, Label};

/// One dashboard. Its id is the file stem (`dashboards/risk.yaml` -> `risk`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardSpec {
    /// Both languages: the switcher shows the one the reader picked.
    pub title: Label,
    #[serde(default)]
    pub description: Option<Label>,
    /// Position in the dashboard switcher (lowest first; ties by id).
    #[serde(default)]
    pub position: Option<u32>,
    pub time: DashboardTimeSpec,
    /// The filter bar. A filter applies to the panels whose metrics reach its dimension.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    pub panels: Vec<PanelSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    pub dimension: String,
    /// Members kept until the reader changes the filter (`?segment=` clears it).
    #[serde(default)]
    pub default: Vec<String>,
}

/// The default period of a dashboard: `periods` periods of `grain` ending at the last date the
/// `anchor` model has data for (or at the reader's `as_of`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardTimeSpec {
    pub grain: Grain,
    #[serde(default = "twelve")]
    pub periods: u32,
    /// A model with a time column; its latest date is the default as-of date.
    pub anchor: String,
}

fn twelve() -> u32 {
    12
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PanelKind {
    /// One metric: value, change vs the previous period, sparkline, red/amber/green.
    Kpi,
    Line,
    Area,
    Bar,
    StackedBar,
    Funnel,
    Cohort,
    /// Ranked rows of one or more dimensions with their metrics and change.
    Table,
}

/// Which time a panel shows: the whole dashboard window (a series), its latest period, or the
/// year to the window's end as one year-grain period (what a target's attainment is paced by).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PanelRange {
    Window,
    LatestPeriod,
    YearToDate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PanelSpec {
    /// Unique within the dashboard; also the panel's cache and test handle.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PanelKind,
    /// Default: the first metric's label.
    #[serde(default)]
    pub title: Option<Label>,
    pub metrics: Vec<String>,
    #[serde(default)]
    pub dimensions: Vec<String>,
    /// Series grain; default: the dashboard's grain for series panels.
    #[serde(default)]
    pub grain: Option<Grain>,
    /// Default: `window` for tiles, lines, areas, funnels and cohorts, `latest_period` for bars
    /// and tables (a stacked bar with a grain is a series).
    #[serde(default)]
    pub range: Option<PanelRange>,
    /// The hierarchy a click drills down; the panel's first dimension must be one of its levels.
    #[serde(default)]
    pub drill: Option<String>,
    /// A model with `drill_through` columns listed when the drill reaches the hierarchy's leaf.
    #[serde(default)]
    pub drill_through: Option<String>,
    /// Ranked panels: sort by this metric (default the first), descending unless `ascending`.
    #[serde(default)]
    pub order_by: Option<String>,
    #[serde(default)]
    pub ascending: bool,
    #[serde(default)]
    pub limit: Option<usize>,
    /// Grid columns out of 4 on a desktop (phones stack everything). Default: 1 for tiles, 2.
    #[serde(default)]
    pub width: Option<u8>,
    /// Tiles: changes shown besides the one on the previous period: `year_start` (较年初, for
    /// balances) and `same_period_last_year` (同比).
    #[serde(default)]
    pub compare: Vec<crate::protocol::Comparison>,
}

//! Dashboards at request time. The reader's filters and as-of date become one query per panel,
//! run concurrently through the service (each cached on its own, like any query), and the KPI
//! tiles (value, previous, change, status, sparkline) that the cockpit and the mobile snapshot
//! show are read off the tile queries' results.

mod tiles;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use tiles::{Status, Tile, status};

use crate::catalog::{Catalog, Dashboard, MAX_PERIODS, Panel};
use crate::security::Principal;
use crate::semantic::calendar::{CalendarConfig, period_start, shift};
use crate::semantic::listing::param_value;
use crate::semantic::{
    Comparison, DrillRequest, ErrorKind, FilterOp, FilterRequest, OrderRequest, QueryError,
    QueryRequest, QueryResult, TimeRequest,
};
use crate::service::{KpiService, RequestContext};
use crate::spec::dashboard::{PanelKind, PanelRange};
use crate::spec::{Grain, Label};
use crate::state::DataState;
use crate::text::{clip, hex_prefix};

/// Most values one filter parameter may carry (`segment=retail,sme`).
const MAX_FILTER_VALUES: usize = 100;

/// What a reader chose: `?as_of=2025-12-31&periods=24&segment=retail,sme`. Every parameter
/// must be the dashboard's: an unknown one is an error naming it, not silently ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DashboardParams {
    pub as_of: Option<NaiveDate>,
    /// How many periods the window spans (default: the dashboard's).
    pub periods: Option<u32>,
    /// Dashboard filter -> the members kept (typed like the dimension).
    pub filters: BTreeMap<String, Vec<Value>>,
}

impl DashboardParams {
    pub fn parse(
        dashboard: &Dashboard,
        catalog: &Catalog,
        params: &BTreeMap<String, String>,
        calendar: &CalendarConfig,
    ) -> Result<Self, QueryError> {
        let mut out = DashboardParams::default();
        for (key, raw) in params {
            if key == "as_of" {
                let d = raw.parse().map_err(|_| {
                    QueryError::malformed(format!(
                        "as_of must be a date (YYYY-MM-DD), not '{}'",
                        clip(raw)
                    ))
                    .at("as_of")
                })?;
                out.as_of = Some(calendar.check_date(d, "as_of")?);
            } else if key == "periods" {
                let n = raw.parse().ok().filter(|n| (1..=MAX_PERIODS).contains(n));
                out.periods = Some(n.ok_or_else(|| {
                    QueryError::invalid(format!(
                        "periods must be a whole number from 1 to {MAX_PERIODS}, not '{}'",
                        clip(raw)
                    ))
                    .at("periods")
                })?);
            } else if dashboard.filters.contains(key) {
                let t = &catalog.dimensions[key].data_type;
                let values: Vec<Value> = raw
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| param_value(v, t))
                    .collect();
                if values.len() > MAX_FILTER_VALUES {
                    return Err(QueryError::invalid(format!(
                        "at most {MAX_FILTER_VALUES} values per filter"
                    ))
                    .at(clip(key)));
                }
                if !values.is_empty() {
                    out.filters.insert(key.clone(), values);
                }
            } else {
                return Err(QueryError::invalid(format!(
                    "unknown parameter '{}': dashboard '{}' takes as_of, periods{}",
                    clip(key),
                    dashboard.id,
                    dashboard
                        .filters
                        .iter()
                        .map(|f| format!(", {f}"))
                        .collect::<String>()
                ))
                .at(clip(key)));
            }
        }
        for (dimension, members) in &dashboard.filter_defaults {
            if !params.contains_key(dimension) {
                let t = &catalog.dimensions[dimension].data_type;
                let values = members.iter().map(|v| param_value(v, t)).collect();
                out.filters.insert(dimension.clone(), values);
            }
        }
        Ok(out)
    }

    /// The filters a panel can take, as request filters.
    fn filters_for(&self, panel: &Panel) -> Vec<FilterRequest> {
        self.filters
            .iter()
            .filter(|(d, _)| panel.filters.contains(d))
            .map(|(d, values)| FilterRequest {
                dimension: d.clone(),
                op: FilterOp::In,
                value: None,
                values: Some(values.clone()),
            })
            .collect()
    }
}

/// The time a dashboard shows: `periods` periods of its grain ending at the as-of date.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Window {
    pub grain: Grain,
    pub periods: u32,
    pub from: NaiveDate,
    /// First day of the latest period (what bars and tables show).
    pub latest_from: NaiveDate,
    pub to: NaiveDate,
}

impl Window {
    pub fn new(
        dashboard: &Dashboard,
        periods: u32,
        as_of: NaiveDate,
        calendar: &CalendarConfig,
    ) -> Self {
        let latest_from = period_start(as_of, dashboard.grain, calendar.week_start);
        let back = i32::try_from(periods).unwrap_or(1) - 1;
        Self {
            grain: dashboard.grain,
            periods,
            from: shift(latest_from, dashboard.grain, -back),
            latest_from,
            to: as_of,
        }
    }
}

/// The query a panel runs in a window: also what the cockpit re-sends, with a drill path, when a
/// reader clicks a bar.
pub fn panel_query(panel: &Panel, window: &Window, params: &DashboardParams) -> QueryRequest {
    let (from, grain) = match panel.range {
        PanelRange::Window => (window.from, panel.grain),
        PanelRange::LatestPeriod => (window.latest_from, None),
        PanelRange::YearToDate => (
            NaiveDate::from_ymd_opt(window.to.year(), 1, 1).expect("Jan 1 exists"),
            Some(Grain::Year),
        ),
    };
    let compare = match panel.kind {
        PanelKind::Kpi | PanelKind::Bar | PanelKind::Table => {
            std::iter::once(Comparison::PreviousPeriod)
                .chain(panel.compare.iter().copied())
                .collect()
        }
        _ => Vec::new(),
    };
    let ranked = matches!(panel.kind, PanelKind::Bar | PanelKind::Table);
    let order = if ranked {
        vec![OrderRequest {
            by: panel
                .order_by
                .clone()
                .unwrap_or_else(|| panel.metrics[0].clone()),
            desc: !panel.ascending,
        }]
    } else {
        Vec::new()
    };
    // A drilling panel starts at the hierarchy's top: the drill supplies that level.
    let (dimensions, drill) = match &panel.drill {
        Some(h) => (
            panel.dimensions[1..].to_vec(),
            Some(DrillRequest {
                hierarchy: h.clone(),
                path: BTreeMap::new(),
            }),
        ),
        None => (panel.dimensions.clone(), None),
    };
    QueryRequest {
        metrics: panel.metrics.clone(),
        dimensions,
        time: Some(TimeRequest {
            grain,
            from: Some(from),
            to: Some(window.to),
            as_of: Some(window.to),
        }),
        filters: params.filters_for(panel),
        order,
        limit: panel.limit,
        totals: panel.kind != PanelKind::Kpi,
        compare,
        drill,
        fill_gaps: true,
        rollups: true,
    }
}

/// `GET /api/v1/dashboards/{id}`: the layout and every panel's data.
#[derive(Debug, Clone, Serialize)]
pub struct DashboardView {
    pub id: String,
    pub title: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Label>,
    pub as_of: NaiveDate,
    pub window: Window,
    pub filters: Vec<FilterView>,
    pub panels: Vec<PanelView>,
    pub meta: DashboardMeta,
}

#[derive(Debug, Clone, Serialize)]
pub struct FilterView {
    pub dimension: String,
    pub label: Label,
    /// The members a reader can pick.
    pub options: Vec<Value>,
    pub selected: Vec<Value>,
    /// How coded members are shown (码值), where the dimension declares it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub value_labels: BTreeMap<String, Label>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PanelView {
    #[serde(flatten)]
    pub layout: Panel,
    pub query: QueryRequest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Arc<QueryResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tile: Option<Tile>,
    /// A panel that failed says why; the other panels still render.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Value>,
    /// `cache` or `engine`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub served_by: Option<&'static str>,
    /// Rollups that answered instead of their models.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub rollups: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DashboardMeta {
    pub catalog_version: String,
    pub elapsed_ms: f64,
    /// Panels answered from the cache, of all panels.
    pub panels_cached: usize,
    pub panels: usize,
}

/// The dashboard, its reader's parameters and the as-of date they resolve to.
struct Resolved {
    principal: Principal,
    /// What this request shares: every panel reads the same data state, in one compute slot.
    seen: RequestContext,
    catalog: Arc<DataState>,
    dashboard: Dashboard,
    params: DashboardParams,
    window: Window,
}

async fn resolve(
    service: &KpiService,
    principal: &Principal,
    id: &str,
    raw: &BTreeMap<String, String>,
) -> Result<Resolved, QueryError> {
    let catalog = service.state();
    let dashboard = catalog
        .catalog()
        .dashboard(id)
        .ok_or_else(|| {
            QueryError::new(
                ErrorKind::NotFound,
                "unknown_dashboard",
                format!(
                    "unknown dashboard '{}' (dashboards: {})",
                    clip(id),
                    catalog
                        .catalog()
                        .dashboards
                        .iter()
                        .map(|d| d.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?
        .clone();
    let calendar = service.calendar();
    let params = DashboardParams::parse(&dashboard, catalog.catalog(), raw, calendar)?;
    let seen = RequestContext::for_principal(principal);
    let as_of = match params.as_of {
        Some(d) => d,
        // The latest data, not the wall clock: a bank's data lands a day or a month behind.
        None => service
            .latest_date(&catalog, &dashboard.anchor, &seen)
            .await?
            .map_or_else(|| calendar.today(), |d| d.min(calendar.today())),
    };
    let periods = params.periods.unwrap_or(dashboard.periods);
    let window = Window::new(&dashboard, periods, as_of, calendar);
    Ok(Resolved {
        principal: principal.clone(),
        seen,
        catalog,
        dashboard,
        params,
        window,
    })
}

pub async fn render(
    service: &KpiService,
    principal: &Principal,
    id: &str,
    raw: &BTreeMap<String, String>,
) -> Result<DashboardView, QueryError> {
    let started = Instant::now();
    let r = resolve(service, principal, id, raw).await?;
    let panels = futures::future::join_all(
        r.dashboard
            .panels
            .iter()
            .map(|p| panel_view(service, &r, p)),
    );
    let filters = futures::future::join_all(
        r.dashboard
            .filters
            .iter()
            .map(|d| filter_view(service, &r, d)),
    );
    let (panels, filters) = futures::join!(panels, filters);
    let filters = filters.into_iter().collect::<Result<Vec<_>, _>>()?;
    let panels_cached = panels
        .iter()
        .filter(|p| p.served_by == Some("cache"))
        .count();
    let meta = DashboardMeta {
        catalog_version: r.catalog.catalog().version.clone(),
        elapsed_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        panels_cached,
        panels: panels.len(),
    };
    tracing::info!(
        dashboard = id,
        panels = meta.panels,
        panels_cached,
        elapsed_ms = meta.elapsed_ms,
        "dashboard"
    );
    Ok(DashboardView {
        id: r.dashboard.id.clone(),
        title: r.dashboard.title.clone(),
        description: r.dashboard.description.clone(),
        as_of: r.window.to,
        window: r.window,
        filters,
        panels,
        meta,
    })
}

async fn filter_view(
    service: &KpiService,
    r: &Resolved,
    dimension: &str,
) -> Result<FilterView, QueryError> {
    let catalog = &r.catalog;
    let models: BTreeSet<String> = r
        .dashboard
        .panels
        .iter()
        .filter(|p| p.filters.iter().any(|f| f == dimension))
        .flat_map(|p| {
            p.metrics
                .iter()
                .flat_map(|m| catalog.catalog().models_of(m))
        })
        .collect();
    let options = service
        .dimension_options(catalog, dimension, &models, &r.principal.scope, &r.seen)
        .await?;
    Ok(FilterView {
        dimension: dimension.to_string(),
        label: catalog.catalog().dimensions[dimension].label.clone(),
        options,
        selected: r.params.filters.get(dimension).cloned().unwrap_or_default(),
        value_labels: catalog.catalog().dimensions[dimension].value_labels.clone(),
    })
}

async fn panel_view(service: &KpiService, r: &Resolved, panel: &Panel) -> PanelView {
    let query = panel_query(panel, &r.window, &r.params);
    let mut view = PanelView {
        layout: panel.clone(),
        query,
        result: None,
        tile: None,
        error: None,
        served_by: None,
        rollups: BTreeSet::new(),
    };
    match service
        .query_seeing(&r.principal, &view.query, &r.seen)
        .await
    {
        Ok(response) => {
            if panel.kind == PanelKind::Kpi {
                view.tile = Some(Tile::of(r.catalog.catalog(), panel, &response.result));
            }
            view.served_by = Some(response.meta.served_by);
            view.rollups = response.result.notes.rollups.clone();
            view.result = Some(response.result);
        }
        Err(e) => view.error = Some(e.client_view()),
    }
    view
}

/// Computes every dashboard's default view for each principal, so that the cache holds the
/// first click of the morning. Errors are logged, not raised: warm-up is an optimisation.
pub async fn warm_up(service: &KpiService, principals: &[Principal]) {
    let started = Instant::now();
    let catalog = service.state();
    let mut panels = 0;
    for principal in principals {
        for d in &catalog.catalog().dashboards {
            match render(service, principal, &d.id, &BTreeMap::new()).await {
                Ok(view) => panels += view.panels.len(),
                Err(e) => {
                    tracing::warn!(dashboard = %d.id, principal = %principal.name, error = %e, "warm-up failed")
                }
            }
        }
    }
    service.count_warm_up();
    tracing::info!(
        dashboards = catalog.catalog().dashboards.len(),
        principals = principals.len(),
        panels,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "dashboards warmed up"
    );
}

/// `GET /api/v1/snapshot/{id}`: the tiles only, for a phone.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub dashboard: String,
    pub as_of: NaiveDate,
    pub grain: Grain,
    pub tiles: Vec<Tile>,
}

/// A snapshot's entity tag, known before computing it: what the tiles depend on (definitions,
/// the data versions of every table the tiles read, the reader's parameters, the as-of date).
pub struct SnapshotPlan {
    resolved: Resolved,
    pub etag: String,
}

pub async fn snapshot_plan(
    service: &KpiService,
    principal: &Principal,
    id: &str,
    raw: &BTreeMap<String, String>,
) -> Result<SnapshotPlan, QueryError> {
    let resolved = resolve(service, principal, id, raw).await?;
    let catalog = &resolved.catalog;
    let models: BTreeSet<String> = resolved
        .dashboard
        .panels
        .iter()
        .filter(|p| p.kind == PanelKind::Kpi)
        .flat_map(|p| {
            p.metrics
                .iter()
                .flat_map(|m| catalog.catalog().models_of(m))
        })
        .chain([resolved.dashboard.anchor.clone()])
        .collect();
    let tables = catalog.catalog().tables_read_by(models.iter());
    let mut h = Sha256::new();
    h.update(catalog.catalog().version.as_bytes());
    // Two principals with different scopes never share a tag (nor a cached answer).
    h.update(principal.scope.key().as_bytes());
    for (t, v) in service.data_versions(catalog, &tables, &resolved.seen)? {
        h.update(t.as_bytes());
        h.update(v.as_bytes());
    }
    h.update(format!("{id}|{:?}|{:?}", resolved.params.filters, resolved.window).as_bytes());
    let etag = format!("\"{}\"", hex_prefix(&h.finalize(), 20));
    Ok(SnapshotPlan { resolved, etag })
}

pub async fn snapshot(service: &KpiService, plan: &SnapshotPlan) -> Snapshot {
    let r = &plan.resolved;
    let tiles = futures::future::join_all(
        r.dashboard
            .panels
            .iter()
            .filter(|p| p.kind == PanelKind::Kpi)
            .map(|p| panel_view(service, r, p)),
    )
    .await;
    Snapshot {
        dashboard: r.dashboard.id.clone(),
        as_of: r.window.to,
        grain: r.window.grain,
        tiles: tiles
            .into_iter()
            .map(|v| {
                v.tile.unwrap_or_else(|| {
                    Tile::failed(r.catalog.catalog(), &v.layout, v.error.unwrap_or_default())
                })
            })
            .collect(),
    }
}

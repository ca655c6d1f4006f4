//! Dashboards validated against the rest of the catalog: every metric, dimension, hierarchy and
//! model a panel names must exist and fit the panel's kind. Errors name file and key
//! (`dashboards/risk.yaml: panels[2].dimensions[0]: ...`).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{Catalog, CatalogErrors, Shape, is_identifier};
use crate::spec::dashboard::{DashboardSpec, PanelKind, PanelRange, PanelSpec};
use crate::spec::{Grain, Label};

/// The longest window a dashboard (or a reader's `periods`) may ask for: five years of months.
pub const MAX_PERIODS: u32 = 60;
/// The most panels one dashboard shows: every open runs each (the largest real one has 12).
pub const MAX_PANELS: usize = 100;

/// A validated dashboard: what `GET /api/v1/dashboards/{id}` lays out.
#[derive(Debug, Clone, Serialize)]
pub struct Dashboard {
    pub id: String,
    #[serde(skip)]
    pub file: String,
    pub title: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Label>,
    pub position: u32,
    pub grain: Grain,
    pub periods: u32,
    /// The model whose latest date is the default as-of date.
    pub anchor: String,
    pub filters: Vec<String>,
    /// Members a filter keeps until the reader changes it.
    pub filter_defaults: BTreeMap<String, Vec<String>>,
    pub panels: Vec<Panel>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Panel {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: PanelKind,
    pub title: Label,
    pub metrics: Vec<String>,
    pub dimensions: Vec<String>,
    /// Set for series panels (tiles' sparklines, lines, areas, stacked bars over time).
    pub grain: Option<Grain>,
    pub range: PanelRange,
    pub drill: Option<String>,
    /// The drill hierarchy's levels, top first (so a client knows where the leaf is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drill_levels: Vec<String>,
    pub drill_through: Option<String>,
    /// The metric ranked panels sort by.
    pub order_by: Option<String>,
    pub ascending: bool,
    pub limit: Option<usize>,
    pub width: u8,
    /// The dashboard's filters this panel's metrics can take; the others do not apply to it.
    pub filters: Vec<String>,
    /// A tile's changes besides the one on the previous period.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compare: Vec<crate::protocol::Comparison>,
}

impl Dashboard {
    pub fn panel(&self, id: &str) -> Option<&Panel> {
        self.panels.iter().find(|p| p.id == id)
    }
}

/// Validates every dashboard file; all problems are reported together.
pub(super) fn validate_dashboards(
    catalog: &Catalog,
    specs: &[(String, String, DashboardSpec)],
) -> Result<Vec<Dashboard>, CatalogErrors> {
    let mut errors = CatalogErrors::default();
    let mut out = Vec::new();
    for (file, id, spec) in specs {
        let mut v = DashboardCheck {
            catalog,
            file,
            errors: &mut errors,
        };
        if let Some(d) = v.dashboard(id, spec) {
            out.push(d);
        }
    }
    errors.check()?;
    out.sort_by(|a, b| (a.position, &a.id).cmp(&(b.position, &b.id)));
    Ok(out)
}

struct DashboardCheck<'a> {
    catalog: &'a Catalog,
    file: &'a str,
    errors: &'a mut CatalogErrors,
}

impl DashboardCheck<'_> {
    fn fail(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(self.file, key, reason);
    }

    fn dashboard(&mut self, id: &str, spec: &DashboardSpec) -> Option<Dashboard> {
        let before = self.errors.0.len();
        if !is_identifier(id) {
            self.fail(
                "",
                "the file name is the dashboard id: lowercase snake_case ([a-z][a-z0-9_]*.yaml)",
            );
        }
        self.bilingual("title", Some(&spec.title));
        self.bilingual("description", spec.description.as_ref());
        match self.catalog.models.get(&spec.time.anchor) {
            None => self.fail(
                "time.anchor",
                format!("unknown model '{}'", spec.time.anchor),
            ),
            Some(m) if m.time.is_none() => self.fail(
                "time.anchor",
                format!("model '{}' has no time column", spec.time.anchor),
            ),
            Some(_) => {}
        }
        if !(1..=MAX_PERIODS).contains(&spec.time.periods) {
            self.fail(
                "time.periods",
                format!("between 1 and {MAX_PERIODS} periods"),
            );
        }
        let filters: Vec<String> = spec.filters.iter().map(|f| f.dimension.clone()).collect();
        for (i, f) in filters.iter().enumerate() {
            if !self.catalog.dimensions.contains_key(f) {
                self.fail(
                    format!("filters[{i}].dimension"),
                    format!("unknown dimension '{f}'"),
                );
            } else if filters[..i].contains(f) {
                self.fail(
                    format!("filters[{i}].dimension"),
                    format!("'{f}' is listed twice"),
                );
            }
        }
        if spec.panels.len() > MAX_PANELS {
            self.fail(
                "panels",
                format!(
                    "{} panels; a dashboard shows {MAX_PANELS} at most (each is a query on every open)",
                    spec.panels.len()
                ),
            );
            return None;
        }
        if spec.panels.is_empty() {
            self.fail("panels", "a dashboard needs at least one panel");
        }
        let mut ids = BTreeSet::new();
        let mut panels = Vec::new();
        for (i, p) in spec.panels.iter().enumerate() {
            let key = format!("panels[{i}]");
            if !is_identifier(&p.id) {
                self.fail(
                    format!("{key}.id"),
                    "lowercase snake_case ([a-z][a-z0-9_]*)",
                );
            } else if !ids.insert(p.id.as_str()) {
                self.fail(
                    format!("{key}.id"),
                    format!("panel id '{}' is used twice", p.id),
                );
            }
            if let Some(panel) = self.panel(&key, p, spec.time.grain, &filters) {
                panels.push(panel);
            }
        }
        (self.errors.0.len() == before).then(|| Dashboard {
            id: id.to_string(),
            file: self.file.to_string(),
            title: spec.title.clone(),
            description: spec.description.clone(),
            position: spec.position.unwrap_or(u32::MAX),
            grain: spec.time.grain,
            periods: spec.time.periods,
            anchor: spec.time.anchor.clone(),
            filter_defaults: spec
                .filters
                .iter()
                .filter(|f| !f.default.is_empty())
                .map(|f| (f.dimension.clone(), f.default.clone()))
                .collect(),
            filters,
            panels,
        })
    }

    fn bilingual(&mut self, key: &str, label: Option<&Label>) {
        if let Some(l) = label
            && (l.zh.as_deref().unwrap_or("").trim().is_empty()
                || l.en.as_deref().unwrap_or("").trim().is_empty())
        {
            self.fail(key, "give both zh and en");
        }
    }

    fn panel(
        &mut self,
        key: &str,
        p: &PanelSpec,
        dashboard_grain: Grain,
        filters: &[String],
    ) -> Option<Panel> {
        let before = self.errors.0.len();
        self.bilingual(&format!("{key}.title"), p.title.as_ref());
        let catalog = self.catalog;
        let mut kinds = Vec::new();
        for (j, m) in p.metrics.iter().enumerate() {
            match catalog.metrics.get(m) {
                None => self.fail(
                    format!("{key}.metrics[{j}]"),
                    format!("unknown metric '{m}'"),
                ),
                Some(metric) => kinds.push((metric.definition.kind(), metric.definition.shape())),
            }
        }
        let (min_metrics, max_metrics) = match p.kind {
            PanelKind::Kpi | PanelKind::Funnel | PanelKind::Cohort | PanelKind::StackedBar => {
                (1, 1)
            }
            _ => (1, 8),
        };
        if p.metrics.len() < min_metrics || p.metrics.len() > max_metrics {
            self.fail(
                format!("{key}.metrics"),
                if max_metrics == 1 {
                    format!("a {} panel shows exactly one metric", kind_name(p.kind))
                } else {
                    format!("between 1 and {max_metrics} metrics")
                },
            );
        }
        // Funnel and cohort panels draw their metrics' own shapes; the others, series.
        let shape = match p.kind {
            PanelKind::Funnel => Shape::Steps,
            PanelKind::Cohort => Shape::Triangle,
            _ => Shape::Series,
        };
        for (j, (k, metric_shape)) in kinds.iter().enumerate() {
            if *metric_shape != shape {
                self.fail(
                    format!("{key}.metrics[{j}]"),
                    if shape == Shape::Series {
                        format!("a {k} metric has its own shape: show it in a {k} panel")
                    } else {
                        format!(
                            "a {} panel needs a {} metric",
                            kind_name(p.kind),
                            kind_name(p.kind)
                        )
                    },
                );
            }
        }
        let models: BTreeSet<String> = p
            .metrics
            .iter()
            .filter(|m| catalog.metrics.contains_key(*m))
            .flat_map(|m| catalog.models_of(m))
            .collect();
        let reaches = |dim: &str| {
            catalog
                .dimensions
                .get(dim)
                .is_some_and(|d| models.iter().all(|m| d.models.contains(m)))
        };
        for (j, d) in p.dimensions.iter().enumerate() {
            let dkey = format!("{key}.dimensions[{j}]");
            if !catalog.dimensions.contains_key(d) {
                self.fail(dkey, format!("unknown dimension '{d}'"));
            } else if !reaches(d) {
                self.fail(
                    dkey,
                    format!("dimension '{d}' is not available for the panel's metrics"),
                );
            }
        }
        let grain = match p.kind {
            PanelKind::Kpi | PanelKind::Line | PanelKind::Area => {
                Some(p.grain.unwrap_or(dashboard_grain))
            }
            _ => p.grain,
        };
        let dims = p.dimensions.len();
        let dims_ok = match p.kind {
            PanelKind::Kpi | PanelKind::Funnel | PanelKind::Cohort => dims == 0,
            PanelKind::Line | PanelKind::Area => dims <= 1,
            PanelKind::Bar => dims == 1,
            PanelKind::StackedBar => dims == if grain.is_some() { 1 } else { 2 },
            PanelKind::Table => (1..=3).contains(&dims),
        };
        if !dims_ok {
            self.fail(
                format!("{key}.dimensions"),
                match p.kind {
                    PanelKind::Kpi | PanelKind::Funnel | PanelKind::Cohort => {
                        format!("a {} panel takes no dimensions", kind_name(p.kind))
                    }
                    PanelKind::Line | PanelKind::Area => {
                        "at most one dimension (one line per member)".to_string()
                    }
                    PanelKind::Bar => "exactly one dimension (the bars)".to_string(),
                    PanelKind::StackedBar => {
                        "two dimensions (bars, stacks), or one with a grain (periods, stacks)"
                            .to_string()
                    }
                    PanelKind::Table => "one to three dimensions".to_string(),
                },
            );
        }
        for (i, c) in p.compare.iter().enumerate() {
            use crate::protocol::Comparison;
            let field = format!("{key}.compare[{i}]");
            if p.kind != PanelKind::Kpi {
                self.fail(field, "only tiles show extra changes (charts and tables compare with the previous period)");
            } else if *c == Comparison::PreviousPeriod {
                self.fail(
                    field,
                    "previous_period is every tile's first change already",
                );
            } else if let (Comparison::YearStart, Some(flow)) = (
                c,
                p.metrics.first().and_then(|m| catalog.flow_measure_of(m)),
            ) {
                self.fail(
                    field,
                    format!("year_start (较年初) compares a balance; '{}' reads '{flow}', a flow: use same_period_last_year", p.metrics[0]),
                );
            }
        }
        if p.grain.is_some() && matches!(p.kind, PanelKind::Funnel | PanelKind::Cohort) {
            self.fail(
                format!("{key}.grain"),
                "funnels and cohorts cover the whole window",
            );
        }
        let range = p.range.unwrap_or(match p.kind {
            PanelKind::Bar | PanelKind::Table => PanelRange::LatestPeriod,
            PanelKind::StackedBar if grain.is_none() => PanelRange::LatestPeriod,
            _ => PanelRange::Window,
        });
        if let Some(h) = &p.drill {
            match catalog.hierarchies.get(h) {
                None => self.fail(format!("{key}.drill"), format!("unknown hierarchy '{h}'")),
                Some(levels) => {
                    let first = p.dimensions.first().map(String::as_str).unwrap_or("");
                    match levels.iter().position(|l| l == first) {
                        None => self.fail(
                            format!("{key}.drill"),
                            format!(
                                "the panel's first dimension must be a level of '{h}' ({})",
                                levels.join(" > ")
                            ),
                        ),
                        Some(0) if levels.len() > 1 => {}
                        Some(_) => self.fail(
                            format!("{key}.drill"),
                            format!(
                                "a drilling panel starts at the top of '{h}': its first dimension is '{}'",
                                levels[0]
                            ),
                        ),
                    }
                    if !matches!(p.kind, PanelKind::Bar | PanelKind::Table) {
                        self.fail(format!("{key}.drill"), "only bars and tables drill");
                    }
                }
            }
        }
        if let Some(m) = &p.drill_through {
            let dkey = format!("{key}.drill_through");
            match (catalog.models.get(m), &p.drill) {
                (None, _) => self.fail(dkey, format!("unknown model '{m}'")),
                (_, None) => self.fail(dkey, "needs `drill`: the rows listed at its leaf"),
                (Some(model), Some(h)) => {
                    if model.drill_through.is_empty() {
                        self.fail(
                            dkey,
                            format!("model '{m}' declares no drill_through columns"),
                        );
                    } else if let Some(levels) = catalog.hierarchies.get(h)
                        && let Some(l) = levels.iter().find(|l| !model.dimensions.contains_key(*l))
                    {
                        self.fail(
                            dkey,
                            format!("model '{m}' does not reach level '{l}' of '{h}'"),
                        );
                    }
                }
            }
        }
        if let Some(o) = &p.order_by
            && !p.metrics.contains(o)
        {
            self.fail(
                format!("{key}.order_by"),
                format!("'{o}' is not one of the panel's metrics"),
            );
        }
        if p.limit.is_some_and(|l| l == 0 || l > 1000) {
            self.fail(format!("{key}.limit"), "between 1 and 1000");
        }
        let width = p
            .width
            .unwrap_or(if p.kind == PanelKind::Kpi { 1 } else { 2 });
        if !(1..=4).contains(&width) {
            self.fail(format!("{key}.width"), "between 1 and 4 grid columns");
        }
        if self.errors.0.len() != before {
            return None;
        }
        let title = p
            .title
            .clone()
            .unwrap_or_else(|| catalog.metrics[&p.metrics[0]].label.clone());
        Some(Panel {
            id: p.id.clone(),
            kind: p.kind,
            title,
            metrics: p.metrics.clone(),
            dimensions: p.dimensions.clone(),
            grain,
            range,
            drill: p.drill.clone(),
            drill_levels: p
                .drill
                .as_ref()
                .and_then(|h| catalog.hierarchies.get(h))
                .cloned()
                .unwrap_or_default(),
            drill_through: p.drill_through.clone(),
            order_by: p.order_by.clone(),
            ascending: p.ascending,
            limit: p.limit,
            width,
            filters: filters.iter().filter(|f| reaches(f)).cloned().collect(),
            compare: p.compare.clone(),
        })
    }
}

fn kind_name(k: PanelKind) -> &'static str {
    match k {
        PanelKind::Kpi => "kpi",
        PanelKind::Line => "line",
        PanelKind::Area => "area",
        PanelKind::Bar => "bar",
        PanelKind::StackedBar => "stacked_bar",
        PanelKind::Funnel => "funnel",
        PanelKind::Cohort => "cohort",
        PanelKind::Table => "table",
    }
}

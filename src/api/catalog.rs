//! `GET /api/v1/catalog`: what a front end needs to build pickers and format numbers.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::catalog::{Catalog, MetricDefinition};
use crate::spec::{Direction, FormatSpec, Label, MetricKind, Thresholds};

#[derive(Serialize)]
pub struct CatalogView {
    pub version: String,
    pub metrics: Vec<MetricView>,
    pub dimensions: Vec<DimensionView>,
    pub hierarchies: Vec<HierarchyView>,
    /// The 360° customer view (`GET /api/v1/customers/{id}`), where declared: customer lists
    /// link their `key` column to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<ProfileView>,
}

#[derive(Serialize)]
pub struct ProfileView {
    pub key: String,
    pub label: Label,
}

#[derive(Serialize)]
pub struct MetricView {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: MetricKind,
    /// What its number is, in one sentence (agents read it; the catalog's JSON does not carry it).
    #[serde(skip)]
    pub meaning: &'static str,
    pub label: Label,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The expression of a derived metric.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    pub format: FormatSpec,
    pub direction: Direction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thresholds: Option<Thresholds>,
    /// Dimensions every model behind the metric can be sliced by.
    pub dimensions: Vec<String>,
    /// Whether the metric can be bucketed by time grain.
    pub time: bool,
}

#[derive(Serialize)]
pub struct DimensionView {
    pub name: String,
    pub label: Label,
    #[serde(rename = "type")]
    pub data_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How coded values are shown (码值), where declared.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub value_labels: BTreeMap<String, Label>,
}

#[derive(Serialize)]
pub struct HierarchyView {
    pub name: String,
    pub levels: Vec<String>,
}

impl CatalogView {
    pub fn of(catalog: &Catalog) -> Self {
        let metrics = catalog
            .metrics
            .values()
            .map(|m| {
                let models = catalog.models_of(&m.name);
                let dimensions = catalog
                    .dimensions
                    .values()
                    .filter(|d| models.iter().all(|model| d.models.contains(model)))
                    .map(|d| d.name.clone())
                    .collect();
                let time = models
                    .iter()
                    .all(|model| catalog.models[model].time.is_some());
                MetricView {
                    name: m.name.clone(),
                    kind: m.definition.kind(),
                    meaning: m.definition.meaning(),
                    label: m.label.clone(),
                    description: m.description.clone(),
                    expr: if let MetricDefinition::Derived(d) = &m.definition {
                        Some(d.sql.clone())
                    } else {
                        None
                    },
                    format: m.format.clone(),
                    direction: m.direction,
                    thresholds: m.thresholds.clone(),
                    dimensions,
                    time,
                }
            })
            .collect();
        let dimensions = catalog
            .dimensions
            .values()
            .map(|d| DimensionView {
                name: d.name.clone(),
                label: d.label.clone(),
                data_type: crate::semantic::type_name(&d.data_type),
                description: d.description.clone(),
                value_labels: d.value_labels.clone(),
            })
            .collect();
        let hierarchies = catalog
            .hierarchies
            .iter()
            .map(|(n, l)| HierarchyView {
                name: n.clone(),
                levels: l.clone(),
            })
            .collect();
        Self {
            version: catalog.version.clone(),
            metrics,
            dimensions,
            hierarchies,
            profile: catalog.profile.as_ref().map(|p| ProfileView {
                key: p.key.clone(),
                label: p.label.clone(),
            }),
        }
    }
}

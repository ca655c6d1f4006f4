//! Metric kinds, one file each: what a kind's YAML may say and how it is checked, what it reads,
//! its default format and empty value, whether it adds up across members, and its meaning in one
//! sentence. Its plan lives in the planner's file of the same name (`semantic/planner/`), which
//! sits above the catalog. Adding a kind: `docs/architecture.md`.
//!
//! [`MetricDefinition`] delegates to the kinds with exhaustive matches (no `_` arm), so a new
//! variant is a compile error everywhere a kind must answer.

mod attainment;
mod check;
mod churn;
mod cohort;
mod cumulative;
mod derived;
mod funnel;
mod ratio;
mod simple;
mod target;
mod time_progress;

use std::collections::BTreeMap;

pub use attainment::AttainmentMetric;
pub(in crate::catalog) use check::MetricCheck;
pub use churn::{ChurnBase, ChurnMetric};
pub use cohort::CohortMetric;
pub use cumulative::{CumulativeMetric, CumulativeSpan};
pub use derived::DerivedMetric;
pub use funnel::FunnelMetric;
pub use ratio::RatioMetric;
pub use simple::SimpleMetric;
pub use target::TargetMetric;
pub use time_progress::TimeProgressMetric;

use super::Measure;
use crate::spec::{EmptyPeriod, FormatStyle, MetricKind};

/// The shape of a metric's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A value per period and group: sliced, compared, drilled, combined with other metrics.
    Series,
    /// A row per step (funnels), queried on its own.
    Steps,
    /// A triangle of cohorts by periods since (cohorts), queried on its own.
    Triangle,
}

/// What a kind's YAML declares, known before any metric is built.
pub(in crate::catalog) trait Declare: Sized {
    /// The fields of `MetricSpec` this kind reads; any other is an error.
    const FIELDS: &'static [&'static str];
    const SHAPE: Shape;
    /// Whether it can be an attainment's `actual`: a value per period and group a target is
    /// set against.
    const CAN_BE_ACTUAL: bool;
    /// The definition, its fields checked against the catalog built so far; errors go to `c`.
    fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self>;
}

/// What every built metric of a kind answers.
pub trait Kind {
    fn kind(&self) -> MetricKind;
    /// The measures it aggregates itself (not through other metrics), in a stable order.
    fn measures(&self) -> Vec<&str>;
    /// The metrics it is computed from.
    fn metrics(&self) -> Vec<&str>;
    /// The model whose entities it follows (churn, funnels, cohorts), read without a measure.
    fn entity_model(&self) -> Option<&str>;
    /// Whether every dimension and filter of a query must reach the models it reads. A target
    /// is null where it cannot answer, and metrics over others leave it to those.
    fn constrains_dimensions(&self) -> bool;
    /// How its values are formatted unless the YAML says.
    fn default_style(&self) -> FormatStyle;
    /// What a gap-filled period without data shows unless the YAML says.
    fn default_empty(&self, measures: &BTreeMap<String, Measure>) -> EmptyPeriod;
    /// Why a declared `empty` is wrong for it, if it is.
    fn refuses_empty(&self, declared: EmptyPeriod) -> Option<&'static str>;
    /// Whether its values add up over the members of a level, so a child's share means
    /// something.
    fn adds_up(&self, measures: &BTreeMap<String, Measure>) -> bool;
    /// What its number is, in one sentence (for agents).
    fn meaning(&self) -> &'static str;
}

/// A metric's validated definition: one variant per kind, each the kind's own type.
pub enum MetricDefinition {
    Simple(SimpleMetric),
    Ratio(RatioMetric),
    Derived(DerivedMetric),
    Churn(ChurnMetric),
    Funnel(FunnelMetric),
    Cohort(CohortMetric),
    Cumulative(CumulativeMetric),
    Target(TargetMetric),
    Attainment(AttainmentMetric),
    TimeProgress(TimeProgressMetric),
}

/// A kind's declaration facts, for a kind named in YAML.
pub(in crate::catalog) struct KindFacts {
    pub(in crate::catalog) fields: &'static [&'static str],
    pub(in crate::catalog) shape: Shape,
    pub(in crate::catalog) can_be_actual: bool,
}

fn facts<K: Declare>() -> KindFacts {
    KindFacts {
        fields: K::FIELDS,
        shape: K::SHAPE,
        can_be_actual: K::CAN_BE_ACTUAL,
    }
}

/// The declaration facts of the kind a YAML `type` names.
pub(in crate::catalog) fn declared(kind: MetricKind) -> KindFacts {
    match kind {
        MetricKind::Simple => facts::<SimpleMetric>(),
        MetricKind::Ratio => facts::<RatioMetric>(),
        MetricKind::Derived => facts::<DerivedMetric>(),
        MetricKind::Churn => facts::<ChurnMetric>(),
        MetricKind::Funnel => facts::<FunnelMetric>(),
        MetricKind::Cohort => facts::<CohortMetric>(),
        MetricKind::Cumulative => facts::<CumulativeMetric>(),
        MetricKind::Target => facts::<TargetMetric>(),
        MetricKind::Attainment => facts::<AttainmentMetric>(),
        MetricKind::TimeProgress => facts::<TimeProgressMetric>(),
    }
}

impl MetricDefinition {
    /// The definition of the metric `c` checks, by the kind its YAML names.
    pub(in crate::catalog) fn check(c: &mut MetricCheck<'_, '_>) -> Option<Self> {
        use MetricDefinition as D;
        match c.spec().kind {
            MetricKind::Simple => SimpleMetric::check(c).map(D::Simple),
            MetricKind::Ratio => RatioMetric::check(c).map(D::Ratio),
            MetricKind::Derived => DerivedMetric::check(c).map(D::Derived),
            MetricKind::Churn => ChurnMetric::check(c).map(D::Churn),
            MetricKind::Funnel => FunnelMetric::check(c).map(D::Funnel),
            MetricKind::Cohort => CohortMetric::check(c).map(D::Cohort),
            MetricKind::Cumulative => CumulativeMetric::check(c).map(D::Cumulative),
            MetricKind::Target => TargetMetric::check(c).map(D::Target),
            MetricKind::Attainment => AttainmentMetric::check(c).map(D::Attainment),
            MetricKind::TimeProgress => TimeProgressMetric::check(c).map(D::TimeProgress),
        }
    }

    fn as_kind(&self) -> &dyn Kind {
        match self {
            MetricDefinition::Simple(k) => k,
            MetricDefinition::Ratio(k) => k,
            MetricDefinition::Derived(k) => k,
            MetricDefinition::Churn(k) => k,
            MetricDefinition::Funnel(k) => k,
            MetricDefinition::Cohort(k) => k,
            MetricDefinition::Cumulative(k) => k,
            MetricDefinition::Target(k) => k,
            MetricDefinition::Attainment(k) => k,
            MetricDefinition::TimeProgress(k) => k,
        }
    }

    pub fn kind(&self) -> MetricKind {
        self.as_kind().kind()
    }

    pub fn shape(&self) -> Shape {
        declared(self.kind()).shape
    }

    /// Funnels and cohorts have their own result shape (a row per step, a triangle), so they
    /// are queried one at a time.
    pub fn is_shaped(&self) -> bool {
        self.shape() != Shape::Series
    }

    /// The measures it aggregates itself.
    pub fn measures_read(&self) -> Vec<String> {
        self.as_kind()
            .measures()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The other metrics this one is computed from (a derived metric's, an attainment's).
    pub fn metrics_read(&self) -> Vec<String> {
        self.as_kind()
            .metrics()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn entity_model(&self) -> Option<&str> {
        self.as_kind().entity_model()
    }

    pub fn constrains_dimensions(&self) -> bool {
        self.as_kind().constrains_dimensions()
    }

    pub fn default_style(&self) -> FormatStyle {
        self.as_kind().default_style()
    }

    pub fn default_empty(&self, measures: &BTreeMap<String, Measure>) -> EmptyPeriod {
        self.as_kind().default_empty(measures)
    }

    pub fn refuses_empty(&self, declared: EmptyPeriod) -> Option<&'static str> {
        self.as_kind().refuses_empty(declared)
    }

    pub fn adds_up(&self, measures: &BTreeMap<String, Measure>) -> bool {
        self.as_kind().adds_up(measures)
    }

    pub fn meaning(&self) -> &'static str {
        self.as_kind().meaning()
    }
}

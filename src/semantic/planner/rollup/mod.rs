//! Rollups: the plans that build one, called by `state` (`planner/pick.rs` chooses one for a
//! query). Forms:
//! - measures: partial results by the model's time values as they are and the rollup's
//!   dimensions, so every range, period and period-end snapshot computed over it is the one
//!   computed over the model; it answers a measure group exactly when it holds the group's
//!   measures and every dimension the group groups or filters by;
//! - churn: one churn base's counts for pairs of snapshot dates (the end of a period and of the
//!   one before), by the dimensions read at the first; it answers when it holds every pair the
//!   query's periods need;
//! - funnel: each entity with its first-step time and when it reached each later step, so a
//!   query only filters and counts.

mod churn;
mod common;
mod entities;
mod measures;
mod plans;
mod window;

pub use churn::{
    PAIR_END, PAIR_START, churn_pair_plan, churn_pairs, materialised_churn, snapshot_dates,
};
pub use common::table_name;
pub use entities::{
    cohort_plan, entity_dimension_check, funnel_first_steps, funnel_plan, materialised_cohort,
    materialised_funnel,
};
pub use measures::{
    ROLLUP_TIME, distinct_checks, distinct_part, materialised, partial_column, plan,
    with_distinct_part,
};
pub use plans::{definition_plans, time_plan};
pub use window::DateWindow;

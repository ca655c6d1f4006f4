//! The query protocol: request DTO -> validated query (typed literals) -> DataFusion logical
//! plan -> JSON result. One planner for every metric kind.

pub mod calendar;
pub mod compare;
pub mod compose;
pub mod drill;
mod error;
pub mod listing;
pub mod planner;
pub mod profile;
pub mod records;
mod result;
pub mod series;
mod validate;

pub use crate::protocol::{
    Comparison, DrillRequest, FilterOp, FilterRequest, Grain, OrderRequest, QueryRequest,
    TimeRequest,
};
pub use error::{Cause, ErrorKind, QueryError, with_causes};
pub use planner::{ColumnRole, OutputColumn, PlannedQuery, plan, rollup};
pub use result::{
    PartialPeriod, QueryResult, ResultNotes, SchemaField, json_value, rows_of, schema_fields,
};
pub use validate::{
    Drill, Filter, PERIOD, Predicate, QueryLimits, ValidatedQuery, days_since_epoch, literal,
    type_name, validate,
};

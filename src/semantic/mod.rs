//! The query protocol: request DTO -> validated query (typed literals) -> DataFusion logical
//! plan -> JSON result. One planner for every metric kind.

mod error;
pub mod planner;
mod request;
mod result;
mod validate;

pub use error::{ErrorKind, QueryError};
pub use planner::{ColumnRole, OutputColumn, PlannedQuery, plan};
pub use request::{FilterOp, FilterRequest, Grain, OrderRequest, QueryRequest, TimeRequest};
pub use result::{QueryResult, SchemaField, json_value, rows_of, schema_fields};
pub use validate::{
    Filter, PERIOD, Predicate, QueryLimits, ValidatedQuery, clip, literal, type_name, validate,
};

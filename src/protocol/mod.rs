//! The query protocol as clients send it: request types whose field names are a
//! public contract. The bottom layer: it depends on nothing in the crate, and everything that
//! speaks the protocol (YAML tests and alert rules, the planner, HTTP) reads these types.

mod request;

pub use request::{
    Comparison, DrillRequest, FilterOp, FilterRequest, Grain, OrderRequest, QueryRequest,
    TimeRequest,
};

//! The two things the catalog needs from outside while it is built, and what the planner builds
//! plans with afterwards, without holding a session:
//! - [`TableRegistry`]: the engine (a layer above) registers the project's file tables and SQL
//!   models and says what columns each has;
//! - [`PlanContext`]: DataFusion's plan-building context (its function registry): SQL
//!   expressions are parsed and DataFrames built in it. It holds no tables and never runs a
//!   plan. A scan names its table by reference, with the schema the engine reported; the engine
//!   resolves the reference to its own table when it runs the plan.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DFSchema;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, LogicalTableSource};
use futures::future::BoxFuture;

use super::tables::TableSource;

/// Where a catalog's tables live while it is built: implemented by each engine.
pub trait TableRegistry: Send + Sync {
    /// Registers a file-sourced table under `source.name`; its columns.
    fn register_file<'a>(
        &'a self,
        source: &'a TableSource,
    ) -> BoxFuture<'a, Result<SchemaRef, String>>;

    /// Plans a SQL model (one SELECT) over the tables registered so far and registers it as a
    /// view named `name`; its columns and its plan (what personal data is traced through).
    fn register_view<'a>(
        &'a self,
        name: &'a str,
        sql: &'a str,
    ) -> BoxFuture<'a, Result<(SchemaRef, LogicalPlan), String>>;
}

#[derive(Clone)]
pub struct PlanContext {
    state: Arc<SessionState>,
}

impl Default for PlanContext {
    fn default() -> Self {
        Self {
            state: Arc::new(SessionStateBuilder::new().with_default_features().build()),
        }
    }
}

impl PlanContext {
    /// A SQL expression over columns of `schema` (a measure's `expr`, a `where`).
    pub fn parse_expr(&self, sql: &str, schema: &DFSchema) -> Result<Expr> {
        self.state.create_logical_expr(sql, schema)
    }

    /// The rows of `table` as a DataFrame to build on: a scan by reference.
    pub fn scan(&self, table: &str, schema: SchemaRef) -> Result<DataFrame> {
        let source = Arc::new(LogicalTableSource::new(schema));
        let plan = LogicalPlanBuilder::scan(table, source, None)?.build()?;
        Ok(DataFrame::new(self.state.as_ref().clone(), plan))
    }

    /// Parses a statement (to check it is one SELECT and find the tables it reads).
    pub fn state(&self) -> &SessionState {
        &self.state
    }
}

//! What every rollup form shares: its table's name, its definition made a built rollup, and
//! plan errors as the build reports them.

use datafusion::arrow::datatypes::SchemaRef;
use std::collections::BTreeMap;

use crate::catalog::{
    Catalog, DimensionBinding, Model, Rollup, RollupDefinition, RollupForm, TimeColumn,
};
use crate::semantic::{Cause, QueryError};
use crate::text::first_line;

/// The table name a rollup's rows are registered under.
pub fn table_name(def: &RollupDefinition) -> String {
    format!("__rollup_{}", def.name)
}

/// An engine error while planning a build: its first line is the reason the catalog's status
/// shows (as a build refused for memory does), the whole error its cause in the log.
pub(super) fn df_error(e: datafusion::error::DataFusionError) -> QueryError {
    QueryError::internal(first_line(&e)).caused_by(std::sync::Arc::new(e) as Cause)
}

/// The parts every form shares: a model over the rollup's table with one column per dimension.
pub(super) fn rollup_of(
    catalog: &Catalog,
    def: &RollupDefinition,
    schema: SchemaRef,
    time: Option<TimeColumn>,
    form: RollupForm,
) -> Rollup {
    let base = &catalog.models[&def.spec.model];
    let model = Model {
        name: def.name.clone(),
        label: base.label.clone(),
        file: def.file.clone(),
        table: table_name(def),
        schema,
        time,
        primary_key: None,
        joins: BTreeMap::new(),
        dimensions: def
            .spec
            .dimensions
            .iter()
            .map(|d| (d.clone(), DimensionBinding::Column(d.clone())))
            .collect(),
        reads: base.reads.clone(),
        drill_through: Vec::new(),
        // Its columns are dimensions and aggregates, which the catalog keeps free of it.
        personal: Default::default(),
        materialize: None,
    };
    Rollup {
        name: def.name.clone(),
        file: def.file.clone(),
        base: def.spec.model.clone(),
        dimensions: def.spec.dimensions.iter().cloned().collect(),
        model,
        form,
        rows: 0,
        build_ms: 0.0,
        refresh: Default::default(),
    }
}

//! The physical side of the semantic planner's `Sequential` node: inputs run one after another.
//!
//! Each input is executed (all its partitions, merged) only once the previous one is exhausted
//! and dropped, so at most one input's hash tables hold memory at a time.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions, reset_plan_states,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, execute_stream,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use futures::StreamExt;

use crate::semantic::planner::sequential::Sequential;

/// DataFusion's planner with the `Sequential` node added.
#[derive(Debug, Default)]
pub(super) struct KpilensQueryPlanner;

#[async_trait]
impl QueryPlanner for KpilensQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(SequentialPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

struct SequentialPlanner;

#[async_trait]
impl ExtensionPlanner for SequentialPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        _session: &dyn Session,
        _planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        Ok(node
            .as_any()
            .downcast_ref::<Sequential>()
            .map(|_| Arc::new(SequentialExec::new(physical_inputs.to_vec())) as _))
    }
}

#[derive(Debug)]
struct SequentialExec {
    inputs: Vec<Arc<dyn ExecutionPlan>>,
    properties: Arc<PlanProperties>,
}

impl SequentialExec {
    fn new(inputs: Vec<Arc<dyn ExecutionPlan>>) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(inputs[0].schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            inputs,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for SequentialExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SequentialExec: {} inputs, one after another",
            self.inputs.len()
        )
    }
}

impl ExecutionPlan for SequentialExec {
    fn name(&self) -> &str {
        "SequentialExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        self.inputs.iter().collect()
    }

    // Each input keeps its own partitions (merged when it runs); repartitioning them here
    // would only add a shuffle.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.inputs.len()]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(children)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(children)))
    }

    fn execute(
        &self,
        _partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // `map` is lazy: an input starts only when the flattened stream reaches it. Each runs as
        // a fresh copy of its plan, owned by its stream alone: a hash join keeps its table in
        // its plan node, so running the shared node would hold every input's table to the end.
        // (The copies' metrics go with them: `explain --analyze` shows none below this node.)
        let batches = futures::stream::iter(self.inputs.clone())
            .map(move |input| {
                match reset_plan_states(input).and_then(|i| execute_stream(i, context.clone())) {
                    Ok(stream) => stream.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            batches,
        )))
    }
}

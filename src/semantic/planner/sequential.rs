//! A logical node whose inputs run one after another, their rows concatenated in order.
//!
//! A union runs its inputs at once, so a plan split in parts to bound its memory (churn, a
//! period at a time) would hold every part's hash tables together. The engine runs this node's
//! inputs in turn, each with all its own parallelism, and frees one before starting the next.
//! The inputs have the same columns (the first input's schema is the node's).

use std::cmp::Ordering;
use std::fmt;

use datafusion::common::{DFSchemaRef, Result, plan_err};
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNodeCore};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sequential {
    inputs: Vec<LogicalPlan>,
    schema: DFSchemaRef,
}

impl Sequential {
    pub const NAME: &'static str = "Sequential";

    /// Fails unless every input has the first one's column names and types.
    pub fn new(inputs: Vec<LogicalPlan>) -> Result<Self> {
        let Some(first) = inputs.first() else {
            return plan_err!("a sequential plan needs an input");
        };
        let schema = first.schema().clone();
        for input in &inputs[1..] {
            let same = input.schema().fields().len() == schema.fields().len()
                && input
                    .schema()
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return plan_err!("the inputs of a sequential plan must have the same columns");
            }
        }
        Ok(Self { inputs, schema })
    }
}

// Plans have no order; nodes are compared by their inputs' text (what DataFusion's own
// extension examples do), only to satisfy the trait's bounds.
impl PartialOrd for Sequential {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        self.inputs
            .len()
            .partial_cmp(&other.inputs.len())
            .filter(|o| *o != Ordering::Equal)
            .or_else(|| {
                let text = |s: &Self| -> Vec<String> {
                    s.inputs.iter().map(|i| i.display().to_string()).collect()
                };
                text(self).partial_cmp(&text(other))
            })
    }
}

impl UserDefinedLogicalNodeCore for Sequential {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.inputs.iter().collect()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        Vec::new()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "Sequential: {} inputs, one after another",
            self.inputs.len()
        )
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        // The optimiser may rewrite an input's columns (qualifiers, casts): keep the first
        // input's schema as the node's, as a union does.
        Self::new(inputs)
    }
}

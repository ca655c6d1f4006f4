//! Bounds on what one request may ask for, set by the server's configuration.

/// Bounds on what one request may ask for.
#[derive(Debug, Clone)]
pub struct QueryLimits {
    pub max_metrics: usize,
    pub max_dimensions: usize,
    pub max_filters: usize,
    pub max_filter_values: usize,
    pub max_rows: usize,
    /// Values one composed answer may hold (rows x columns, comparisons and filled gaps
    /// included); about `series::CELL_BYTES` each, taken from the engine's pool.
    pub max_cells: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_metrics: 20,
            max_dimensions: 6,
            max_filters: 32,
            max_filter_values: 1000,
            max_rows: 50_000,
            max_cells: 2_000_000,
        }
    }
}

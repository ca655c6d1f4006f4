//! `kpilens validate`: the definitions against the data, and a sample (or all) of each model's
//! rows read for errors only the data shows; non-zero exit on any error.

use kpilens::config::Settings;
use kpilens::service::{DataCheck, KpiService};

pub async fn run(sample_rows: usize, full: bool, settings: &Settings) -> Result<(), String> {
    match KpiService::open(settings).await {
        Ok(service) => {
            let check = match (full, sample_rows) {
                (true, _) => Some(DataCheck::Full),
                (false, 0) => None,
                (false, n) => Some(DataCheck::Sample(n)),
            };
            if let Some(check) = check {
                let errors = service.check_data(check).await;
                if !errors.is_empty() {
                    let errors = kpilens::catalog::CatalogErrors(errors);
                    return Err(format!("{} error(s):\n{errors}", errors.0.len()));
                }
            }
            let c = service.state();
            println!(
                "ok: catalog {} with {} models, {} measures, {} metrics, {} dimensions, {} hierarchies",
                c.catalog().version,
                c.catalog().models.len(),
                c.catalog().measures.len(),
                c.catalog().metrics.len(),
                c.catalog().dimensions.len(),
                c.catalog().hierarchies.len()
            );
            Ok(())
        }
        Err(errors) => Err(format!("{} error(s):\n{errors}", errors.0.len())),
    }
}

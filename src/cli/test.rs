//! `kpilens test`: the metric tests declared in `tests:` blocks; non-zero exit if any fails.

use kpilens::config::Settings;

pub async fn run(settings: &Settings) -> Result<(), String> {
    let outcomes = kpilens::metric_tests::run_all(settings).await?;
    let failed = outcomes.iter().filter(|o| !o.passed()).count();
    for o in &outcomes {
        if o.passed() {
            println!("ok      {} ({})", o.name, o.file);
        } else {
            println!("FAILED  {} ({})", o.name, o.file);
            for f in &o.failures {
                println!("    {f}");
            }
        }
    }
    println!(
        "{} metric tests: {} passed, {failed} failed",
        outcomes.len(),
        outcomes.len() - failed
    );
    if failed > 0 {
        Err(format!("{failed} metric test(s) failed"))
    } else {
        Ok(())
    }
}

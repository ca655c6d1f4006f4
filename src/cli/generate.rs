//! `kpilens generate`: the synthetic demo bank as Parquet.

use std::path::PathBuf;

use kpilens::datagen::{self, GenerateOptions};

pub fn run(out: PathBuf, scale: f64, seed: u64, daily_days: u32) -> Result<(), String> {
    let report = datagen::generate(&GenerateOptions {
        out,
        scale,
        seed,
        daily_days,
    })
    .map_err(|e| format!("generate: {e}"))?;
    println!("{report}");
    Ok(())
}

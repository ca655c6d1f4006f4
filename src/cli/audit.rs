//! `kpilens audit`: search the audit trail (and its rotations), or `audit verify` its hash chain.

use std::path::{Path, PathBuf};

use kpilens::security::audit::{self, AuditQuery};

/// The audit log `kpilens audit` reads: the one given, else the server's default.
pub fn file(given: Option<PathBuf>, data_dir: &Path, state_dir: Option<&Path>) -> PathBuf {
    given.unwrap_or_else(|| kpilens::config::state_dir(data_dir, state_dir).join("audit.log"))
}

pub fn verify(file: PathBuf) -> Result<(), String> {
    match audit::verify(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))? {
        audit::Verified::Intact {
            lines,
            files,
            start,
        } => {
            let start = match start {
                audit::TrailStart::FirstLine => "from the first line ever written".to_string(),
                audit::TrailStart::AfterRemoval { first_kept, policy } => format!(
                    "from line {first_kept}: the lines before it were removed by the retention policy ({policy}), as the trail records"
                ),
            };
            println!("intact: {lines} line(s) over {files} file(s), {start}");
            Ok(())
        }
        audit::Verified::Broken {
            file,
            line: 0,
            reason,
        } => Err(format!("broken: {}: {reason}", file.display())),
        audit::Verified::Broken { file, line, reason } => {
            Err(format!("broken at {}:{line}: {reason}", file.display()))
        }
    }
}

pub fn search(file: PathBuf, query: &AuditQuery, limit: usize) -> Result<(), String> {
    let (records, matched) = audit::search(&file, query, limit)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    for r in &records {
        println!("{}", serde_json::to_string(r).expect("serialisable"));
    }
    eprintln!("{matched} matching record(s), {} shown", records.len());
    Ok(())
}

//! `kpilens query` and `kpilens explain`: one query (JSON, as for `POST /api/v1/query`) over
//! the project, printed as a table or JSON, or its plans.

use kpilens::config::Settings;
use kpilens::security::Principal;
use kpilens::semantic::QueryRequest;
use kpilens::service::KpiService;

use super::{OutputFormat, open};

pub async fn query(
    format: OutputFormat,
    query_json: &str,
    settings: &Settings,
) -> Result<(), String> {
    let (service, req) = open_for(settings, query_json).await?;
    let response = service
        .query(&Principal::local(), &req)
        .await
        .map_err(|e| format!("query failed: {e}"))?;
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&response).expect("serialisable")
        ),
        OutputFormat::Table => print_table(&response),
    }
    Ok(())
}

pub async fn explain(query_json: &str, analyze: bool, settings: &Settings) -> Result<(), String> {
    let (service, req) = open_for(settings, query_json).await?;
    if analyze {
        let started = std::time::Instant::now();
        let profile = service
            .analyze(&Principal::local(), &req)
            .await
            .map_err(|e| format!("explain --analyze failed: {e}"))?;
        println!(
            "-- physical plan with metrics ({} ms)\n{profile}",
            started.elapsed().as_millis()
        );
        return Ok(());
    }
    let e = service
        .explain(&Principal::local(), &req)
        .await
        .map_err(|e| format!("explain failed: {e}"))?;
    println!(
        "-- logical plan\n{}\n\n-- optimized plan\n{}\n\n-- equivalent SQL\n{}",
        e.logical_plan, e.optimized_plan, e.sql
    );
    Ok(())
}

fn parse_query(text: &str) -> Result<QueryRequest, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("invalid query at {}: {}", e.path(), e.inner()))
}

/// The service and the parsed query of `kpilens query` and `kpilens explain`.
async fn open_for(
    settings: &Settings,
    query_json: &str,
) -> Result<(KpiService, QueryRequest), String> {
    let req = parse_query(query_json)?;
    Ok((open(settings).await?, req))
}

fn print_table(response: &kpilens::service::QueryResponse) {
    let header = response.result.column_names();
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "∅".into(),
        other => other.to_string(),
    };
    let mut rows: Vec<Vec<String>> = response
        .result
        .rows
        .iter()
        .map(|r| r.iter().map(cell).collect())
        .collect();
    if let Some(t) = &response.result.totals {
        let mut total: Vec<String> = t.iter().map(cell).collect();
        total[0] = "TOTAL".into();
        rows.push(total);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(header.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        println!("{}", line(r));
    }
    let m = &response.meta;
    println!(
        "-- {} rows, {} in {} ms (data {})",
        m.row_count, m.served_by, m.elapsed_ms, m.data_version
    );
}

//! The engine under memory pressure and cancellation: every plan ends (answers or refuses), none
//! hangs, and a plan dropped mid-run stops and gives its memory back.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionConfig;
use kpilens::engine::{DataFusionEngine, EngineError, EngineTables, QueryEngine};

/// apache/datafusion#24883 as kpilens runs it: a grouped `count(distinct)` over two partitions
/// whose repartitions spill under a small pool. With DataFusion 55.2's own pool the first
/// attempt already deadlocked here (every worker parked, no error: the hang of the rollup builds
/// at 10M and 100M rows); kpilens' pool never lets a repartition spill. Each attempt must end,
/// with the counts worked out by hand, and give its memory back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spilling_repartition_never_hangs() {
    let config = SessionConfig::new()
        .with_target_partitions(2)
        .with_batch_size(64)
        .with_information_schema(false);
    let engine = DataFusionEngine::with_config(512 * 1024, config).expect("engine");
    let tables = traces(&engine);
    // By hand: 13 and 337 are coprime and 13 * 337 = 4381 < 40000, so every remainder mod 13
    // meets every remainder mod 337: each of the 13 groups counts 337 distinct traces.
    let mut answered = 0;
    for attempt in 0..12 {
        let run = tables.execute_sql("SELECT g, count(DISTINCT trace_id) AS n FROM t GROUP BY g");
        match tokio::time::timeout(Duration::from_secs(20), run).await {
            Err(_) => panic!("attempt {attempt} hung: no answer and no error within 20 s"),
            Ok(Err(EngineError::MemoryExhausted(_))) => {}
            Ok(Err(e)) => panic!("attempt {attempt} failed: {e}"),
            Ok(Ok(batches)) => {
                let counts: Vec<i64> = batches
                    .iter()
                    .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
                    .collect();
                assert_eq!(counts, vec![337; 13], "attempt {attempt}");
                answered += 1;
            }
        }
    }
    // DataFusion's own tasks of a finished plan end just after it: the memory is back then.
    wait_until_released(&engine, "the attempts").await;
    assert!(answered > 0, "no attempt answered within the pool");
}

/// The table `t`: g = v % 13 and a 32-character trace key with v % 337 values, v in 1..=40000,
/// in 64-row batches.
fn traces(engine: &DataFusionEngine) -> Arc<dyn EngineTables> {
    let tables = engine.new_tables();
    let rows = 40_000usize;
    let g: Vec<i64> = (1..=rows as i64).map(|v| v % 13).collect();
    let trace: Vec<String> = (1..=rows as i64)
        .map(|v| format!("{:032x}", (v % 337) * 7919))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("g", DataType::Int64, false),
        Field::new("trace_id", DataType::Utf8, false),
    ]));
    let batches: Vec<RecordBatch> = (0..rows)
        .step_by(64)
        .map(|start| {
            let end = (start + 64).min(rows);
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(g[start..end].to_vec())),
                    Arc::new(StringArray::from(trace[start..end].to_vec())),
                ],
            )
            .expect("batch")
        })
        .collect();
    tables
        .register_batches("t", schema, batches)
        .expect("registered");
    tables
}

/// A plan dropped while it runs (a query past its budget, a build cancelled) stops: its task on
/// the engine's runtime is aborted and its memory is back in the pool at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_dropped_while_running_stops_and_gives_its_memory_back() {
    let engine = DataFusionEngine::new(1024 * 1024 * 1024).expect("engine");
    let tables = traces(&engine);
    // About 123 M joined rows: seconds of work, holding the join's table and the groups.
    let run = tables.execute_sql(
        "SELECT a.trace_id, count(DISTINCT b.trace_id || a.trace_id) AS n \
         FROM t a JOIN t b ON a.g = b.g GROUP BY a.trace_id",
    );
    let holding = async {
        while engine.memory_reserved() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::select! {
        done = run => panic!("the plan ended before it was dropped: {:?}", done.map(|b| b.len())),
        _ = holding => {}
    }
    // `run` is dropped here, mid-plan.
    wait_until_released(&engine, "the dropped plan").await;
}

/// Waits (up to 10 s) until the pool holds nothing. (The engine's threads run at a low
/// priority, and the other tests keep both cores busy: the aborted task's drop may wait.)
async fn wait_until_released(engine: &DataFusionEngine, what: &str) {
    let since = std::time::Instant::now();
    while engine.memory_reserved() > 0 {
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "{what}: {} bytes still held after 10 s",
            engine.memory_reserved()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn an_internal_error_keeps_its_cause_for_the_log_and_not_for_the_client() {
    use std::error::Error;
    let disk = std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        "data/loans.parquet: denied",
    );
    let engine_error = datafusion::error::DataFusionError::Context(
        "reading loan_month".into(),
        Box::new(datafusion::error::DataFusionError::External(Box::new(disk))),
    );
    let e: kpilens::semantic::QueryError = kpilens::engine::EngineError::from(engine_error).into();
    assert_eq!(e.kind, kpilens::semantic::ErrorKind::Internal);
    // The chain down to the disk's own error, as `source()` gives it and the log line prints it.
    let mut causes = Vec::new();
    let mut next = e.source();
    while let Some(cause) = next {
        causes.push(cause.to_string());
        next = cause.source();
    }
    assert!(
        causes
            .last()
            .is_some_and(|c| c == "data/loans.parquet: denied"),
        "{causes:?}"
    );
    let logged = kpilens::semantic::with_causes(&e);
    assert!(
        logged.contains("reading loan_month") && logged.contains("denied"),
        "{logged}"
    );
    // The client sees neither.
    let view = e.client_view().to_string();
    assert!(
        !view.contains("denied") && !view.contains("loan_month"),
        "{view}"
    );
}

//! The engine every front end shares: plan one read-only statement, then run it as a stream
//! that stops when it is cancelled, times out, or nobody reads it any more.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues};
use datafusion::execution::context::SQLOptions;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use futures::StreamExt as _;
use loglake_lake::{Lake, TableInfo};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::{tables_read, LakeCatalog, LakeSchema};
use crate::error::QueryError;
use crate::limits::Limits;

/// A read-only SQL session over the lake. Cheap to share (`Arc`); every query gets its own
/// memory pool of [`Limits::memory_per_query`] on top of the shared catalog and spill space.
pub struct QueryEngine {
    ctx: SessionContext,
    catalog: Arc<LakeCatalog>,
    limits: Limits,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("lake", self.catalog.lake().root())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A bound parameter: `$1` (by position) or `$name`.
#[derive(Debug, Clone)]
pub enum Params {
    None,
    Positional(Vec<serde_json::Value>),
    Named(Vec<(String, serde_json::Value)>),
    /// Values already typed by the client's protocol (Postgres `Bind`, Flight SQL `DoPut`).
    Values(ParamValues),
}

/// One planned statement, not yet run.
#[derive(Debug)]
pub struct Planned {
    df: DataFrame,
    /// The Delta tables the plan reads and the versions it reads them at.
    pub tables: Vec<(String, u64)>,
    pub schema: SchemaRef,
    max_rows: Option<u64>,
}

/// How a running query is controlled from outside.
#[derive(Debug, Clone)]
pub struct Control {
    pub cancel: CancellationToken,
    pub timeout: Duration,
    /// Run on this runtime (the service's query runtime); `None`: the current one.
    pub runtime: Option<tokio::runtime::Handle>,
}

/// What a finished query measured.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub rows: u64,
    pub truncated: bool,
    pub bytes_scanned: u64,
    pub elapsed: Duration,
}

/// A running query: its batches, in order, then `None`. An `Err` ends it early.
#[derive(Debug)]
pub struct Running {
    pub schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch, QueryError>>,
    stats: Arc<Mutex<Stats>>,
}

impl Running {
    pub async fn next(&mut self) -> Option<Result<RecordBatch, QueryError>> {
        self.rx.recv().await
    }

    /// Final once [`Running::next`] returned `None`.
    pub fn stats(&self) -> Stats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl QueryEngine {
    pub fn new(lake: Lake, limits: Limits) -> Result<Self, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("loglake", "public")
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true);
        let disk = DiskManagerBuilder::default()
            .with_mode(match &limits.spill_dir {
                Some(dir) => DiskManagerMode::Directories(vec![dir.clone()]),
                None => DiskManagerMode::OsTmpDirectory,
            })
            .with_max_temp_directory_size(limits.max_spill_bytes);
        let runtime = RuntimeEnvBuilder::new()
            .with_disk_manager_builder(disk)
            .build_arc()
            .map_err(QueryError::Execution)?;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let catalog = LakeCatalog::new(lake.clone());
        let default_catalog = ctx
            .catalog("loglake")
            .ok_or_else(|| QueryError::Execution(DataFusionError::Internal("no catalog".into())))?;
        default_catalog
            .register_schema("public", Arc::new(LakeSchema(Arc::clone(&catalog))))
            .map_err(QueryError::Execution)?;
        // What Postgres drivers and BI tools query on connect and when browsing (pg_catalog,
        // current_database(), has_table_privilege(), ...): read-only views of this catalog.
        datafusion_pg_catalog::pg_catalog::setup_pg_catalog(
            &ctx,
            "loglake",
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| QueryError::Execution(*e))?;
        crate::pg_compat::register(&ctx);
        Ok(Self {
            ctx,
            catalog,
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn catalog(&self) -> &Arc<LakeCatalog> {
        &self.catalog
    }

    /// The columns of a table (or the `logs` view) as queries see them.
    pub async fn table_schema(&self, name: &str) -> Result<SchemaRef, QueryError> {
        let provider = self
            .ctx
            .table_provider(name)
            .await
            .map_err(QueryError::plan)?;
        Ok(plain_schema(&provider.schema()))
    }

    /// Lists the lake's tables now.
    pub async fn tables(&self) -> Result<Vec<TableInfo>, QueryError> {
        Ok(self.catalog.list().await?)
    }

    /// Parses, plans and checks one statement; reads no data beyond the Delta logs.
    pub async fn plan(
        &self,
        sql: &str,
        params: &Params,
        max_rows: Option<u64>,
    ) -> Result<Planned, QueryError> {
        let plan = self.prepare(sql).await?;
        self.bind(plan, params, max_rows).await
    }

    /// Parses one statement into a logical plan that passed the sandbox, its parameters
    /// (`$1`, `$name`) still unbound: what a prepared statement keeps between `PREPARE` and
    /// each `EXECUTE` (its parameter and result types are known from it).
    pub async fn prepare(&self, sql: &str) -> Result<LogicalPlan, QueryError> {
        self.check_size(sql)?;
        checked(self.ctx.state().create_logical_plan(sql).await)
    }

    /// [`QueryEngine::prepare`] for a statement another front end already parsed (the
    /// Postgres front end parses in Postgres's dialect and rewrites catalog queries).
    pub async fn prepare_statement(
        &self,
        statement: datafusion::sql::parser::Statement,
    ) -> Result<LogicalPlan, QueryError> {
        checked(self.ctx.state().statement_to_plan(statement).await)
    }

    /// Refuses a statement longer than [`Limits::max_statement_bytes`].
    pub fn check_size(&self, sql: &str) -> Result<(), QueryError> {
        if sql.len() > self.limits.max_statement_bytes {
            return Err(QueryError::TooLarge {
                size: sql.len(),
                limit: self.limits.max_statement_bytes,
            });
        }
        Ok(())
    }

    /// The answer's columns as [`Running::schema`] will give them, before running.
    pub fn result_schema(plan: &LogicalPlan) -> SchemaRef {
        plain_schema(plan.schema().as_arrow())
    }

    /// Binds the parameters of a prepared plan and makes it ready to run in a session of its
    /// own, with a memory pool of [`Limits::memory_per_query`].
    pub async fn bind(
        &self,
        plan: LogicalPlan,
        params: &Params,
        max_rows: Option<u64>,
    ) -> Result<Planned, QueryError> {
        let pool = TrackConsumersPool::new(
            FairSpillPool::new(self.limits.memory_per_query),
            std::num::NonZeroUsize::new(3).expect("3 is not zero"),
        );
        let runtime = RuntimeEnvBuilder::from_runtime_env(&self.ctx.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(QueryError::Execution)?;
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(runtime)
            .build();
        let ctx = SessionContext::new_with_state(state);
        let plan = bind(plan, params)?;
        if reads_catalog_views(&plan) {
            // pg_catalog and information_schema list the tables discovered so far: list the
            // lake first, so a table written since (or before the first query) shows.
            self.catalog.list().await?;
        }
        let tables = tables_read(&plan);
        let mut df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(QueryError::plan)?;
        let max_rows = max_rows.or(self.limits.max_result_rows);
        // A LIMIT lets the plan stop early; EXPLAIN and DESCRIBE must stay the plan's root
        // (their rows are still cut in `forward`).
        let limitable = !matches!(
            df.logical_plan(),
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
        );
        if let Some(max) = max_rows.filter(|_| limitable) {
            let fetch = usize::try_from(max.saturating_add(1)).unwrap_or(usize::MAX);
            df = df.limit(0, Some(fetch)).map_err(QueryError::plan)?;
        }
        let schema = plain_schema(df.schema().as_arrow());
        Ok(Planned {
            df,
            tables,
            schema,
            max_rows,
        })
    }

    /// Runs a planned statement. The batches arrive through [`Running::next`]; dropping the
    /// [`Running`] or cancelling `control.cancel` stops the work, and so does the timeout.
    pub fn run(&self, planned: Planned, control: Control) -> Running {
        let (tx, rx) = mpsc::channel(2);
        let stats = Arc::new(Mutex::new(Stats::default()));
        let schema = Arc::clone(&planned.schema);
        let task = drive(planned, control.clone(), tx, Arc::clone(&stats));
        match &control.runtime {
            Some(rt) => drop(rt.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
        Running { schema, rx, stats }
    }

    /// Plans and runs one statement and collects the result (the CLI's and tests' way).
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let planned = self.plan(sql, &Params::None, None).await?;
        let mut running = self.run(
            planned,
            Control {
                cancel: CancellationToken::new(),
                timeout: self.limits.query_timeout,
                runtime: None,
            },
        );
        let mut out = Vec::new();
        while let Some(batch) = running.next().await {
            out.push(batch?);
        }
        Ok(out)
    }
}

/// Whether a plan scans `pg_catalog` or `information_schema` (subqueries included).
fn reads_catalog_views(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if matches!(
                scan.table_name.schema(),
                Some("pg_catalog" | "information_schema")
            ) {
                found = true;
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A freshly planned statement, through the sandbox.
fn checked(plan: datafusion::error::Result<LogicalPlan>) -> Result<LogicalPlan, QueryError> {
    let plan = plan.map_err(QueryError::plan)?;
    read_only()
        .verify_plan(&plan)
        .map_err(QueryError::ReadOnly)?;
    Ok(plan)
}

/// The sandbox: a plan with DDL, DML, `COPY` or a statement (`SET`, `PREPARE`, transactions)
/// anywhere in it, subqueries and `EXPLAIN` included, is refused before it runs.
fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Binds `$1`/`$name` through DataFusion's parameter values, converting each JSON value to
/// the type the plan expects there (a string for a timestamp column becomes a timestamp).
fn bind(plan: LogicalPlan, params: &Params) -> Result<LogicalPlan, QueryError> {
    let types = plan.get_parameter_types().map_err(QueryError::plan)?;
    let convert = |id: &str, v: &serde_json::Value| -> Result<ScalarValue, QueryError> {
        let value = json_scalar(v).ok_or_else(|| {
            QueryError::Param(format!(
                "parameter {id}: {v} is not a string, number, boolean or null"
            ))
        })?;
        cast_param(id, value, &types)
    };
    let values = match params {
        Params::None if types.is_empty() => return Ok(plan),
        Params::Values(ParamValues::List(vs)) => ParamValues::List(
            vs.iter()
                .enumerate()
                .map(|(i, v)| cast_param(&format!("${}", i + 1), v.value.clone(), &types))
                .map(|r| r.map(Into::into))
                .collect::<Result<_, _>>()?,
        ),
        Params::Values(values) => values.clone(),
        Params::None => {
            return Err(QueryError::Param(format!(
                "the statement has parameters ({}) but none were given",
                sorted_keys(&types)
            )))
        }
        Params::Positional(vs) => ParamValues::List(
            vs.iter()
                .enumerate()
                .map(|(i, v)| convert(&format!("${}", i + 1), v).map(Into::into))
                .collect::<Result<_, _>>()?,
        ),
        Params::Named(vs) => ParamValues::Map(
            vs.iter()
                .map(|(k, v)| {
                    let id = format!("${}", k.trim_start_matches('$'));
                    convert(&id, v).map(|s| (k.trim_start_matches('$').to_string(), s.into()))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    plan.with_param_values(values)
        .map_err(|e| QueryError::Param(e.strip_backtrace()))
}

/// A typed value as the plan expects it at `id` (an Int64 where the plan compares with an
/// Int32 column, a string where it wants a timestamp).
fn cast_param(
    id: &str,
    value: ScalarValue,
    types: &std::collections::HashMap<String, Option<DataType>>,
) -> Result<ScalarValue, QueryError> {
    match types.get(id).cloned().flatten() {
        Some(t) if value.data_type() != t && !value.is_null() => value
            .cast_to(&t)
            .map_err(|e| QueryError::Param(format!("parameter {id}: {value} is not a {t}: {e}"))),
        Some(t) if value.is_null() => {
            ScalarValue::try_from(&t).map_err(|e| QueryError::Param(format!("parameter {id}: {e}")))
        }
        _ => Ok(value),
    }
}

fn sorted_keys<V>(m: &std::collections::HashMap<String, V>) -> String {
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys.join(", ")
}

fn json_scalar(v: &serde_json::Value) -> Option<ScalarValue> {
    Some(match v {
        serde_json::Value::Null => ScalarValue::Null,
        serde_json::Value::Bool(b) => ScalarValue::Boolean(Some(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => ScalarValue::Int64(Some(i)),
            None => ScalarValue::Float64(n.as_f64()),
        },
        serde_json::Value::String(s) => ScalarValue::Utf8(Some(s.clone())),
        _ => return None,
    })
}

async fn drive(
    planned: Planned,
    control: Control,
    tx: mpsc::Sender<Result<RecordBatch, QueryError>>,
    stats: Arc<Mutex<Stats>>,
) {
    let started = Instant::now();
    let closed = tx.clone();
    let plan_cell: Arc<Mutex<Option<Arc<dyn ExecutionPlan>>>> = Arc::default();
    let work = forward(
        planned,
        tx.clone(),
        Arc::clone(&stats),
        Arc::clone(&plan_cell),
    );
    let outcome = tokio::select! {
        r = work => r,
        _ = control.cancel.cancelled() => Err(QueryError::Cancelled),
        _ = tokio::time::sleep(control.timeout) => Err(QueryError::Timeout(control.timeout)),
        // Nobody reads the answer any more (the client went away): stop.
        _ = closed.closed() => Ok(()),
    };
    // The work future is dropped here: DataFusion's tasks are aborted with it.
    let plan = plan_cell.lock().unwrap_or_else(|e| e.into_inner()).take();
    {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        s.elapsed = started.elapsed();
        s.bytes_scanned = plan.as_deref().map(bytes_scanned).unwrap_or(0);
    }
    if let Err(e) = outcome {
        let _ = tx.send(Err(e)).await;
    }
}

async fn forward(
    planned: Planned,
    tx: mpsc::Sender<Result<RecordBatch, QueryError>>,
    stats: Arc<Mutex<Stats>>,
    plan_cell: Arc<Mutex<Option<Arc<dyn ExecutionPlan>>>>,
) -> Result<(), QueryError> {
    let task_ctx = Arc::new(planned.df.task_ctx());
    let plan = planned
        .df
        .create_physical_plan()
        .await
        .map_err(QueryError::plan)?;
    *plan_cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&plan));
    let mut stream =
        datafusion::physical_plan::execute_stream(plan, task_ctx).map_err(QueryError::execution)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let mut batch = to_plain(batch.map_err(QueryError::execution)?, &planned.schema)?;
        let n = batch.num_rows() as u64;
        let mut truncated = false;
        if let Some(max) = planned.max_rows {
            if rows + n > max {
                batch = batch.slice(0, (max - rows) as usize);
                truncated = true;
            }
        }
        rows += batch.num_rows() as u64;
        {
            let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
            s.rows = rows;
            s.truncated = truncated;
        }
        if batch.num_rows() > 0 && tx.send(Ok(batch)).await.is_err() {
            return Ok(());
        }
        if truncated {
            break;
        }
    }
    Ok(())
}

/// Answers use the classic string and binary types, which every Arrow, Parquet and BI reader
/// knows; DataFusion's Parquet scan produces the newer view types.
fn plain_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8View => Some(DataType::Utf8),
        DataType::BinaryView => Some(DataType::Binary),
        _ => None,
    }
}

fn plain_schema(schema: &arrow::datatypes::Schema) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| match plain_type(f.data_type()) {
            Some(t) => Arc::new(f.as_ref().clone().with_data_type(t)),
            None => Arc::clone(f),
        })
        .collect();
    Arc::new(arrow::datatypes::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ))
}

fn to_plain(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, QueryError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Execution(e.into()))?;
    RecordBatch::try_new(Arc::clone(schema), columns).map_err(|e| QueryError::Execution(e.into()))
}

/// The `bytes_scanned` metric summed over a physical plan.
pub fn bytes_scanned(plan: &dyn ExecutionPlan) -> u64 {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("bytes_scanned"))
        .map(|v| v.as_usize() as u64)
        .unwrap_or(0);
    own + plan
        .children()
        .iter()
        .map(|c| bytes_scanned(c.as_ref()))
        .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_lake::LakeConfig;

    fn control(timeout: Duration) -> Control {
        Control {
            cancel: CancellationToken::new(),
            timeout,
            runtime: None,
        }
    }

    async fn engine() -> (tempfile::TempDir, QueryEngine) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::connect(&LakeConfig::local(dir.path())).await.unwrap();
        (dir, QueryEngine::new(lake, Limits::default()).unwrap())
    }

    #[tokio::test]
    async fn read_only_and_clear_errors() {
        let (_dir, engine) = engine().await;
        assert!(engine.tables().await.unwrap().is_empty());
        let rows = engine.sql("SELECT 1 + 1 AS two").await.unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        for refused in [
            "CREATE TABLE t (x INT)",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "EXPLAIN ANALYZE COPY (SELECT 1) TO '/tmp/x.csv'",
            "PREPARE p AS SELECT 1",
        ] {
            let err = engine.sql(refused).await.unwrap_err();
            assert!(matches!(err, QueryError::ReadOnly(_)), "{refused}: {err}");
        }
        for bad in [
            "SELEC 1",
            "SELECT * FROM nope",
            "SELECT * FROM '/etc/passwd'",
        ] {
            let err = engine.sql(bad).await.unwrap_err();
            assert!(matches!(err, QueryError::Plan(_)), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn parameters_take_the_type_the_plan_expects() {
        let (_dir, engine) = engine().await;
        let planned = engine
            .plan(
                "SELECT CAST('2026-01-02T03:04:05Z' AS TIMESTAMP) > $1 AS later, $2 + 1 AS n",
                &Params::Positional(vec![
                    serde_json::json!("2026-01-01T00:00:00Z"),
                    serde_json::json!(41),
                ]),
                None,
            )
            .await
            .unwrap();
        let mut running = engine.run(planned, control(Duration::from_secs(10)));
        let batch = running.next().await.unwrap().unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string();
        assert!(text.contains("| true  | 42 |"), "{text}");
        let err = engine
            .plan("SELECT $1 + 1", &Params::None, None)
            .await
            .unwrap_err();
        assert!(matches!(err, QueryError::Param(_)), "{err}");
    }

    #[tokio::test]
    async fn a_timeout_or_a_cancel_ends_the_stream_with_its_error() {
        let (_dir, engine) = engine().await;
        let slow = "SELECT count(*) FROM generate_series(1, 100000000000) AS t(v) WHERE v % 7 = 3";
        let planned = engine.plan(slow, &Params::None, None).await.unwrap();
        let mut running = engine.run(planned, control(Duration::from_millis(200)));
        assert!(matches!(
            running.next().await,
            Some(Err(QueryError::Timeout(_)))
        ));
        let cancel = CancellationToken::new();
        let planned = engine.plan(slow, &Params::None, None).await.unwrap();
        let mut running = engine.run(
            planned,
            Control {
                cancel: cancel.clone(),
                timeout: Duration::from_secs(60),
                runtime: None,
            },
        );
        cancel.cancel();
        assert!(matches!(
            running.next().await,
            Some(Err(QueryError::Cancelled))
        ));
    }

    #[tokio::test]
    async fn rows_past_the_limit_are_cut_and_marked() {
        let (_dir, engine) = engine().await;
        let planned = engine
            .plan(
                "SELECT v FROM generate_series(1, 100000) AS t(v)",
                &Params::None,
                Some(10),
            )
            .await
            .unwrap();
        let mut running = engine.run(planned, control(Duration::from_secs(10)));
        let mut rows = 0;
        while let Some(b) = running.next().await {
            rows += b.unwrap().num_rows();
        }
        assert_eq!(rows, 10);
        assert!(running.stats().truncated);
    }
}

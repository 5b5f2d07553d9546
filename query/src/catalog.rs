//! The lake as a DataFusion schema: tables found lazily, kept open, brought up to date per
//! query by reading only the commits that are new.
//!
//! **Invariant:** a query sees every commit that landed before it was planned. Each lookup of a
//! table lists `_delta_log` from the version already held (one LIST request) and replays only
//! the new commits; the open snapshot is reused, never rebuilt from the first commit. The
//! table's [`FileIndex`] is rebuilt when its version moved, once, under the table's lock.
//!
//! The `logs` view is every data table's common columns plus `topic`, for questions across
//! topics; a topic that is itself named `logs` hides it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::{provider_as_source, TableType, ViewTable};
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{col, lit};
use deltalake::DeltaTable;
use loglake_lake::{Lake, LakeError, TableInfo, REJECTED_SUFFIX};
use loglake_schemas::PARTITION_COLUMNS;

use crate::prune;
use crate::scan::{self, FileIndex};

/// The name of the cross-topic view.
pub const LOGS_VIEW: &str = "logs";

/// Columns every data table has, in the `logs` view's order (then `topic`).
const LOGS_COLUMNS: [&str; 10] = [
    "timestamp",
    "level",
    "message",
    "attributes",
    "_kafka_partition",
    "_kafka_offset",
    "_kafka_timestamp",
    "host",
    "date",
    "hour",
];

/// A lookup of a name that is not a known table re-lists the lake at most this often.
const RELIST_AFTER: Duration = Duration::from_secs(1);

/// The `logs` view re-lists the lake (to include new topics) at most this often.
const LOGS_RELIST_AFTER: Duration = Duration::from_secs(10);

/// The lake's tables, opened on first use and shared by every query.
#[derive(Debug)]
pub struct LakeCatalog {
    lake: Lake,
    tables: RwLock<BTreeMap<String, Arc<Handle>>>,
    listed_at: Mutex<Option<Instant>>,
    relist: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
struct Handle {
    info: TableInfo,
    table: tokio::sync::Mutex<Option<Open>>,
}

/// A handle's open table and the file index of its loaded version (`None`: delta-rs scans it).
#[derive(Debug)]
struct Open {
    table: DeltaTable,
    index: Option<Arc<FileIndex>>,
}

/// A table as one query sees it: the provider, and the Delta version it reads.
#[derive(Debug, Clone)]
pub struct OpenTable {
    pub info: TableInfo,
    pub table: DeltaTable,
    pub version: u64,
    index: Option<Arc<FileIndex>>,
}

impl LakeCatalog {
    pub fn new(lake: Lake) -> Arc<Self> {
        Arc::new(Self {
            lake,
            tables: RwLock::new(BTreeMap::new()),
            listed_at: Mutex::new(None),
            relist: tokio::sync::Mutex::new(()),
        })
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// SQL names of the tables known so far (call [`LakeCatalog::list`] to look again).
    pub fn known(&self) -> Vec<TableInfo> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.values().map(|h| h.info.clone()).collect()
    }

    /// Lists the lake's tables now (one LIST of the root, one per table directory).
    pub async fn list(&self) -> Result<Vec<TableInfo>, LakeError> {
        let _one_at_a_time = self.relist.lock().await;
        let found = self.lake.list_tables().await?;
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        for info in &found {
            match tables.get(&info.sql_name) {
                Some(h) if h.info.dir == info.dir => {}
                Some(h) => {
                    tracing::warn!(table = %info.dir, other = %h.info.dir, sql_name = %info.sql_name,
                        "two tables share one SQL name; the first keeps it");
                }
                None => {
                    tables.insert(
                        info.sql_name.clone(),
                        Arc::new(Handle {
                            info: info.clone(),
                            table: tokio::sync::Mutex::new(None),
                        }),
                    );
                }
            }
        }
        tables.retain(|_, h| found.iter().any(|f| f.dir == h.info.dir));
        *self.listed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(tables.values().map(|h| h.info.clone()).collect())
    }

    fn handle(&self, sql_name: &str) -> Option<Arc<Handle>> {
        let tables = self.tables.read().unwrap_or_else(|e| e.into_inner());
        tables.get(sql_name).cloned()
    }

    /// The table called `sql_name`, up to date; `None` if the lake has no such table.
    pub async fn open(&self, sql_name: &str) -> Result<Option<OpenTable>, LakeError> {
        let handle = match self.handle(sql_name) {
            Some(h) => h,
            None => {
                let recent = self
                    .listed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some_and(|t| t.elapsed() < RELIST_AFTER);
                if recent {
                    return Ok(None);
                }
                self.list().await?;
                match self.handle(sql_name) {
                    Some(h) => h,
                    None => return Ok(None),
                }
            }
        };
        let mut guard = handle.table.lock().await;
        let open = match guard.as_mut() {
            Some(open) => {
                loglake_lake::commit::refresh(&mut open.table).await?;
                open
            }
            None => match self.lake.open_table(&handle.info.dir).await? {
                Some(table) => guard.insert(Open { table, index: None }),
                None => return Ok(None),
            },
        };
        let version = open.table.version().unwrap_or_default();
        if open.index.as_ref().is_none_or(|i| i.version() != version) {
            let started = Instant::now();
            open.index = FileIndex::build(&open.table, open.index.as_deref())
                .map_err(|e| LakeError::Delta {
                    table: handle.info.dir.clone(),
                    source: Box::new(e),
                })?
                .map(Arc::new);
            tracing::debug!(table = %handle.info.dir, version, files = open.index.as_ref().map(|i| i.len()),
                elapsed = ?started.elapsed(), "file index built");
        }
        Ok(Some(OpenTable {
            info: handle.info.clone(),
            version,
            table: open.table.clone(),
            index: open.index.clone(),
        }))
    }

    /// The DataFusion provider of a table: the Delta scan plus pruning from `timestamp`.
    pub async fn provider(&self, sql_name: &str) -> DfResult<Option<Arc<LakeTable>>> {
        let Some(open) = self.open(sql_name).await.map_err(external)? else {
            return Ok(None);
        };
        Ok(Some(lake_table(open).await?))
    }

    /// A table as it was at a version, or at a time (see [`AsOf`]); the shared snapshot is
    /// left as it is.
    pub async fn provider_as_of(
        &self,
        sql_name: &str,
        as_of: AsOf,
    ) -> DfResult<Option<Arc<LakeTable>>> {
        let Some(mut open) = self.open(sql_name).await.map_err(external)? else {
            return Ok(None);
        };
        let loaded = match as_of {
            AsOf::Version(v) => open.table.load_version(v).await,
            AsOf::Time(t) => open.table.load_with_datetime(t).await,
        };
        loaded.map_err(|e| {
            DataFusionError::Plan(format!(
                "table {sql_name} as of {as_of}: {e} (the table is at version {})",
                open.version
            ))
        })?;
        open.version = open.table.version().unwrap_or_default();
        open.index = FileIndex::build(&open.table, open.index.as_deref())
            .map_err(|e| DataFusionError::External(Box::new(e)))?
            .map(Arc::new);
        Ok(Some(lake_table(open).await?))
    }

    /// The `logs` view over every data table (the lake is listed again when the last listing
    /// is older than [`LOGS_RELIST_AFTER`]: a listing costs one request per table).
    async fn logs_view(&self) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let fresh = self
            .listed_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|t| t.elapsed() < LOGS_RELIST_AFTER);
        let infos = if fresh {
            self.known()
        } else {
            self.list().await.map_err(external)?
        };
        let mut plan: Option<LogicalPlanBuilder> = None;
        for info in infos.iter().filter(|i| !i.dir.ends_with(REJECTED_SUFFIX)) {
            let Some(table) = self.provider(&info.sql_name).await? else {
                continue;
            };
            let mut columns: Vec<Expr> = LOGS_COLUMNS.iter().map(|c| col(*c)).collect();
            columns.push(lit(info.dir.clone()).alias("topic"));
            let branch = LogicalPlanBuilder::scan(
                info.sql_name.as_str(),
                provider_as_source(table as Arc<dyn TableProvider>),
                None,
            )?
            .project(columns)?;
            plan = Some(match plan {
                None => branch,
                Some(p) => p.union(branch.build()?)?,
            });
        }
        let Some(plan) = plan else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ViewTable::new(plan.build()?, None))))
    }
}

async fn lake_table(open: OpenTable) -> DfResult<Arc<LakeTable>> {
    let inner = open.table.table_provider().await?;
    let schema = inner.schema();
    let by_time = schema.column_with_name(prune::TIME_COLUMN).is_some()
        && schema.column_with_name("hour").is_some()
        && !open.info.dir.ends_with(REJECTED_SUFFIX);
    let index = open.index.clone().filter(|i| scan::scannable(i, &schema));
    Ok(Arc::new(LakeTable {
        inner,
        by_time,
        index,
        open,
    }))
}

/// Which state of a table a query reads: `"app_logs@v42"` (version 42) or
/// `"app_logs@2026-11-30T12:00:00Z"` (the last version committed at or before that time,
/// RFC 3339), the convention of Delta Lake's SQL engines. Quoted, as `@` is not part of a
/// plain SQL identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    Time(chrono::DateTime<chrono::Utc>),
}

impl std::fmt::Display for AsOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Version(v) => write!(f, "version {v}"),
            Self::Time(t) => write!(f, "{}", t.to_rfc3339()),
        }
    }
}

/// Splits `name@v42` / `name@<RFC 3339 time>` into the table's name and [`AsOf`]; `None` for
/// a plain name. A suffix that is neither is an error, not a table name.
pub fn split_as_of(name: &str) -> DfResult<Option<(&str, AsOf)>> {
    let Some((table, at)) = name.rsplit_once('@') else {
        return Ok(None);
    };
    let bad = || {
        DataFusionError::Plan(format!(
            "table {name}: after '@' give a version (\"{table}@v42\") or an RFC 3339 time \
             (\"{table}@2026-11-30T12:00:00Z\")"
        ))
    };
    if let Some(v) = at.strip_prefix('v') {
        let v: u64 = v.parse().map_err(|_| bad())?;
        return Ok(Some((table, AsOf::Version(v))));
    }
    let t = chrono::DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
    Ok(Some((table, AsOf::Time(t.with_timezone(&chrono::Utc)))))
}

fn external(e: LakeError) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// [`LakeCatalog`] as DataFusion's `public` schema.
#[derive(Debug)]
pub struct LakeSchema(pub Arc<LakeCatalog>);

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.known().into_iter().map(|t| t.sql_name).collect();
        if !names.iter().any(|n| n == LOGS_VIEW) {
            names.push(LOGS_VIEW.into());
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some((table, as_of)) = split_as_of(name)? {
            let t = self.0.provider_as_of(table, as_of).await?;
            return Ok(t.map(|t| t as Arc<dyn TableProvider>));
        }
        if let Some(t) = self.0.provider(name).await? {
            return Ok(Some(t as Arc<dyn TableProvider>));
        }
        if name == LOGS_VIEW {
            return self.0.logs_view().await;
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        let name = match split_as_of(name) {
            Ok(Some((table, _))) => table,
            _ => name,
        };
        name == LOGS_VIEW || self.0.handle(name).is_some()
    }
}

/// A Delta table as one query reads it: through its [`FileIndex`] where it has one, else
/// through delta-rs's scan with the `date`/`hour` predicates implied by predicates on
/// `timestamp` (see [`prune`]) added, so Delta skips whole hours.
#[derive(Debug)]
pub struct LakeTable {
    inner: Arc<dyn TableProvider>,
    by_time: bool,
    index: Option<Arc<FileIndex>>,
    pub open: OpenTable,
}

#[async_trait]
impl TableProvider for LakeTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        match &self.index {
            Some(index) => Ok(filters
                .iter()
                .map(|f| {
                    if index.prunes_exactly(f) {
                        TableProviderFilterPushDown::Exact
                    } else {
                        TableProviderFilterPushDown::Inexact
                    }
                })
                .collect()),
            None => self.inner.supports_filters_pushdown(filters),
        }
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(index) = &self.index {
            let schema = self.inner.schema();
            return index
                .scan(&self.open.table, &schema, state, projection, filters, limit)
                .await;
        }
        let derived = if self.by_time {
            prune::partition_filters(filters)
        } else {
            Vec::new()
        };
        if derived.is_empty() {
            return self.inner.scan(state, projection, filters, limit).await;
        }
        // A time-bounded query: Delta skips files by partition values alone (cheap: no stats
        // evaluated over every file of the table). Filters on other columns are Inexact for
        // delta-rs, so DataFusion applies them after the scan anyway.
        let mut kept: Vec<Expr> = filters
            .iter()
            .filter(|f| {
                f.column_refs()
                    .iter()
                    .all(|c| PARTITION_COLUMNS.contains(&c.name.as_str()))
            })
            .cloned()
            .collect();
        kept.extend(derived);
        self.inner.scan(state, projection, &kept, limit).await
    }
}

/// The Delta tables (and versions) a plan reads, views included.
pub fn tables_read(plan: &LogicalPlan) -> Vec<(String, u64)> {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::datasource::source_as_provider;
    let mut out = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(t) = provider.downcast_ref::<LakeTable>() {
                    out.push((t.open.info.dir.clone(), t.open.version));
                } else if let Some(view) = provider.downcast_ref::<ViewTable>() {
                    out.extend(tables_read(view.logical_plan()));
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_travel_names() {
        assert_eq!(split_as_of("app_logs").unwrap(), None);
        assert_eq!(
            split_as_of("app_logs@v42").unwrap(),
            Some(("app_logs", AsOf::Version(42)))
        );
        let (table, at) = split_as_of("app_logs@2026-11-30T12:00:00+01:00")
            .unwrap()
            .unwrap();
        assert_eq!(table, "app_logs");
        assert_eq!(at.to_string(), "2026-11-30T11:00:00+00:00");
        for bad in [
            "app_logs@",
            "app_logs@v",
            "app_logs@v-1",
            "app_logs@yesterday",
        ] {
            let err = split_as_of(bad).unwrap_err().to_string();
            assert!(err.contains("after '@' give a version"), "{bad}: {err}");
        }
    }
}

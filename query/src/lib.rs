//! SQL over the lake: a DataFusion session with every Delta table of the lake registered
//! under its SQL name (topic lowercased, `[^a-z0-9_]` -> `_`).
//!
//! The session is read-only: DDL, DML and statements such as `SET` or `COPY` are refused at
//! planning time, and no table other than the lake's can be named. This crate is the future
//! home of the HTTP SQL API and the Postgres wire protocol; for now `loglake query` uses it.
//!
//! ```no_run
//! # async fn demo(lake: loglake_lake::Lake) -> Result<(), loglake_query::QueryError> {
//! let engine = loglake_query::QueryEngine::new(&lake).await?;
//! let batches = engine.sql("SELECT host, count(*) FROM app_logs GROUP BY host").await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext};
use loglake_lake::{Lake, LakeError, TableInfo};

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The SQL does not parse or plan: the user's to fix.
    #[error("invalid SQL")]
    Plan(#[source] DataFusionError),
    /// The SQL asks for something a read-only archive does not do.
    #[error("refused: loglake's SQL is read-only (no DDL, DML, COPY or SET)")]
    ReadOnly(#[source] DataFusionError),
    #[error("query failed")]
    Execution(#[source] DataFusionError),
    #[error(transparent)]
    Lake(#[from] LakeError),
}

/// A read-only SQL session over the lake's tables.
pub struct QueryEngine {
    ctx: SessionContext,
    tables: Vec<TableInfo>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("tables", &self.tables)
            .finish()
    }
}

impl QueryEngine {
    /// Opens the latest version of every table of the lake.
    pub async fn new(lake: &Lake) -> Result<Self, QueryError> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("loglake", "public");
        let ctx = SessionContext::new_with_config(config);
        let mut tables = Vec::new();
        for info in lake.list_tables().await? {
            if tables
                .iter()
                .any(|t: &TableInfo| t.sql_name == info.sql_name)
            {
                tracing::warn!(table = %info.dir, sql_name = %info.sql_name, "two tables share one SQL name; skipping the second");
                continue;
            }
            let Some(table) = lake.open_table(&info.dir).await? else {
                continue;
            };
            table
                .update_datafusion_session(&ctx.state())
                .map_err(|e| LakeError::delta(&info.dir, e))?;
            let provider = table
                .table_provider()
                .await
                .map_err(QueryError::Execution)?;
            ctx.register_table(info.sql_name.as_str(), Arc::clone(&provider))
                .map_err(QueryError::Execution)?;
            tables.push(info);
        }
        Ok(Self { ctx, tables })
    }

    pub fn tables(&self) -> &[TableInfo] {
        &self.tables
    }

    /// Plans and runs one read-only statement, collecting the result.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let df = self.ctx.sql_with_options(sql, options).await.map_err(|e| {
            let text = e.to_string();
            if text.contains("not supported")
                && (text.contains("DDL") || text.contains("DML") || text.contains("Statement"))
            {
                QueryError::ReadOnly(e)
            } else {
                QueryError::Plan(e)
            }
        })?;
        df.collect().await.map_err(QueryError::Execution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loglake_lake::LakeConfig;

    #[tokio::test]
    async fn read_only_and_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::connect(&LakeConfig::local(dir.path())).await.unwrap();
        let engine = QueryEngine::new(&lake).await.unwrap();
        assert!(engine.tables().is_empty());
        let rows = engine.sql("SELECT 1 + 1 AS two").await.unwrap();
        assert_eq!(rows[0].num_rows(), 1);
        for ddl in [
            "CREATE TABLE t (x INT)",
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "SET datafusion.execution.batch_size = 1",
        ] {
            let err = engine.sql(ddl).await.unwrap_err();
            assert!(matches!(err, QueryError::ReadOnly(_)), "{ddl}: {err}");
        }
        assert!(matches!(
            engine.sql("SELEC 1").await.unwrap_err(),
            QueryError::Plan(_)
        ));
        assert!(matches!(
            engine.sql("SELECT * FROM nope").await.unwrap_err(),
            QueryError::Plan(_)
        ));
    }
}

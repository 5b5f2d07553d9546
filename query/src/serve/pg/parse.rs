//! Statements as the Postgres front end parses them: Postgres's dialect, the driver-SQL
//! rewrites, the sandboxed plan of a query (its parameter and result types for `Describe`), or a
//! statement answered per connection.

use std::sync::Arc;

use arrow::datatypes::DataType;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, into_pg_type};
use async_trait::async_trait;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use pgwire::api::portal::Format;
use pgwire::api::results::FieldInfo;
use pgwire::api::stmt::QueryParser;
use pgwire::api::{ClientInfo, Type};
use pgwire::error::PgWireResult;

use super::rewrite::rewrite_for_datafusion;
use super::session::text_field;
use super::{query_error, user_error};
use crate::engine::QueryEngine;
use crate::error::QueryError;

/// A statement parsed by `Parse`: a plan that passed the sandbox, with its parameters still
/// unbound, or a statement answered per connection.
#[derive(Debug, Clone)]
pub(crate) enum PgStatement {
    Query(Arc<LogicalPlan>),
    Special(Box<Statement>),
}

#[derive(Debug)]
pub(crate) struct PgParser {
    pub(super) engine: Arc<QueryEngine>,
    pub(super) sql: PostgresCompatibilityParser,
}

impl PgParser {
    pub(super) fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let mut statements = self
            .sql
            .parse(sql)
            .map_err(|e| user_error("42601", format!("syntax error: {e}")))?;
        for statement in &mut statements {
            rewrite_for_datafusion(statement);
        }
        Ok(statements)
    }
}

fn is_special(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::Discard { .. }
            | Statement::Deallocate { .. }
            | Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::Copy { .. }
    )
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        self.engine.check_size(sql).map_err(|e| query_error(&e))?;
        let mut statements = self.parse(sql)?;
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        if is_special(&statement) {
            return Ok(Some(PgStatement::Special(Box::new(statement))));
        }
        let plan = self
            .engine
            .prepare_statement(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(|e| query_error(&e))?;
        Ok(Some(PgStatement::Query(Arc::new(plan))))
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match statement {
            PgStatement::Query(plan) => parameter_types(plan)?
                .iter()
                .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
                .collect(),
            PgStatement::Special(_) => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            PgStatement::Query(plan) => arrow_schema_to_pg_fields(
                &QueryEngine::result_schema(plan),
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            PgStatement::Special(s) => Ok(match s.as_ref() {
                Statement::ShowVariable { variable } => vec![text_field(
                    &variable
                        .iter()
                        .map(|v| v.value.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(" "),
                )],
                _ => Vec::new(),
            }),
        }
    }
}

/// The types of `$1..$n` in order, `None` where the plan does not tell.
pub(super) fn parameter_types(plan: &LogicalPlan) -> PgWireResult<Vec<Option<DataType>>> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| query_error(&QueryError::Plan(e)))?;
    let mut numbered: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (id, t) in types {
        let n = id
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                user_error(
                    "42P02",
                    format!("parameter {id}: the Postgres protocol numbers parameters $1, $2, ..."),
                )
            })?;
        numbered.push((n, t));
    }
    numbered.sort_by_key(|(n, _)| *n);
    let count = numbered.last().map_or(0, |(n, _)| *n);
    let mut out = vec![None; count];
    for (n, t) in numbered {
        out[n - 1] = t;
    }
    Ok(out)
}

//! Rewrites of the SQL drivers send on connect and when browsing, for what DataFusion does
//! not take as Postgres writes it. Each says why it is exact for loglake's catalog.

use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Statement};

/// `name(args...)` as SQL.
fn call(name: &str, args: Vec<SqlExpr>) -> SqlExpr {
    use datafusion::sql::sqlparser::ast::{
        Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments, Ident,
        ObjectName,
    };
    SqlExpr::Function(Function {
        name: ObjectName::from(Ident::new(name)),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: Vec::new(),
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: Vec::new(),
    })
}

/// Catalog tables that describe what no loglake column has: defaults, identity sequences,
/// collations other than the type's.
const NEVER_APPLIES: [&str; 3] = ["pg_attrdef", "pg_sequence", "pg_collation"];

/// What driver catalog queries need that DataFusion's SQL does not take as written:
///
/// - `x LIKE p ESCAPE '/'` (SQLAlchemy's inspector) becomes `x LIKE like_escape(p, '/')`, as
///   DataFusion's LIKE knows only the backslash escape.
/// - `CASE WHEN ... THEN (SELECT ... FROM pg_attrdef | pg_sequence | pg_collation WHERE
///   <correlated>) ELSE NULL END` becomes `NULL`: the lookups of a column's default, identity
///   sequence or non-default collation (SQLAlchemy's `get_columns`) are NULL for every loglake
///   column, and DataFusion cannot plan a correlated subquery inside `CASE`.
pub(super) fn rewrite_for_datafusion(statement: &mut Statement) {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, SetExpr, TableFactor, Value};
    let is_null = |e: &SqlExpr| matches!(e, SqlExpr::Value(v) if v.value == Value::Null);
    let never_applies = |e: &SqlExpr| {
        let SqlExpr::Subquery(q) = e else {
            return false;
        };
        let SetExpr::Select(select) = q.body.as_ref() else {
            return false;
        };
        select
            .from
            .iter()
            .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
            .any(|r| match r {
                TableFactor::Table { name, .. } => {
                    name.0.last().and_then(|p| p.as_ident()).is_some_and(|i| {
                        NEVER_APPLIES.contains(&i.value.to_ascii_lowercase().as_str())
                    })
                }
                _ => false,
            })
    };
    let _ = visit_expressions_mut(statement, |expr| {
        match expr {
            SqlExpr::Like {
                pattern,
                escape_char,
                ..
            }
            | SqlExpr::ILike {
                pattern,
                escape_char,
                ..
            } => {
                let custom = escape_char
                    .as_ref()
                    .and_then(|v| v.value.clone().into_string())
                    .filter(|c| c != "\\");
                if let Some(c) = custom {
                    let original = std::mem::replace(pattern.as_mut(), SqlExpr::value(Value::Null));
                    **pattern = call(
                        "like_escape",
                        vec![original, SqlExpr::value(Value::SingleQuotedString(c))],
                    );
                    *escape_char = None;
                }
            }
            SqlExpr::Case {
                conditions,
                else_result,
                ..
            } => {
                let results_never_apply = !conditions.is_empty()
                    && conditions
                        .iter()
                        .all(|w| is_null(&w.result) || never_applies(&w.result))
                    && conditions.iter().any(|w| never_applies(&w.result))
                    && else_result.as_deref().is_none_or(is_null);
                if results_never_apply {
                    *expr = SqlExpr::value(Value::Null);
                }
            }
            _ => {}
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

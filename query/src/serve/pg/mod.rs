//! The Postgres wire protocol on `loglake serve` (`serve.pg_listen`), for the BI tools,
//! drivers and `psql` that speak it.
//!
//! Taken, not written: the protocol (`pgwire`: startup, simple and extended query, portals,
//! cancel requests, TLS), the `pg_catalog` tables and functions drivers query on connect and
//! when browsing, and the rewrites of Postgres-only syntax (`datafusion-pg-catalog`, installed
//! in [`QueryEngine::new`]), and the Arrow <-> Postgres type mapping, row encoding and
//! parameter decoding (`arrow-pg`). Written here: every statement goes through the shared
//! engine ([`QueryEngine::prepare_statement`], [`QueryEngine::bind`], [`QueryEngine::run`]) and
//! [`Admission`], so the sandbox, the limits, the metrics and `DELETE /v1/queries/{id}` are the
//! HTTP API's; password auth against `serve.tokens`; cancel requests and `statement_timeout`
//! that stop the running query; `SET`/`SHOW`/transaction statements answered per connection
//! (never applied to the shared session); errors with SQLSTATEs.
//!
//! `datafusion-postgres` itself runs statements on a `SessionContext` directly (no per-query
//! memory pool, row limit, admission or cancel of a streaming answer), and its `SET` fallback
//! changes the shared session for every user, so it is not used.
//!
//! Code map: `listen.rs` (accept, TLS, the watch for clients gone mid-query), `parse.rs`
//! (statements: dialect, rewrites, sandboxed plan, parameter and result types), `rewrite.rs`
//! (the driver-SQL rewrites), `session.rs` (per-connection `SET`/`SHOW`), this file (the
//! protocol handlers: auth, cancel, execution, errors with SQLSTATEs).
//!
//! [`QueryEngine::new`]: crate::engine::QueryEngine::new
//! [`QueryEngine::prepare_statement`]: crate::engine::QueryEngine::prepare_statement
//! [`QueryEngine::bind`]: crate::engine::QueryEngine::bind
//! [`QueryEngine::run`]: crate::engine::QueryEngine::run

use std::collections::HashMap;
use std::fmt::Debug;

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::datatypes::DataType;
use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::sink::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::startup::{Authentication, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio_util::sync::CancellationToken;

use crate::engine::Params;
use crate::error::QueryError;
use crate::serve::admit::{busy_message, token_ok, Admission, Refused, Started};
use crate::serve::http::AppState;

mod listen;
mod parse;
mod rewrite;
mod session;

use parse::{parameter_types, PgParser, PgStatement};

pub(crate) use listen::{serve_pg, tls_acceptor};

use session::{set_variable, show_variable, statement_timeout};

/// What `SHOW server_version` and the startup parameters say: a Postgres version drivers
/// accept (they parse it), then what answers.
pub const SERVER_VERSION: &str = concat!("16.6 (loglake ", env!("CARGO_PKG_VERSION"), ")");

struct PgFactory(Arc<PgHandlers>);

impl PgWireServerHandlers for PgFactory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.0)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.0)
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::clone(&self.0)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::clone(&self.0)
    }
}

/// The query a connection runs now, for cancel requests.
#[derive(Debug, Default)]
struct Connection {
    current: Mutex<Option<CancellationToken>>,
}

/// pid -> (secret key, connection): what a cancel request names.
type Connections = Arc<Mutex<HashMap<i32, (i32, Arc<Connection>)>>>;

/// Removes a connection from the cancel table when its session ends.
struct Registered {
    pid: i32,
    table: Connections,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pid);
    }
}

struct PgHandlers {
    state: Arc<AppState>,
    parser: Arc<PgParser>,
    /// pid -> (secret key, connection): what a cancel request names.
    connections: Connections,
    next_pid: AtomicI32,
    queries: AtomicU64,
    parameters: DefaultServerParameterProvider,
}

impl PgHandlers {
    fn new(state: Arc<AppState>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        Self {
            parser: Arc::new(PgParser {
                engine: Arc::clone(&state.engine),
                sql: PostgresCompatibilityParser::new(),
            }),
            state,
            connections: Arc::default(),
            next_pid: AtomicI32::new(std::process::id() as i32 % 10_000 * 1_000 + 1),
            queries: AtomicU64::new(0),
            parameters,
        }
    }

    async fn login<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        let secret = uuid::Uuid::new_v4().as_u128() as i32;
        client.set_pid_and_secret_key(pid, SecretKey::I32(secret));
        let connection = Arc::new(Connection::default());
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pid, (secret, Arc::clone(&connection)));
        client
            .session_extensions()
            .insert::<Arc<Connection>>(connection);
        client.session_extensions().insert(Registered {
            pid,
            table: Arc::clone(&self.connections),
        });
        finish_authentication(client, &self.parameters).await
    }

    /// Runs a planned statement through admission and the engine; the rows stream to the
    /// client as the engine produces them.
    async fn execute<C>(
        &self,
        client: &C,
        plan: LogicalPlan,
        params: Params,
        format: &Format,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ?Sized,
    {
        let (pid, _) = client.pid_and_secret_key();
        let n = self.queries.fetch_add(1, Ordering::Relaxed);
        let admission = match Admission::admit(&self.state, format!("pg-{pid}-{n}"), "postgres") {
            Ok(a) => a,
            Err(Refused::Busy | Refused::DuplicateId) => {
                return Err(user_error("53300", busy_message(&self.state)));
            }
        };
        if let Some(connection) = client.session_extensions().get::<Arc<Connection>>() {
            *connection.current.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(admission.cancel.clone());
        }
        let limit = self.state.config.query_timeout;
        let timeout = statement_timeout(client).map_or(limit, |t| t.min(limit));
        // Errors before the first row get an ErrorResponse instead of a RowDescription.
        let started = Started::start(&self.state, admission, plan, params, timeout)
            .await
            .map_err(|e| query_error(&e))?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(
            &started.running.schema,
            format,
            Some(options),
        )?);
        let rows = Rows {
            started,
            fields: Arc::clone(&fields),
            current: None,
        };
        let stream = futures::stream::unfold(rows, |mut r| async move {
            let row = r.next_row().await?;
            Some((row, r))
        });
        Ok(Response::Query(QueryResponse::new(fields, stream)))
    }

    /// `SET`, `SHOW`, transactions and the other statements a driver sends that are not
    /// queries: answered per connection, never by the shared session.
    async fn special<C>(
        &self,
        client: &mut C,
        statement: &Statement,
    ) -> Option<PgWireResult<Response>>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        Some(match statement {
            Statement::StartTransaction { .. } => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            Statement::Commit { .. } => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
            Statement::Rollback {
                savepoint: Some(_), ..
            } => Ok(Response::Execution(Tag::new("ROLLBACK"))),
            Statement::Rollback { .. } => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
            // Nothing is written, so a savepoint has nothing to keep (SQLAlchemy and psycopg
            // nest transactions with them).
            Statement::Savepoint { .. } => Ok(Response::Execution(Tag::new("SAVEPOINT"))),
            Statement::ReleaseSavepoint { .. } => Ok(Response::Execution(Tag::new("RELEASE"))),
            Statement::Discard { .. } => Ok(Response::Execution(Tag::new("DISCARD ALL"))),
            Statement::Deallocate { .. } => Ok(Response::Execution(Tag::new("DEALLOCATE"))),
            Statement::Set(set) => set_variable(client, set).await,
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|v| v.value.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                show_variable(client, &name)
            }
            Statement::Copy { .. } => Err(query_error(&QueryError::ReadOnly(
                DataFusionError::Plan("COPY is not allowed".into()),
            ))),
            _ => return None,
        })
    }
}

#[async_trait]
impl StartupHandler for PgHandlers {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if self.state.config.tokens.is_empty() {
                    self.login(client).await?;
                } else {
                    client.set_state(PgWireConnectionState::AuthenticationInProgress);
                    client
                        .send(PgWireBackendMessage::Authentication(
                            Authentication::CleartextPassword,
                        ))
                        .await?;
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(pwd) => {
                let pwd = pwd.into_password()?;
                if token_ok(&self.state.config, Some(pwd.password.trim())) {
                    self.login(client).await?;
                } else {
                    self.state.metrics.unauthorized.inc();
                    let user = client.metadata().get("user").cloned().unwrap_or_default();
                    tracing::info!(%user, "postgres: password refused");
                    return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                        "FATAL".into(),
                        "28P01".into(),
                        format!(
                            "password authentication failed for user \"{user}\": the password must be one of serve.tokens"
                        ),
                    ))));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[async_trait]
impl CancelHandler for PgHandlers {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let found = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&request.pid)
            .cloned();
        let Some((secret, connection)) = found else {
            return;
        };
        if !request.secret_key.eq_value(&SecretKey::I32(secret)) {
            tracing::info!(
                pid = request.pid,
                "postgres: cancel request with a wrong key ignored"
            );
            return;
        }
        let token = connection
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(token) = token {
            tracing::info!(pid = request.pid, "postgres: query cancelled by the client");
            token.cancel();
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for PgHandlers {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.state
            .engine
            .check_size(query)
            .map_err(|e| query_error(&e))?;
        let statements = self.parser.parse(query)?;
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match self.special(client, &statement).await {
                Some(r) => r,
                None => match self
                    .state
                    .engine
                    .prepare_statement(DfStatement::Statement(Box::new(statement)))
                    .await
                {
                    Ok(plan) => {
                        self.execute(client, plan, Params::None, &Format::UnifiedText)
                            .await
                    }
                    Err(e) => Err(query_error(&e)),
                },
            };
            match response {
                Ok(r) => responses.push(r),
                // Like Postgres: the statements after a failed one do not run.
                Err(PgWireError::UserError(info)) if !responses.is_empty() => {
                    responses.push(Response::Error(info));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgHandlers {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            PgStatement::Special(statement) => match self.special(client, statement).await {
                Some(r) => r,
                None => Ok(Response::EmptyQuery),
            },
            PgStatement::Query(plan) => {
                let inferred = parameter_types(plan)?;
                let wire: Vec<Type> = inferred
                    .iter()
                    .map(|t| t.as_ref().map_or(Ok(Type::UNKNOWN), into_pg_type))
                    .collect::<PgWireResult<_>>()?;
                let inferred_refs: Vec<Option<&DataType>> =
                    inferred.iter().map(Option::as_ref).collect();
                let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
                let values =
                    deserialize_parameters_with_server_types(portal, &inferred_refs, &wire_refs)?;
                let params = if inferred.is_empty() {
                    Params::None
                } else {
                    Params::Values(values)
                };
                self.execute(
                    client,
                    plan.as_ref().clone(),
                    params,
                    &portal.result_column_format,
                )
                .await
            }
        }
    }
}

/// The rows of a running query, encoded as the client asked (text or binary per column).
struct Rows {
    started: Started,
    fields: Arc<Vec<FieldInfo>>,
    current: Option<Box<dyn Iterator<Item = PgWireResult<DataRow>> + Send>>,
}

impl Rows {
    async fn next_row(&mut self) -> Option<PgWireResult<DataRow>> {
        loop {
            if let Some(row) = self.current.as_mut().and_then(Iterator::next) {
                return Some(row);
            }
            match self.started.next().await? {
                Ok(batch) => {
                    self.current = Some(encode_recordbatch(Arc::clone(&self.fields), batch));
                }
                Err(e) => return Some(Err(query_error(&e))),
            }
        }
    }
}

pub(super) fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message,
    )))
}

/// A query error as Postgres reports it: its SQLSTATE, so drivers raise the right class.
pub(super) fn query_error(err: &QueryError) -> PgWireError {
    let code = match err {
        QueryError::Plan(e) => match e.find_root() {
            DataFusionError::SQL(..) => "42601",
            DataFusionError::SchemaError(..) => "42703",
            DataFusionError::NotImplemented(_) => "0A000",
            DataFusionError::Plan(m) if m.contains("table") && m.contains("not found") => "42P01",
            _ => "42000",
        },
        QueryError::Param(_) => "22023",
        QueryError::ReadOnly(_) => "42501",
        QueryError::TooLarge { .. } => "54000",
        QueryError::ResourcesExhausted(_) => "53200",
        QueryError::Timeout(_) | QueryError::Cancelled => "57014",
        QueryError::Execution(_) | QueryError::Lake(_) => "XX000",
    };
    let message = match err {
        QueryError::Timeout(_) => format!("canceling statement due to statement timeout ({err})"),
        QueryError::Cancelled => "canceling statement due to user request".into(),
        _ => err.to_string(),
    };
    user_error(code, message)
}

//! Arrow Flight SQL on `loglake serve` (`serve.flight_listen`), for ADBC, the Flight SQL JDBC
//! driver and the BI tools built on them.
//!
//! Taken, not written: gRPC (`tonic`) and the Flight SQL protocol — command decoding, the
//! metadata builders, Arrow IPC framing (`arrow-flight`). Written here: the
//! `FlightSqlService` over the shared engine — every statement through
//! [`QueryEngine::prepare`], [`QueryEngine::bind`] and [`Admission`], so the sandbox, limits,
//! metrics and tokens are the HTTP API's; results streamed batch by batch as the engine
//! produces them; prepared statements with parameters; `GetTables`/`GetDbSchemas`/
//! `GetCatalogs`/`GetSqlInfo`. `datafusion-flight-sql-server` runs statements on a
//! `SessionContext` directly (no per-query pool, limits or admission) and compiles Substrait,
//! so it is not used.
//!
//! Auth: `authorization: Bearer <token>` on every call, or a handshake with Basic auth whose
//! password is a token (ADBC's `username`/`password` options), which answers with the bearer
//! header clients then send.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandStatementQuery, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine as _;
use bytes::Bytes;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use indexmap::IndexMap;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{Params, QueryEngine};
use crate::error::QueryError;
use crate::serve::admit::{busy_message, token_ok, Admission, Refused, Started};
use crate::serve::http::AppState;
use crate::serve::metrics::Protocol;

/// Prepared statements a service keeps; past it, the oldest are forgotten (clients close
/// theirs; ones that never do must not grow the service without bound).
const MAX_PREPARED: usize = 4096;
const CATALOG: &str = "loglake";
const SCHEMA: &str = "public";

type DoGetStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// Serves Flight SQL on `listener` until `shutdown`.
pub(crate) async fn serve_flight(
    state: Arc<AppState>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let service = FlightSqlServiceImpl {
        state: Arc::clone(&state),
        prepared: Mutex::default(),
    };
    let counted = Arc::clone(&state);
    let incoming = tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .inspect(move |c| {
            if c.is_ok() {
                // Accepted only: tonic owns the sockets, so open ones are not counted.
                counted
                    .metrics
                    .connections
                    .get_or_create(&Protocol {
                        protocol: "flight_sql".into(),
                    })
                    .inc();
            }
        });
    tonic::transport::Server::builder()
        .add_service(FlightServiceServer::new(service).max_decoding_message_size(64 << 20))
        .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
        .await
}

#[derive(Debug, Clone)]
struct Prepared {
    plan: Arc<LogicalPlan>,
    /// Bound by the last `DoPut`: one row, a value per parameter.
    params: Option<Vec<ScalarValue>>,
}

struct FlightSqlServiceImpl {
    state: Arc<AppState>,
    prepared: Mutex<IndexMap<Bytes, Prepared>>,
}

impl FlightSqlServiceImpl {
    fn engine(&self) -> &QueryEngine {
        &self.state.engine
    }

    /// Every call but the handshake carries a bearer token (when tokens are configured).
    #[allow(clippy::result_large_err)]
    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        if self.state.config.tokens.is_empty() {
            return Ok(());
        }
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if token_ok(&self.state.config, presented) {
            return Ok(());
        }
        self.state.metrics.unauthorized.inc();
        Err(Status::unauthenticated(if presented.is_some() {
            "the bearer token is not valid"
        } else {
            "missing authorization: Bearer <token> (or a handshake with a token as password)"
        }))
    }

    fn prepared(&self, handle: &[u8]) -> Result<Prepared, Status> {
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(handle)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(
                    "no such prepared statement (closed, or forgotten after a restart)",
                )
            })
    }

    async fn plan(&self, sql: &str) -> Result<LogicalPlan, Status> {
        self.engine().prepare(sql).await.map_err(|e| status(&e))
    }

    /// Runs a plan through admission and the engine; the batches stream as they come.
    async fn execute(&self, plan: LogicalPlan, params: Params) -> Result<DoGetStream, Status> {
        let id = format!("flight-{}", uuid::Uuid::new_v4());
        let admission = match Admission::admit(&self.state, id, "flight_sql") {
            Ok(a) => a,
            Err(Refused::Busy | Refused::DuplicateId) => {
                return Err(Status::resource_exhausted(busy_message(&self.state)))
            }
        };
        let timeout = self.state.config.query_timeout;
        let started = Started::start(&self.state, admission, plan, params, timeout)
            .await
            .map_err(|e| status(&e))?;
        let schema = Arc::new(hydrated(&started.running.schema));
        let batches = futures::stream::unfold(started, |mut s| async move {
            let item = s
                .next()
                .await?
                .map_err(|e| FlightError::Tonic(Box::new(status(&e))));
            Some((item, s))
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Box::pin(stream))
    }

    /// The `FlightInfo` of a metadata command: its ticket is the command itself.
    #[allow(clippy::result_large_err)]
    fn command_info(
        &self,
        request: Request<FlightDescriptor>,
        schema: &Schema,
        command: impl ProstMessageExt,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        self.info(
            schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    fn info(
        &self,
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }
}

/// A query error as a gRPC status, so clients raise the right class.
fn status(err: &QueryError) -> Status {
    let message = err.to_string();
    match err {
        QueryError::Plan(_) | QueryError::Param(_) => Status::invalid_argument(message),
        QueryError::ReadOnly(_) => Status::permission_denied(message),
        QueryError::TooLarge { .. } => Status::out_of_range(message),
        QueryError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        QueryError::Timeout(_) => Status::deadline_exceeded(message),
        QueryError::Cancelled => Status::cancelled(message),
        QueryError::Execution(_) | QueryError::Lake(_) => Status::internal(message),
    }
}

/// The parameters of a plan as a schema (`$1`, `$2`, ...), for `CreatePreparedStatement`.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan
        .get_parameter_types()
        .map_err(|e| status(&QueryError::Plan(e)))?;
    let mut fields: Vec<(usize, Field)> = types
        .into_iter()
        .map(|(id, t)| {
            let n = id
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or(usize::MAX);
            (n, Field::new(id, t.unwrap_or(DataType::Utf8), true))
        })
        .collect();
    fields.sort_by_key(|(n, _)| *n);
    Ok(Schema::new(
        fields.into_iter().map(|(_, f)| f).collect::<Vec<_>>(),
    ))
}

/// The schema clients receive: Flight sends dictionary columns (the partition columns)
/// hydrated to their values, so `FlightInfo` and prepared statements must say so too.
fn hydrated(schema: &Schema) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Dictionary(_, values) => {
                f.as_ref().clone().with_data_type(values.as_ref().clone())
            }
            _ => f.as_ref().clone(),
        })
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn ipc_schema(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &Default::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("encoding a schema: {e}"))
        })?;
    Ok(bytes)
}

fn sql_info() -> &'static SqlInfoData {
    static INFO: std::sync::OnceLock<SqlInfoData> = std::sync::OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "loglake");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.build().expect("static SqlInfo builds")
    })
}

fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, impl Into<FlightError>>) -> DoGetStream {
    let batch = batch.map_err(Into::into);
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch }))
        .map_err(Status::from);
    Box::pin(stream)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServiceImpl {
    type FlightService = FlightSqlServiceImpl;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let token = if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            decoded.split_once(':').map(|(_, pass)| pass.to_string())
        } else {
            header.strip_prefix("Bearer ").map(|t| t.trim().to_string())
        };
        if !token_ok(&self.state.config, token.as_deref()) {
            self.state.metrics.unauthorized.inc();
            return Err(Status::unauthenticated(
                "the token (the password, with Basic auth) is not one of serve.tokens",
            ));
        }
        let token = token.unwrap_or_default();
        let output = futures::stream::iter([Ok(HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::from(token.clone()),
        })]);
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(output));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::invalid_argument("the token is not a valid header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let plan = self.plan(&query.query).await?;
        let schema = hydrated(&QueryEngine::result_schema(&plan));
        let ticket = TicketStatementQuery {
            statement_handle: Bytes::from(query.query.into_bytes()),
        }
        .as_any()
        .encode_to_vec();
        self.info(&schema, ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let sql = std::str::from_utf8(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("the ticket is not a statement"))?;
        let plan = self.plan(sql).await?;
        Ok(Response::new(self.execute(plan, Params::None).await?))
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let plan = self.plan(&query.query).await?;
        let result = ActionCreatePreparedStatementResult {
            prepared_statement_handle: Bytes::new(),
            dataset_schema: ipc_schema(&hydrated(&QueryEngine::result_schema(&plan)))?,
            parameter_schema: ipc_schema(&parameter_schema(&plan)?)?,
        };
        let handle = Bytes::from(uuid::Uuid::new_v4().to_string().into_bytes());
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        if prepared.len() >= MAX_PREPARED {
            prepared.shift_remove_index(0);
        }
        prepared.insert(
            handle.clone(),
            Prepared {
                plan: Arc::new(plan),
                params: None,
            },
        );
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle,
            ..result
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)?;
        self.prepared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shift_remove(&query.prepared_statement_handle);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let handle = query.prepared_statement_handle;
        self.prepared(&handle)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| Status::invalid_argument(format!("the parameters: {e}")))?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let batch = batches.into_iter().find(|b| b.num_rows() > 0);
        let values = match (rows, batch) {
            (1, Some(batch)) => batch
                .columns()
                .iter()
                .map(|c| ScalarValue::try_from_array(c, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Status::invalid_argument(format!("the parameters: {e}")))?,
            (0, _) => Vec::new(),
            (n, _) => {
                return Err(Status::invalid_argument(format!(
                    "{n} rows of parameters: loglake runs a prepared query with one row of parameters at a time"
                )))
            }
        };
        let mut prepared = self.prepared.lock().unwrap_or_else(|e| e.into_inner());
        let entry = prepared
            .get_mut(&handle)
            .ok_or_else(|| Status::not_found("no such prepared statement"))?;
        entry.params = Some(values);
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let prepared = self.prepared(&query.prepared_statement_handle)?;
        let schema = hydrated(&QueryEngine::result_schema(&prepared.plan));
        self.info(
            &schema,
            query.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let prepared = self.prepared(&query.prepared_statement_handle)?;
        let params = match prepared.params {
            Some(values) if !values.is_empty() => Params::Values(ParamValues::List(
                values.into_iter().map(Into::into).collect(),
            )),
            _ => Params::None,
        };
        let plan = prepared.plan.as_ref().clone();
        Ok(Response::new(self.execute(plan, params).await?))
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.command_info(request, &query.into_builder().schema(), query)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        let schema = builder.schema();
        Ok(Response::new(one_batch(schema, builder.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(request, &schema, query)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        let schema = builder.schema();
        Ok(Response::new(one_batch(schema, builder.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.command_info(request, &schema, query)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        let mut names: Vec<(String, &str)> = self
            .engine()
            .tables()
            .await
            .map_err(|e| status(&e))?
            .into_iter()
            .map(|t| (t.sql_name, "TABLE"))
            .collect();
        names.push((crate::catalog::LOGS_VIEW.to_string(), "VIEW"));
        for (name, kind) in names {
            let schema = if include_schema {
                let schema = self
                    .engine()
                    .table_schema(&name)
                    .await
                    .map_err(|e| status(&e))?;
                hydrated(&schema)
            } else {
                Schema::empty()
            };
            builder
                .append(CATALOG, SCHEMA, &name, kind, &schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = builder.schema();
        Ok(Response::new(one_batch(schema, builder.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
        self.command_info(request, &schema, query)
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let schema = Arc::new(Schema::new(vec![Field::new(
            "table_type",
            DataType::Utf8,
            false,
        )]));
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                "TABLE", "VIEW",
            ]))],
        );
        Ok(Response::new(one_batch(schema, batch)))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        self.command_info(request, &schema, query)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let builder = query.into_builder(sql_info());
        let schema = builder.schema();
        Ok(Response::new(one_batch(schema, builder.build())))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        Err(Status::unimplemented(format!(
            "{} is not supported by loglake",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

impl std::fmt::Debug for FlightSqlServiceImpl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlightSqlServiceImpl").finish()
    }
}

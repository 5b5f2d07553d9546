//! `/v1/sql` and `/v1/queries/{id}`: admission, planning, ETags, answers streamed or
//! buffered, cancellation.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::engine::{Control, Params, Running};
use crate::error::QueryError;
use crate::format::{error_body, Encoder, Format};
use crate::serve::admit::{busy_message, Admission, Refused};
use crate::serve::http::{AppState, QUERY_ID_HEADER, TRUNCATED_HEADER};

// /v1/sql

/// A query request, from the query string (GET), a JSON body, or SQL text plus the query
/// string (POST).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    #[serde(default)]
    sql: String,
    /// `[v1, v2]` for `$1, $2`, or `{"name": v}` for `$name`. In a query string: JSON text.
    #[serde(default)]
    params: Option<serde_json::Value>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    max_rows: Option<u64>,
    #[serde(default)]
    query_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SqlQueryString {
    sql: Option<String>,
    params: Option<String>,
    format: Option<String>,
    timeout_ms: Option<u64>,
    max_rows: Option<u64>,
    query_id: Option<String>,
}

impl SqlQueryString {
    fn into_request(self) -> Result<SqlRequest, String> {
        let params = match self.params {
            None => None,
            Some(text) => {
                Some(serde_json::from_str(&text).map_err(|e| format!("params is not JSON: {e}"))?)
            }
        };
        Ok(SqlRequest {
            sql: self.sql.unwrap_or_default(),
            params,
            format: self.format,
            timeout_ms: self.timeout_ms,
            max_rows: self.max_rows,
            query_id: self.query_id,
        })
    }
}

pub(crate) async fn sql_get(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SqlQueryString>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let request = match query {
        Ok(Query(q)) => q.into_request(),
        Err(e) => Err(e.body_text()),
    };
    match request {
        Ok(r) => run_sql(state, r, headers, true).await,
        Err(message) => bad_request(&headers, "bad_request", &message),
    }
}

pub(crate) async fn sql_post(
    State(state): State<Arc<AppState>>,
    query: Result<Query<SqlQueryString>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let from_query = match query {
        Ok(Query(q)) => q.into_request(),
        Err(e) => Err(e.body_text()),
    };
    let mut request = match from_query {
        Ok(r) => r,
        Err(message) => return bad_request(&headers, "bad_request", &message),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/sql")
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        match serde_json::from_slice::<SqlRequest>(&body) {
            Ok(r) => {
                request = SqlRequest {
                    format: r.format.or(request.format),
                    timeout_ms: r.timeout_ms.or(request.timeout_ms),
                    max_rows: r.max_rows.or(request.max_rows),
                    query_id: r.query_id.or(request.query_id),
                    params: r.params.or(request.params),
                    sql: r.sql,
                }
            }
            Err(e) => {
                return bad_request(&headers, "bad_request", &format!("the JSON body: {e}"));
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(sql) => request.sql = sql,
            Err(_) => {
                return bad_request(&headers, "bad_request", "the SQL body is not UTF-8");
            }
        }
    }
    run_sql(state, request, headers, false).await
}

fn bad_request(headers: &HeaderMap, code: &str, message: &str) -> Response {
    let id = header_query_id(headers).unwrap_or_default();
    let mut r = (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": {"code": code, "message": message, "query_id": id}})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&id) {
        r.headers_mut().insert(QUERY_ID_HEADER, v);
    }
    r
}

fn header_query_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(QUERY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn valid_query_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub fn status_of(err: &QueryError) -> StatusCode {
    match err {
        QueryError::Plan(_) | QueryError::Param(_) => StatusCode::BAD_REQUEST,
        QueryError::ReadOnly(_) => StatusCode::FORBIDDEN,
        QueryError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        QueryError::ResourcesExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        QueryError::Cancelled => StatusCode::CONFLICT,
        QueryError::Execution(_) | QueryError::Lake(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn error_response(err: &QueryError, id: &str) -> Response {
    let status = status_of(err);
    if status.is_server_error() {
        tracing::warn!(query_id = %id, error = %err, "query failed");
    }
    let mut r = (status, Json(error_body(err, id))).into_response();
    if let Ok(v) = HeaderValue::from_str(id) {
        r.headers_mut().insert(QUERY_ID_HEADER, v);
    }
    r
}

async fn run_sql(
    state: Arc<AppState>,
    request: SqlRequest,
    headers: HeaderMap,
    is_get: bool,
) -> Response {
    let id = match request
        .query_id
        .clone()
        .or_else(|| header_query_id(&headers))
    {
        Some(id) if valid_query_id(&id) => id,
        Some(_) => {
            return bad_request(
                &HeaderMap::new(),
                "bad_request",
                "query_id: 1-128 characters of [A-Za-z0-9-_.:]",
            )
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    let format = match request.format.as_deref() {
        Some(name) => match Format::from_name(name) {
            Some(f) => f,
            None => {
                return bad_request(
                    &headers,
                    "bad_request",
                    &format!("format {name:?}: one of json, ndjson, csv, arrow, parquet"),
                )
            }
        },
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .and_then(Format::from_accept)
            .unwrap_or(Format::Json),
    };
    let params = match &request.params {
        None | Some(serde_json::Value::Null) => Params::None,
        Some(serde_json::Value::Array(vs)) => Params::Positional(vs.clone()),
        Some(serde_json::Value::Object(m)) => {
            Params::Named(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }
        Some(other) => {
            return error_response(
                &QueryError::Param(format!(
                    "params must be a list (for $1, $2, ...) or an object (for $name), not {other}"
                )),
                &id,
            )
        }
    };
    if request.sql.trim().is_empty() {
        return bad_request(
            &headers,
            "bad_request",
            "no SQL: send it as the body, or as sql=",
        );
    }
    let limit = state.engine.limits().max_statement_bytes;
    if request.sql.len() > limit {
        let err = QueryError::TooLarge {
            size: request.sql.len(),
            limit,
        };
        state.metrics.finished("http", err.code());
        return error_response(&err, &id);
    }

    let mut admission = match Admission::admit(&state, id.clone(), "http") {
        Ok(a) => a,
        Err(Refused::Busy) => {
            let mut r = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": {"code": "busy", "message": busy_message(&state), "query_id": id}})),
            )
                .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            if let Ok(v) = HeaderValue::from_str(&id) {
                r.headers_mut().insert(QUERY_ID_HEADER, v);
            }
            return r;
        }
        Err(Refused::DuplicateId) => {
            return (
                StatusCode::CONFLICT,
                Json(json!({"error": {"code": "duplicate_query_id", "message": format!("a query with id {id} is running"), "query_id": id}})),
            )
                .into_response();
        }
    };
    let cancel = admission.cancel.clone();

    let timeout = request
        .timeout_ms
        .map(Duration::from_millis)
        .map_or(state.config.query_timeout, |t| {
            t.min(state.config.query_timeout)
        });
    let max_rows = request
        .max_rows
        .map(|m| m.min(state.config.max_result_rows));
    let planning = state.engine.plan(&request.sql, &params, max_rows);
    let planned = tokio::select! {
        p = planning => p,
        _ = cancel.cancelled() => Err(QueryError::Cancelled),
        _ = tokio::time::sleep(timeout) => Err(QueryError::Timeout(timeout)),
    };
    let planned = match planned {
        Ok(p) => p,
        Err(e) => {
            admission.status = Some(e.code());
            return error_response(&e, &id);
        }
    };

    let etag = is_get.then(|| etag(&request, format, &planned.tables));
    if let Some(tag) = &etag {
        let matches = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
        if matches {
            admission.status = Some("not_modified");
            state.metrics.not_modified.inc();
            let mut r = StatusCode::NOT_MODIFIED.into_response();
            set_common_headers(r.headers_mut(), &id, Some(tag), is_get);
            return r;
        }
    }

    let mut running = state.engine.run(
        planned,
        Control {
            cancel: cancel.clone(),
            timeout,
            runtime: Some(state.query_runtime.clone()),
        },
    );
    let max_bytes = state.config.max_result_bytes.as_u64() as usize;
    let mut encoder = match Encoder::new(format, Arc::clone(&running.schema), &id, max_bytes) {
        Ok(e) => e,
        Err(e) => {
            let err = QueryError::Execution(e.into());
            admission.status = Some(err.code());
            return error_response(&err, &id);
        }
    };

    if !format.streams() {
        // Buffered: the whole answer, then the response (so every error has its status).
        let mut body = Vec::new();
        loop {
            match running.next().await {
                Some(Ok(batch)) => match encoder.batch(&batch) {
                    Ok((bytes, more)) => {
                        body.extend_from_slice(&bytes);
                        if !more {
                            break;
                        }
                    }
                    Err(e) => {
                        let err = QueryError::Execution(e.into());
                        admission.status = Some(err.code());
                        return error_response(&err, &id);
                    }
                },
                Some(Err(e)) => {
                    admission.status = Some(e.code());
                    return error_response(&e, &id);
                }
                None => break,
            }
        }
        let stats = running.stats();
        drop(running);
        let tail = match encoder.finish(&stats) {
            Ok(t) => t,
            Err(e) => {
                let err = QueryError::Execution(e.into());
                admission.status = Some(err.code());
                return error_response(&err, &id);
            }
        };
        body.extend_from_slice(&tail);
        admission.finished(&stats);
        let mut r = Response::new(Body::from(body));
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        if stats.truncated || encoder.cut {
            h.insert(TRUNCATED_HEADER, HeaderValue::from_static("true"));
        }
        set_common_headers(h, &id, etag.as_deref(), is_get);
        return r;
    }

    // Streaming: wait for the first batch so that errors at the start get a status code.
    let first = match running.next().await {
        Some(Err(e)) => {
            admission.status = Some(e.code());
            return error_response(&e, &id);
        }
        other => other,
    };
    let head = match encoder.begin() {
        Ok(b) => b,
        Err(e) => {
            let err = QueryError::Execution(e.into());
            admission.status = Some(err.code());
            return error_response(&err, &id);
        }
    };
    let stream = StreamState {
        running,
        encoder,
        admission,
        pending: Some(head),
        first,
        done: false,
    };
    let body = futures::stream::unfold(stream, |mut s| async move {
        let item = s.step().await?;
        Some((item, s))
    });
    let mut r = Response::new(Body::from_stream(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    set_common_headers(h, &id, etag.as_deref(), is_get);
    r
}

fn set_common_headers(h: &mut HeaderMap, id: &str, etag: Option<&str>, is_get: bool) {
    if let Ok(v) = HeaderValue::from_str(id) {
        h.insert(QUERY_ID_HEADER, v);
    }
    if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
        h.insert(header::ETAG, tag);
    }
    // A GET answer may be kept, but must be revalidated (cheap: 304 until the data changes);
    // a POST answer is not kept.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if is_get {
            "private, no-cache"
        } else {
            "no-store"
        }),
    );
}

/// The ETag of an answer: the request that shapes it and the Delta versions it reads.
fn etag(request: &SqlRequest, format: Format, tables: &[(String, u64)]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    request.sql.hash(&mut h);
    format.name().hash(&mut h);
    request.params.as_ref().map(|p| p.to_string()).hash(&mut h);
    request.max_rows.hash(&mut h);
    tables.hash(&mut h);
    let versions: Vec<String> = tables.iter().map(|(_, v)| v.to_string()).collect();
    format!("\"{:016x}-{}\"", h.finish(), versions.join("."))
}

struct StreamState {
    running: Running,
    encoder: Encoder,
    admission: Admission,
    pending: Option<Bytes>,
    first: Option<Result<arrow::array::RecordBatch, QueryError>>,
    done: bool,
}

impl StreamState {
    async fn step(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(bytes) = self.pending.take() {
                if !bytes.is_empty() {
                    return Some(Ok(bytes));
                }
            }
            if self.done {
                return None;
            }
            let next = match self.first.take() {
                Some(item) => Some(item),
                None => self.running.next().await,
            };
            match next {
                Some(Ok(batch)) => match self.encoder.batch(&batch) {
                    Ok((bytes, _)) => self.pending = Some(bytes),
                    Err(e) => return self.fail(QueryError::Execution(e.into())),
                },
                Some(Err(e)) => return self.fail(e),
                None => {
                    let stats = self.running.stats();
                    self.done = true;
                    match self.encoder.finish(&stats) {
                        Ok(bytes) => {
                            self.admission.finished(&stats);
                            self.pending = Some(bytes);
                        }
                        Err(e) => return self.fail(QueryError::Execution(e.into())),
                    }
                }
            }
        }
    }

    /// After the first byte: NDJSON says so in its last line; the others abort.
    fn fail(&mut self, err: QueryError) -> Option<Result<Bytes, std::io::Error>> {
        self.done = true;
        self.admission.status = Some(err.code());
        tracing::warn!(query_id = %self.admission.id(), error = %err, "query failed mid-answer");
        match self.encoder.fail(&err) {
            Some(line) => Some(Ok(line)),
            None => Some(Err(std::io::Error::other(err.to_string()))),
        }
    }
}

pub(crate) async fn cancel(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let token = state
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .cloned();
    match token {
        Some(t) => {
            t.cancel();
            tracing::info!(query_id = %id, "query cancelled by DELETE");
            (StatusCode::OK, Json(json!({"cancelled": id}))).into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no running query has id {id}"), "query_id": id}})),
        )
            .into_response(),
    }
}

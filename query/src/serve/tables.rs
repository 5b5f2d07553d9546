//! `/v1/tables` and `/v1/tables/{name}`: what the lake holds, from the Delta logs alone.
//!
//! `complete_through` is the event time before which a data table is final: its slowest Kafka
//! partition has archived a row stamped later, minus `serve.late_grace` (see
//! `loglake_lake::progress`). Each entry is kept until its table's version changes.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use loglake_lake::progress::{all_txns, complete_through};
use loglake_lake::{LakeError, REJECTED_SUFFIX};

use crate::catalog::OpenTable;
use crate::error::QueryError;
use crate::serve::http::AppState;
use crate::serve::sql::error_response;

pub(crate) async fn list_tables(State(state): State<Arc<AppState>>) -> Response {
    let infos = match state.engine.tables().await {
        Ok(t) => t,
        Err(e) => return error_response(&e, ""),
    };
    let mut out = Vec::with_capacity(infos.len());
    for info in infos {
        match state.engine.catalog().open(&info.sql_name).await {
            Ok(Some(open)) => match describe(&state, &open).await {
                Ok(v) => out.push(v),
                Err(e) => return error_response(&QueryError::Lake(e), ""),
            },
            Ok(None) => {}
            Err(e) => return error_response(&QueryError::Lake(e), ""),
        }
    }
    Json(json!({ "tables": out })).into_response()
}

pub(crate) async fn show_table(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match state.engine.catalog().open(&name).await {
        Ok(Some(open)) => match describe(&state, &open).await {
            Ok(v) => Json(v).into_response(),
            Err(e) => error_response(&QueryError::Lake(e), ""),
        },
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"code": "not_found", "message": format!("no table {name}; GET /v1/tables lists them")}})),
        )
            .into_response(),
        Err(e) => error_response(&QueryError::Lake(e), ""),
    }
}

/// A table for `/v1/tables`, computed once per Delta version of the table.
async fn describe(state: &AppState, open: &OpenTable) -> Result<serde_json::Value, LakeError> {
    let name = &open.info.sql_name;
    if let Some((version, v)) = state.described.lock().expect("described").get(name) {
        if *version == open.version {
            return Ok(v.clone());
        }
    }
    let mut v = summarize(open);
    // Quarantine tables' offsets say nothing of event time.
    let complete = if open.info.dir.ends_with(REJECTED_SUFFIX) {
        None
    } else {
        let grace = state.config.late_grace.as_millis() as i64;
        complete_through(&all_txns(&open.table).await?, grace)
    };
    v["complete_through"] = complete
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(serde_json::Value::Null);
    state
        .described
        .lock()
        .expect("described")
        .insert(name.clone(), (open.version, v.clone()));
    Ok(v)
}

/// Shape, size and the event-time range, from the Delta log alone.
fn summarize(open: &OpenTable) -> serde_json::Value {
    let Ok(state) = open.table.snapshot() else {
        return json!({"name": open.info.sql_name});
    };
    let snapshot = state.snapshot();
    let columns: Vec<_> = snapshot
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string(), "nullable": f.is_nullable()}))
        .collect();
    let (mut files, mut bytes, mut rows) = (0u64, 0u64, 0u64);
    let (mut first, mut last): (Option<String>, Option<String>) = (None, None);
    for file in snapshot.log_data().iter() {
        files += 1;
        bytes += file.size().max(0) as u64;
        rows += file.num_records().unwrap_or(0) as u64;
        let Some(stats) = file.stats() else { continue };
        let Ok(stats) = serde_json::from_str::<serde_json::Value>(&stats) else {
            continue;
        };
        if let Some(min) = stats["minValues"]["timestamp"].as_str() {
            if first.as_deref().is_none_or(|f| min < f) {
                first = Some(min.to_string());
            }
        }
        if let Some(max) = stats["maxValues"]["timestamp"].as_str() {
            if last.as_deref().is_none_or(|l| max > l) {
                last = Some(max.to_string());
            }
        }
    }
    json!({
        "name": open.info.sql_name,
        "topic": open.info.dir.trim_end_matches(REJECTED_SUFFIX),
        "kind": if open.info.dir.ends_with(REJECTED_SUFFIX) { "quarantine" } else { "data" },
        "url": open.info.url.as_str(),
        "version": open.version,
        "columns": columns,
        "partition_columns": snapshot.metadata().partition_columns(),
        "files": files,
        "bytes": bytes,
        "rows": rows,
        "first_event_time": first,
        "last_event_time": last,
    })
}

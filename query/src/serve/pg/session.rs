//! What a Postgres connection keeps for itself: `SET` values (in the connection's metadata,
//! never in the shared session), `SHOW`, and the `statement_timeout` it asked for.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use datafusion::error::DataFusionError;
use datafusion::sql::sqlparser::ast::Set;
use futures::sink::{Sink, SinkExt};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use super::{query_error, user_error, SERVER_VERSION};
use crate::error::QueryError;

const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout";

pub(super) fn statement_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
    client
        .metadata()
        .get(STATEMENT_TIMEOUT_KEY)
        .and_then(|v| parse_pg_duration(v))
}

/// A Postgres duration setting: `5000` (ms), `'5s'`, `'2min'`, `'1h'`; `0` is none.
fn parse_pg_duration(value: &str) -> Option<Duration> {
    let v = value.trim().trim_matches('\'').trim_matches('"').trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().ok()?;
    let ms = match unit.trim() {
        "" | "ms" => number,
        "s" => number * 1e3,
        "min" => number * 60e3,
        "h" => number * 3600e3,
        "d" => number * 86400e3,
        _ => return None,
    };
    (ms > 0.0).then(|| Duration::from_millis(ms as u64))
}

/// `SET name = value` / `SET name TO value` / `SET TIME ZONE`: kept per connection. Settings
/// of the engine (`datafusion.*`) are refused: the session is every user's.
pub(super) async fn set_variable<C>(client: &mut C, set: &Set) -> PgWireResult<Response>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let (name, value) = match set {
        Set::SingleAssignment {
            variable, values, ..
        } => (
            variable.to_string().to_lowercase(),
            values
                .iter()
                .map(|v| v.to_string().trim_matches('\'').to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Set::SetTimeZone { value, .. } => (
            "timezone".to_string(),
            value.to_string().trim_matches('\'').to_string(),
        ),
        // SET SESSION CHARACTERISTICS, SET NAMES, SET ROLE ...: nothing to keep.
        _ => return Ok(Response::Execution(Tag::new("SET"))),
    };
    if name.starts_with("datafusion.") {
        return Err(query_error(&QueryError::ReadOnly(DataFusionError::Plan(
            format!("SET {name}: the engine's settings are the service's, not a session's"),
        ))));
    }
    if name == STATEMENT_TIMEOUT_KEY
        && parse_pg_duration(&value).is_none()
        && value.trim() != "0"
        && !value.eq_ignore_ascii_case("default")
    {
        return Err(user_error(
            "22023",
            format!("invalid value for parameter \"statement_timeout\": \"{value}\""),
        ));
    }
    if value.eq_ignore_ascii_case("default") {
        client.metadata_mut().remove(&name);
    } else {
        client.metadata_mut().insert(name.clone(), value.clone());
    }
    let reported = match name.as_str() {
        "timezone" | "time zone" => Some("TimeZone"),
        "datestyle" => Some("DateStyle"),
        "intervalstyle" => Some("IntervalStyle"),
        "application_name" => Some("application_name"),
        "extra_float_digits" => Some("extra_float_digits"),
        "search_path" => Some("search_path"),
        "client_encoding" => Some("client_encoding"),
        _ => None,
    };
    if let Some(reported) = reported {
        client
            .send(PgWireBackendMessage::ParameterStatus(
                pgwire::messages::startup::ParameterStatus::new(reported.into(), value),
            ))
            .await?;
    }
    Ok(Response::Execution(Tag::new("SET")))
}

pub(super) fn show_variable<C: ClientInfo + ?Sized>(
    client: &C,
    name: &str,
) -> PgWireResult<Response> {
    let name = match name {
        "time zone" => "timezone",
        "transaction isolation level" => "transaction_isolation",
        other => other,
    };
    let value = match name {
        "server_version" => SERVER_VERSION.to_string(),
        "server_version_num" => "160006".into(),
        "transaction_isolation" | "default_transaction_isolation" => "read committed".into(),
        "transaction_read_only" | "default_transaction_read_only" => "on".into(),
        "standard_conforming_strings" | "integer_datetimes" => "on".into(),
        "max_identifier_length" => "63".into(),
        "lc_collate" | "lc_ctype" => "C".into(),
        "server_encoding" => "UTF8".into(),
        "statement_timeout" => {
            statement_timeout(client).map_or("0".into(), |d| format!("{}ms", d.as_millis()))
        }
        _ => match client.metadata().get(name) {
            Some(v) => v.clone(),
            None => match name {
                "timezone" => "UTC".into(),
                "datestyle" => "ISO, MDY".into(),
                "client_encoding" => "UTF8".into(),
                "search_path" => "public".into(),
                "application_name" => String::new(),
                "extra_float_digits" => "1".into(),
                _ => {
                    return Err(user_error(
                        "42704",
                        format!("unrecognized configuration parameter \"{name}\""),
                    ))
                }
            },
        },
    };
    let fields = Arc::new(vec![text_field(name)]);
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::once(async move { Ok(row) }),
    )))
}

pub(super) fn text_field(name: &str) -> FieldInfo {
    FieldInfo::new(name.into(), None, None, Type::TEXT, FieldFormat::Text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_durations() {
        assert_eq!(parse_pg_duration("5000"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_pg_duration("'250ms'"),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_pg_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_pg_duration("1min"), Some(Duration::from_secs(60)));
        assert_eq!(parse_pg_duration("0"), None);
        assert_eq!(parse_pg_duration("soon"), None);
    }
}

//! Functions Postgres drivers and BI tools call on connect and when browsing that neither
//! DataFusion nor `datafusion-pg-catalog` provide. Registered on every session (the HTTP API
//! answers them too); none reads data or has side effects.

use std::sync::Arc;

use arrow::array::{Array as _, ArrayRef, Int32Builder, StringArray, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;

pub(crate) fn register(ctx: &SessionContext) {
    ctx.register_udf(version_udf());
    ctx.register_udf(to_regtype_udf());
    ctx.register_udf(like_escape_udf());
    ctx.register_udf(constant_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        ScalarValue::Utf8(None),
    ));
    ctx.register_udf(constant_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        ScalarValue::Boolean(Some(true)),
    ));
    ctx.register_udf(ScalarUDF::new_from_impl(JsonBuildObject::new()));
}

/// A function of fixed arguments that always answers `value` (no sequences, one collation).
fn constant_udf(name: &str, args: Vec<DataType>, value: ScalarValue) -> ScalarUDF {
    let data_type = value.data_type();
    create_udf(
        name,
        args,
        data_type,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
    )
}

fn text_arg<'a>(
    arrays: &'a [ArrayRef],
    i: usize,
    name: &str,
) -> Result<&'a StringArray, DataFusionError> {
    arrays[i]
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal(format!("{name} takes text")))
}

/// `version()` in the form drivers parse (SQLAlchemy and others read the Postgres version
/// from it), then what actually answers.
fn version_udf() -> ScalarUDF {
    let text = format!(
        "PostgreSQL 16.6 (loglake {}, Apache DataFusion {})",
        env!("CARGO_PKG_VERSION"),
        datafusion::DATAFUSION_VERSION
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// `to_regtype('name')`: the oid of a built-in Postgres type, else NULL (no extension types
/// here). Drivers probe types with it on connect (psycopg's `TypeInfo.fetch`, SQLAlchemy's
/// hstore check).
fn to_regtype_udf() -> ScalarUDF {
    fn oid(name: &str) -> Option<i32> {
        let name = name
            .trim()
            .trim_start_matches("pg_catalog.")
            .to_ascii_lowercase();
        Some(match name.as_str() {
            "bool" | "boolean" => 16,
            "bytea" => 17,
            "char" => 18,
            "name" => 19,
            "int8" | "bigint" => 20,
            "int2" | "smallint" => 21,
            "int4" | "integer" | "int" => 23,
            "text" => 25,
            "oid" => 26,
            "json" => 114,
            "float4" | "real" => 700,
            "float8" | "double precision" => 701,
            "varchar" | "character varying" => 1043,
            "date" => 1082,
            "time" => 1083,
            "timestamp" | "timestamp without time zone" => 1114,
            "timestamptz" | "timestamp with time zone" => 1184,
            "interval" => 1186,
            "numeric" | "decimal" => 1700,
            "uuid" => 2950,
            "jsonb" => 3802,
            _ => return None,
        })
    }
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let names = text_arg(&arrays, 0, "to_regtype")?;
            let mut out = Int32Builder::with_capacity(names.len());
            for name in names.iter() {
                out.append_option(name.and_then(oid));
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

/// `like_escape(pattern, escape)`: a LIKE pattern written with another escape character, as
/// DataFusion's LIKE reads it (backslash escapes).
fn like_escape_udf() -> ScalarUDF {
    fn convert(pattern: &str, escape: char) -> String {
        let mut out = String::with_capacity(pattern.len() + 4);
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c == escape {
                match chars.next() {
                    Some(n @ ('%' | '_' | '\\')) => {
                        out.push('\\');
                        out.push(n);
                    }
                    Some(n) => out.push(n),
                    None => {}
                }
            } else if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        out
    }
    create_udf(
        "like_escape",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let (patterns, escapes) = (
                text_arg(&arrays, 0, "like_escape")?,
                text_arg(&arrays, 1, "like_escape")?,
            );
            let mut out = StringBuilder::with_capacity(patterns.len(), 64);
            for (p, e) in patterns.iter().zip(escapes.iter()) {
                match (p, e.and_then(|e| e.chars().next())) {
                    (Some(p), Some(e)) => out.append_value(convert(p, e)),
                    (Some(p), None) => out.append_value(p),
                    _ => out.append_null(),
                }
            }
            Ok(ColumnarValue::Array(Arc::new(out.finish())))
        }),
    )
}

/// `json_build_object(k1, v1, k2, v2, ...)`: a JSON object as text.
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl JsonBuildObject {
    fn new() -> Self {
        Self {
            signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes pairs of keys and values".into(),
            ));
        }
        let rows = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = StringBuilder::with_capacity(rows, rows * 32);
        for row in 0..rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                object.insert(scalar_text(&key), scalar_json(&value));
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn scalar_text(v: &ScalarValue) -> String {
    match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    if v.is_null() {
        return serde_json::Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(*b),
        ScalarValue::Int8(Some(n)) => (*n).into(),
        ScalarValue::Int16(Some(n)) => (*n).into(),
        ScalarValue::Int32(Some(n)) => (*n).into(),
        ScalarValue::Int64(Some(n)) => (*n).into(),
        ScalarValue::UInt8(Some(n)) => (*n).into(),
        ScalarValue::UInt16(Some(n)) => (*n).into(),
        ScalarValue::UInt32(Some(n)) => (*n).into(),
        ScalarValue::UInt64(Some(n)) => (*n).into(),
        ScalarValue::Float32(Some(f)) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(serde_json::Value::Null, Into::into)
        }
        ScalarValue::Float64(Some(f)) => {
            serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
        }
        other => serde_json::Value::String(scalar_text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn driver_functions_answer() {
        let ctx = SessionContext::new();
        register(&ctx);
        let batches = ctx
            .sql("SELECT json_build_object('a', 1, 'b', 'x', 'c', NULL, 'd', true) AS o, \
                  to_regtype('timestamptz') AS t, to_regtype('hstore') AS h, \
                  'a_b' LIKE like_escape('a/_b', '/') AS escaped, 'axb' LIKE like_escape('a/_b', '/') AS not_wild, \
                  version() AS v")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(
            text.contains(r#"{"a":1,"b":"x","c":null,"d":true}"#),
            "{text}"
        );
        assert!(text.contains("| 1184 |"), "{text}");
        assert!(text.contains("| true    | false    |"), "{text}");
        assert!(text.contains("PostgreSQL 16.6 (loglake"), "{text}");
    }
}

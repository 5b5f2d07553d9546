//! A table's columns against what a topic's schema file now describes: adding typed columns
//! evolves the table (old rows read as null); a removal or a type change is refused, because
//! Delta without column mapping cannot do either without rewriting every file.

use arrow::array::{new_null_array, ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use deltalake::kernel::engine::arrow_conversion::{TryIntoArrow, TryIntoKernel};
use deltalake::DeltaTable;

use crate::error::LakeError;

/// What must happen to a table for it to hold rows of `wanted`.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaChange {
    /// Same columns (in any order), same types.
    None,
    /// These nullable columns are new: add them.
    Add(Vec<Field>),
    /// Not something a table can do in place; why, naming the column.
    Refused(String),
}

/// Compares by column name: order does not matter (files are read by name).
pub fn compare(existing: &Schema, wanted: &Schema) -> SchemaChange {
    for old in existing.fields() {
        match wanted.field_with_name(old.name()) {
            Err(_) => {
                return SchemaChange::Refused(format!(
                    "column {:?} ({}) is in the table but no longer described: removing a column is not supported \
                     (it would hide the data already archived); describe it again",
                    old.name(),
                    old.data_type()
                ))
            }
            Ok(new) if new.data_type() != old.data_type() => {
                return SchemaChange::Refused(format!(
                    "column {:?} is {} in the table but {} now: changing a column's type is not supported \
                     (the files already written keep the old type); add a column under a new name instead",
                    old.name(),
                    old.data_type(),
                    new.data_type()
                ))
            }
            Ok(_) => {}
        }
    }
    let added: Vec<Field> = wanted
        .fields()
        .iter()
        .filter(|f| existing.field_with_name(f.name()).is_err())
        .map(|f| f.as_ref().clone())
        .collect();
    if let Some(f) = added.iter().find(|f| !f.is_nullable()) {
        return SchemaChange::Refused(format!(
            "new column {:?} is not nullable: the rows already archived have no value for it",
            f.name()
        ));
    }
    if added.is_empty() {
        SchemaChange::None
    } else {
        SchemaChange::Add(added)
    }
}

/// The table's schema as Arrow (partition columns included), as delta-rs's writer sees it.
pub fn arrow_schema(table: &DeltaTable) -> Result<SchemaRef, LakeError> {
    let name = table.table_url().to_string();
    let snapshot = table.snapshot().map_err(|e| LakeError::delta(&name, e))?;
    metadata_arrow_schema(snapshot.metadata(), &name)
}

/// The schema a table's metadata describes, as Arrow (partition columns included).
pub(crate) fn metadata_arrow_schema(
    metadata: &deltalake::kernel::Metadata,
    table: &str,
) -> Result<SchemaRef, LakeError> {
    let kernel = metadata
        .parse_schema()
        .map_err(|e| LakeError::delta(table, e.into()))?;
    let schema: Schema = (&kernel).try_into_arrow().map_err(|e| LakeError::Encode {
        table: table.to_string(),
        source: e,
    })?;
    Ok(std::sync::Arc::new(schema))
}

/// `schema` as a Delta table stores it and gives it back (types spelled as the table's are).
pub fn as_stored(schema: &Schema, table: &str) -> Result<Schema, LakeError> {
    let encode = |source| LakeError::Encode {
        table: table.to_string(),
        source,
    };
    let kernel: deltalake::kernel::StructType = schema.try_into_kernel().map_err(encode)?;
    (&kernel).try_into_arrow().map_err(encode)
}

/// `batch` with the columns of `target`, by name: reordered, and null where the batch lacks a
/// nullable column (a writer whose schema file predates a column the table has gained).
pub fn align(
    batch: RecordBatch,
    target: &SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch);
    }
    let rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(target.fields().len());
    for f in target.fields() {
        match batch.column_by_name(f.name()) {
            Some(c) => columns.push(c.clone()),
            None if f.is_nullable() => columns.push(new_null_array(f.data_type(), rows)),
            None => {
                return Err(arrow::error::ArrowError::SchemaError(format!(
                    "the table's column {:?} is not nullable and the rows have no value for it",
                    f.name()
                )))
            }
        }
    }
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| target.field_with_name(f.name()).is_err())
    {
        return Err(arrow::error::ArrowError::SchemaError(format!(
            "the rows have a column {:?} the table does not",
            extra.name()
        )));
    }
    RecordBatch::try_new(target.clone(), columns)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::DataType;

    use super::*;

    fn schema(fields: &[(&str, DataType, bool)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t, null)| Field::new(*n, t.clone(), *null))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn what_users_change_in_a_schema_file() {
        let v1 = schema(&[
            ("message", DataType::Utf8, true),
            ("host", DataType::Utf8, false),
        ]);
        assert_eq!(compare(&v1, &v1), SchemaChange::None);
        let v2 = schema(&[
            ("message", DataType::Utf8, true),
            ("status", DataType::Int64, true),
            ("host", DataType::Utf8, false),
        ]);
        assert_eq!(
            compare(&v1, &v2),
            SchemaChange::Add(vec![Field::new("status", DataType::Int64, true)])
        );
        let retyped = schema(&[
            ("message", DataType::Int64, true),
            ("host", DataType::Utf8, false),
        ]);
        assert!(
            matches!(compare(&v1, &retyped), SchemaChange::Refused(m) if m.contains("\"message\" is Utf8"))
        );
        let removed = schema(&[("host", DataType::Utf8, false)]);
        assert!(
            matches!(compare(&v1, &removed), SchemaChange::Refused(m) if m.contains("removing"))
        );
        let required = schema(&[
            ("message", DataType::Utf8, true),
            ("n", DataType::Int64, false),
            ("host", DataType::Utf8, false),
        ]);
        assert!(
            matches!(compare(&v1, &required), SchemaChange::Refused(m) if m.contains("not nullable"))
        );
    }

    #[test]
    fn an_older_writers_rows_fit_the_evolved_table() {
        let old = Arc::new(schema(&[
            ("message", DataType::Utf8, true),
            ("host", DataType::Utf8, false),
        ]));
        let table = Arc::new(schema(&[
            ("message", DataType::Utf8, true),
            ("host", DataType::Utf8, false),
            ("status", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            old,
            vec![
                Arc::new(StringArray::from(vec!["a", "b"])),
                Arc::new(StringArray::from(vec!["h", "h"])),
            ],
        )
        .unwrap();
        let aligned = align(batch, &table).unwrap();
        assert_eq!(aligned.schema(), table);
        assert_eq!(aligned.column(2).null_count(), 2);
        // A newer writer's order differs from the table's: reordered by name.
        let newer = Arc::new(schema(&[
            ("message", DataType::Utf8, true),
            ("status", DataType::Int64, true),
            ("host", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            newer,
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(Int64Array::from(vec![200])),
                Arc::new(StringArray::from(vec!["h"])),
            ],
        )
        .unwrap();
        let aligned = align(batch, &table).unwrap();
        assert_eq!(
            aligned
                .column(2)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .value(0),
            200
        );
    }
}

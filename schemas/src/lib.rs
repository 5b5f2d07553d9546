//! Log schemas: what a topic's records look like, and how one record becomes one row.
//!
//! A [`TopicSchema`] is read from a TOML file (`<topic>.toml` in the schemas directory) or is
//! the built-in default, which needs no configuration for JSON from common shippers and for
//! plain text lines. A [`Mapper`] compiled from it turns a [`RawRecord`] (a Kafka record's
//! bytes and coordinates) into a [`Row`], or into a [`Rejection`] that says why the record
//! cannot be archived. [`RowBuilder`] collects rows into Arrow record batches.
//!
//! This crate does no IO and nothing async: it is pure mapping, easy to test and to fuzz.
//! It must never drop data silently: every field that no column takes is kept in the
//! `attributes` column, and every record that cannot be mapped becomes a [`Rejection`].
//!
//! ```
//! use loglake_schemas::{Mapper, RawRecord, TopicSchema};
//! let mapper = Mapper::new(&TopicSchema::default()).unwrap();
//! let raw = RawRecord {
//!     payload: Some(br#"{"ts":"2026-01-02T03:04:05Z","host":"web-1","msg":"hi","pid":7}"#),
//!     key: None, partition: 0, offset: 42, kafka_timestamp_ms: None,
//!     received_at_us: 1_767_323_100_000_000, // when this worker read it
//! };
//! let row = mapper.map(&raw).unwrap();
//! assert_eq!(row.host, "web-1");
//! assert_eq!(row.message.as_deref(), Some("hi"));
//! assert_eq!(row.attributes.as_deref(), Some(r#"{"pid":7}"#));
//! assert_eq!(row.partition_values(), ("web-1".to_string(), "2026-01-02".to_string(), "03".to_string()));
//! ```

mod builder;
mod fields;
mod mapper;
mod model;
mod rejected;
mod scan;
mod timestamp;
mod val;

pub use builder::{
    file_arrow_schema, held_by_batch, table_arrow_schema, RowBuilder, CHUNK_BYTES,
    PARTITION_COLUMNS,
};
pub use mapper::{Mapper, RawRecord, Rejection, RejectionKind, Row, TypedValue};
pub use model::{ColumnSpec, ColumnType, Format, SchemaError, SchemaSet, TopicSchema};
pub use rejected::{
    rejected_arrow_schema, RejectedBuilder, RejectedRecord, REJECTED_PARTITION_COLUMNS,
};
pub use timestamp::{format_partition, TimestampFormat};

//! Printing query results: a table for people, CSV and JSON for scripts.

use std::io::Write;

use anyhow::Context as _;
use arrow::array::RecordBatch;

use crate::Format;

pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Runs `sql` and writes the answer as it arrives: to `file`, else standard output. On a
/// terminal a progress line (time, rows) shows on standard error while the query runs.
pub async fn run_query(
    engine: &loglake_query::QueryEngine,
    sql: &str,
    format: Option<Format>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let format = format.unwrap_or(Format::Table);
    let planned = engine.plan(sql, &loglake_query::Params::None, None).await?;
    let schema = std::sync::Arc::clone(&planned.schema);
    let mut running = engine.run(
        planned,
        loglake_query::Control {
            cancel: tokio_util::sync::CancellationToken::new(),
            timeout: engine.limits().query_timeout,
            runtime: None,
        },
    );
    let out: Box<dyn Write + Send> = match file {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("could not create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout())),
    };
    let mut sink = Sink::new(format, out, schema)?;
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let started = std::time::Instant::now();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    let mut rows = 0u64;
    let mut shown = false;
    loop {
        let next = tokio::select! {
            n = running.next() => n,
            _ = tick.tick(), if progress => {
                if started.elapsed().as_secs() >= 1 {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2Krunning {:.0}s, {rows} rows", started.elapsed().as_secs_f64());
                    let _ = err.flush();
                    shown = true;
                }
                continue;
            }
        };
        match next {
            Some(Ok(batch)) => {
                rows += batch.num_rows() as u64;
                sink.write(batch)?;
            }
            Some(Err(e)) => {
                if shown {
                    end_progress();
                }
                return Err(e.into());
            }
            None => break,
        }
    }
    if shown {
        end_progress();
    }
    sink.finish()
}

/// Where `run_query` writes, per format.
enum Sink {
    Table(Box<dyn Write + Send>, Vec<RecordBatch>),
    Csv(arrow::csv::Writer<Box<dyn Write + Send>>),
    Json(arrow::json::Writer<Box<dyn Write + Send>, arrow::json::writer::JsonArray>),
    Ndjson(arrow::json::Writer<Box<dyn Write + Send>, arrow::json::writer::LineDelimited>),
    Arrow(arrow::ipc::writer::StreamWriter<Box<dyn Write + Send>>),
    Parquet(parquet::arrow::ArrowWriter<Box<dyn Write + Send>>),
}

impl Sink {
    fn new(
        format: Format,
        out: Box<dyn Write + Send>,
        schema: arrow::datatypes::SchemaRef,
    ) -> anyhow::Result<Self> {
        use loglake_query::format::{csv_builder, json_builder};
        Ok(match format {
            Format::Table => Sink::Table(out, Vec::new()),
            Format::Csv => {
                let mut w = csv_builder().build(out);
                w.write(&RecordBatch::new_empty(schema))?;
                Sink::Csv(w)
            }
            Format::Json => Sink::Json(json_builder().build(out)),
            Format::Ndjson => Sink::Ndjson(json_builder().build(out)),
            Format::Arrow => Sink::Arrow(arrow::ipc::writer::StreamWriter::try_new(out, &schema)?),
            Format::Parquet => {
                Sink::Parquet(parquet::arrow::ArrowWriter::try_new(out, schema, None)?)
            }
        })
    }

    fn write(&mut self, batch: RecordBatch) -> anyhow::Result<()> {
        match self {
            Sink::Table(_, all) => all.push(batch),
            Sink::Csv(w) => w.write(&batch)?,
            Sink::Json(w) => w.write(&batch)?,
            Sink::Ndjson(w) => w.write(&batch)?,
            Sink::Arrow(w) => w.write(&batch)?,
            Sink::Parquet(w) => w.write(&batch)?,
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        let mut out = match self {
            Sink::Table(mut out, all) => {
                let table = arrow::util::pretty::pretty_format_batches(&all)?;
                writeln!(out, "{table}")?;
                out
            }
            Sink::Csv(w) => w.into_inner(),
            Sink::Json(mut w) => {
                w.finish()?;
                let mut out = w.into_inner();
                out.write_all(b"\n")?;
                out
            }
            Sink::Ndjson(mut w) => {
                w.finish()?;
                w.into_inner()
            }
            Sink::Arrow(mut w) => {
                w.finish()?;
                w.into_inner()?
            }
            Sink::Parquet(w) => w.into_inner()?,
        };
        out.flush()?;
        Ok(())
    }
}

/// One line of compaction progress on a terminal, rewritten in place.
pub fn compaction_progress(p: &loglake_compactor::Progress) {
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r\x1b[2K{}: {}/{} partitions, {} / {}",
        p.table,
        p.merges_done,
        p.merges_total,
        bytesize::ByteSize(p.bytes_done),
        bytesize::ByteSize(p.bytes_total)
    );
    let _ = err.flush();
}

/// Ends the progress line.
pub fn end_progress() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[2K");
    let _ = err.flush();
}

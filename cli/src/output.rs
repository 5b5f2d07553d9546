//! Printing query results: a table for people, CSV and JSON for scripts.

use std::io::Write;

use arrow::array::RecordBatch;

use crate::Format;

pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

pub fn print(batches: &[RecordBatch], format: Format) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    match format {
        Format::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(buf, "{table}")?;
        }
        Format::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = arrow::json::ArrayWriter::new(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            if buf.is_empty() {
                buf.extend_from_slice(b"[]");
            }
            buf.push(b'\n');
        }
        Format::Ndjson => {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    write_stdout(&buf)?;
    Ok(())
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

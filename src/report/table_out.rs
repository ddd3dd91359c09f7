//! Where `ledger export` writes a table: CSV (the csv crate), or Parquet (the parquet crate's Arrow
//! writer) with a type per column. Both take the same text records, so a Parquet file holds, row
//! for row, what the CSV export holds: an empty field is NULL, and each column is parsed as its
//! [`Kind`] says.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampNanosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::report::files::CsvOut;

/// A column's type in Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INT64.
    Int,
    /// DOUBLE.
    Real,
    /// BOOLEAN, from `0`/`1` (or `false`/`true`).
    Bool,
    /// TIMESTAMP (nanoseconds, UTC), from RFC 3339.
    Time,
    /// STRING (UTF-8); lists and maps are their canonical JSON, as in the CSV.
    Text,
}

/// Rows per batch handed to the Parquet writer, and rows per row group: a table of any length
/// is written holding one row group at a time.
const BATCH_ROWS: usize = 8_192;
const ROW_GROUP_ROWS: usize = 131_072;

/// A table being written: a header, then rows of text fields.
pub trait TableOut {
    fn header(&mut self, columns: &[&str]) -> anyhow::Result<()>;
    fn row(&mut self, fields: &[String]) -> anyhow::Result<()>;
    /// Writes what is left and closes the file (a write error is reported here).
    fn finish(self: Box<Self>) -> anyhow::Result<()>;
}

impl TableOut for CsvOut {
    fn header(&mut self, columns: &[&str]) -> anyhow::Result<()> {
        Ok(self.write_record(columns)?)
    }

    fn row(&mut self, fields: &[String]) -> anyhow::Result<()> {
        Ok(self.write_record(fields)?)
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        Ok(self.flush()?)
    }
}

enum Column {
    Int(Int64Builder),
    Real(Float64Builder),
    Bool(BooleanBuilder),
    Time(TimestampNanosecondBuilder),
    Text(StringBuilder),
}

impl Column {
    fn new(kind: Kind) -> Column {
        match kind {
            Kind::Int => Column::Int(Int64Builder::new()),
            Kind::Real => Column::Real(Float64Builder::new()),
            Kind::Bool => Column::Bool(BooleanBuilder::new()),
            Kind::Time => Column::Time(TimestampNanosecondBuilder::new().with_timezone("UTC")),
            Kind::Text => Column::Text(StringBuilder::new()),
        }
    }

    /// Appends one field: empty is NULL, anything else must parse as the column's type.
    fn push(&mut self, v: &str) -> Result<(), String> {
        let none = v.is_empty();
        match self {
            Column::Text(b) if none => b.append_null(),
            Column::Text(b) => b.append_value(v),
            Column::Int(b) => b.append_option(if none {
                None
            } else {
                Some(v.parse().map_err(|_| "an integer")?)
            }),
            Column::Real(b) => {
                b.append_option(if none { None } else { Some(v.parse().map_err(|_| "a number")?) })
            }
            Column::Bool(b) => b.append_option(match v {
                "" => None,
                "0" | "false" => Some(false),
                "1" | "true" => Some(true),
                _ => return Err("0, 1, true or false".into()),
            }),
            Column::Time(b) => b.append_option(if none { None } else { Some(nanos(v)?) }),
        }
        Ok(())
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Int(b) => Arc::new(b.finish()),
            Column::Real(b) => Arc::new(b.finish()),
            Column::Bool(b) => Arc::new(b.finish()),
            Column::Time(b) => Arc::new(b.finish()),
            Column::Text(b) => Arc::new(b.finish()),
        }
    }
}

/// Nanoseconds since the Unix epoch of an RFC 3339 time (1677–2262: what a Parquet nanosecond
/// timestamp holds).
fn nanos(v: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(v).map_err(|_| "an RFC 3339 time".to_string())?;
    t.timestamp_nanos_opt().ok_or_else(|| "a time between 1677 and 2262".to_string())
}

/// A Parquet file being written: each column's [`Kind`] from `kind`, by its name.
pub struct ParquetOut {
    path: String,
    kind: fn(&str) -> Kind,
    names: Vec<String>,
    schema: Option<Arc<Schema>>,
    columns: Vec<Column>,
    rows: usize,
    /// Rows written so far (a field's error names its row).
    done: usize,
    writer: Option<ArrowWriter<std::fs::File>>,
}

impl ParquetOut {
    pub fn create(path: &str, kind: fn(&str) -> Kind) -> anyhow::Result<ParquetOut> {
        if path == "-" {
            bail!("--parquet needs a file: Parquet is not written to stdout");
        }
        Ok(ParquetOut {
            path: path.to_string(),
            kind,
            names: Vec::new(),
            schema: None,
            columns: Vec::new(),
            rows: 0,
            done: 0,
            writer: None,
        })
    }

    /// Hands the rows gathered so far to the writer, as one batch.
    fn flush_batch(&mut self) -> anyhow::Result<()> {
        let Some(w) = self.writer.as_mut() else { bail!("a Parquet row before its header") };
        if self.rows == 0 {
            return Ok(());
        }
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(Column::finish).collect();
        let schema = self.schema.clone().context("a Parquet row before its header")?;
        let batch = RecordBatch::try_new(schema, arrays)?;
        w.write(&batch).with_context(|| format!("cannot write {}", self.path))?;
        self.rows = 0;
        Ok(())
    }
}

impl TableOut for ParquetOut {
    fn header(&mut self, columns: &[&str]) -> anyhow::Result<()> {
        let mut fields = Vec::with_capacity(columns.len());
        for name in columns {
            let kind = (self.kind)(name);
            let t = match kind {
                Kind::Int => DataType::Int64,
                Kind::Real => DataType::Float64,
                Kind::Bool => DataType::Boolean,
                Kind::Time => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                Kind::Text => DataType::Utf8,
            };
            fields.push(Field::new(*name, t, true));
            self.columns.push(Column::new(kind));
            self.names.push(name.to_string());
        }
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_size(ROW_GROUP_ROWS)
            .build();
        if let Some(parent) =
            std::path::Path::new(&self.path).parent().filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent)?;
        }
        let file = std::fs::File::create(&self.path)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", self.path))?;
        let schema = Arc::new(Schema::new(fields));
        self.writer = Some(ArrowWriter::try_new(file, schema.clone(), Some(props))?);
        self.schema = Some(schema);
        Ok(())
    }

    fn row(&mut self, fields: &[String]) -> anyhow::Result<()> {
        for ((c, v), name) in self.columns.iter_mut().zip(fields).zip(&self.names) {
            if let Err(want) = c.push(v) {
                bail!("row {}, column {name}: {v:?} is not {want}", self.done + self.rows + 1);
            }
        }
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.done += self.rows;
            self.flush_batch()?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> anyhow::Result<()> {
        self.flush_batch()?;
        let w = self.writer.take().context("a Parquet file with no header")?;
        w.close().with_context(|| format!("cannot write {}", self.path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long table is written one row group of ROW_GROUP_ROWS at a time, each value as it came.
    #[test]
    fn a_long_table_is_written_in_row_groups_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let kind = |c: &str| if c == "n" { Kind::Int } else { Kind::Time };
        let mut out: Box<dyn TableOut> =
            Box::new(ParquetOut::create(path.to_str().unwrap(), kind).unwrap());
        out.header(&["n", "at"]).unwrap();
        let rows = 2 * ROW_GROUP_ROWS + 5;
        for i in 0..rows {
            let at =
                if i % 2 == 0 { String::new() } else { "2026-12-07T06:00:00.123456789Z".into() };
            out.row(&[i.to_string(), at]).unwrap();
        }
        out.finish().unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
        let meta = parquet::file::reader::FileReader::metadata(&reader);
        let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        let full = ROW_GROUP_ROWS as i64;
        assert_eq!(groups, vec![full, full, 5]);
    }

    #[test]
    fn a_field_that_is_not_its_type_is_an_error_naming_row_and_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let mut out = ParquetOut::create(path.to_str().unwrap(), |_| Kind::Int).unwrap();
        out.header(&["n"]).unwrap();
        out.row(&["1".into()]).unwrap();
        let e = out.row(&["one".into()]).unwrap_err().to_string();
        assert_eq!(e, "row 2, column n: \"one\" is not an integer");
        assert_eq!(nanos("1500-01-01T00:00:00Z"), Err("a time between 1677 and 2262".into()));
    }
}

//! Result tables as CSV files: one header, one row per serialised struct, read back strictly.

use std::{fs::File, io::BufWriter, path::Path};

use serde::{de::DeserializeOwned, Serialize};

use super::OutputError;

/// Writes `rows` to `path` with a header.
pub fn write_rows<R: Serialize>(
    path: &Path,
    rows: impl IntoIterator<Item = R>,
) -> Result<(), OutputError> {
    let csv_error = |source| OutputError::CsvWrite {
        path: path.to_owned(),
        source,
    };
    let file = File::create(path).map_err(OutputError::write(path))?;
    let mut writer = csv::Writer::from_writer(BufWriter::new(file));
    for row in rows {
        writer.serialize(row).map_err(csv_error)?;
    }
    writer.flush().map_err(OutputError::write(path))
}

/// Reads every row of `path`; the error names the file, what it should be (`kind`) and the row or
/// column at fault.
pub fn read_rows<R: DeserializeOwned>(
    path: &Path,
    kind: &'static str,
) -> Result<Vec<R>, OutputError> {
    let file = File::open(path).map_err(|source| OutputError::Read {
        path: path.to_owned(),
        source,
    })?;
    csv::Reader::from_reader(std::io::BufReader::new(file))
        .deserialize()
        .collect::<Result<Vec<R>, _>>()
        .map_err(|source| OutputError::CsvRead {
            path: path.to_owned(),
            kind,
            source,
        })
}

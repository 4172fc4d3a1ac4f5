//! The error type of the result writers and readers: every variant names the file concerned.

use std::{io, path::PathBuf};

/// Writing or reading a result file failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write CSV file {}: {source}", path.display())]
    CsvWrite { path: PathBuf, source: csv::Error },
    #[error("{} is not a valid {kind} file: {source}", path.display())]
    CsvRead {
        path: PathBuf,
        /// What the file should be: `summary`, `capacity`.
        kind: &'static str,
        source: csv::Error,
    },
    #[error("cannot write JSON file {}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{} exists and is not a symbolic link; left it alone (remove it to have it point at the \
         newest run, {})",
        path.display(),
        target.display()
    )]
    LatestNotSymlink { path: PathBuf, target: PathBuf },
}

impl OutputError {
    pub(crate) fn write(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| OutputError::Write { path, source }
    }
}

//! What can go wrong while rendering a report; every message names the file at fault.

use std::path::PathBuf;

/// Why a report could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("results directory {} does not exist", .0.display())]
    MissingDir(PathBuf),
    #[error("{} is not a directory (expected a results directory holding summary.csv and run.json)", .0.display())]
    NotADir(PathBuf),
    #[error("{} is missing: not a commbench results directory, or the run wrote no results", .0.display())]
    MissingFile(PathBuf),
    #[error("{} is corrupt: {message}", path.display())]
    Summary { path: PathBuf, message: String },
    #[error("{} has no rows: the run measured no cell", .0.display())]
    EmptySummary(PathBuf),
    #[error("{} is corrupt: {message}", path.display())]
    RunJson { path: PathBuf, message: String },
    #[error("{} is corrupt at line {line}: {message}", path.display())]
    Hgrm {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw {}: {message}", path.display())]
    Chart { path: PathBuf, message: String },
    #[error("the embedded chart font could not be loaded")]
    Font,
}

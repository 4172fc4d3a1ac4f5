//! Result files of a run: `summary.csv`, `run.json`, `.hgrm` and `.hlog` files, the terminal table
//! and the `results/latest` link.

mod capacity;
mod csv_file;
mod error;
mod hgrm;
mod hlog;
mod run_json;
mod summary;
mod table;
#[cfg(test)]
pub(crate) mod test_util;

use std::{
    fs,
    path::{Path, PathBuf},
};

pub use capacity::{read_capacity, write_capacity, CapacityRow, CAPACITY_FILE};
pub use error::OutputError;
pub use hgrm::{percentile_distribution, write_hgrm, MICROS_PER_MS, TICKS_PER_HALF_DISTANCE};
pub use hlog::HlogWriter;
pub use run_json::{machine_facts, write_run_json, MachineFacts};
pub use summary::{events_in_window, read_summary, write_summary, SummaryRow};
pub use table::render_table;

use crate::result::{CellResult, RunInfo};

/// Writes `<cell>.<metric>.hgrm` in `dir` for each histogram of `cell`.
pub fn write_cell_files(dir: &Path, cell: &CellResult) -> Result<(), OutputError> {
    let name = cell.spec.name();
    for (metric, hist) in &cell.histograms {
        write_hgrm(&dir.join(format!("{name}.{}.hgrm", metric.name())), hist)?;
    }
    Ok(())
}

/// Writes everything about a finished run into `dir` (created if missing): `summary.csv`,
/// `run.json` and every cell's `.hgrm` files. (`.hlog` files are written during the run.)
pub fn write_run(dir: &Path, info: &RunInfo, cells: &[CellResult]) -> Result<(), OutputError> {
    fs::create_dir_all(dir).map_err(OutputError::write(dir))?;
    write_summary(&dir.join("summary.csv"), &info.run_id, cells)?;
    write_run_json(&dir.join("run.json"), info)?;
    cells
        .iter()
        .try_for_each(|cell| write_cell_files(dir, cell))
}

/// Points `<results_root>/latest` at `run_dir` with a symbolic link (relative when `run_dir` is
/// inside `results_root`), replacing an existing link atomically. A `latest` that is a real file
/// or directory is left alone and reported as an error.
pub fn link_latest(results_root: &Path, run_dir: &Path) -> Result<(), OutputError> {
    let link = results_root.join("latest");
    if let Ok(meta) = fs::symlink_metadata(&link) {
        if !meta.file_type().is_symlink() {
            return Err(OutputError::LatestNotSymlink {
                path: link,
                target: run_dir.to_owned(),
            });
        }
    }
    let target = link_target(results_root, run_dir);
    let temporary = results_root.join(format!(".latest.{}.tmp", std::process::id()));
    let _ = fs::remove_file(&temporary);
    symlink(&target, &temporary).map_err(OutputError::write(&link))?;
    // rename() replaces a symlink atomically, and fails rather than replace a directory.
    fs::rename(&temporary, &link).map_err(|source| {
        let _ = fs::remove_file(&temporary);
        OutputError::Write { path: link, source }
    })
}

/// `run_dir` relative to `results_root` if it is inside it, else absolute.
fn link_target(results_root: &Path, run_dir: &Path) -> PathBuf {
    let inside = |root: &Path, dir: &Path| {
        dir.strip_prefix(root)
            .ok()
            .filter(|rest| !rest.as_os_str().is_empty())
            .map(Path::to_path_buf)
    };
    if let Some(relative) = inside(results_root, run_dir) {
        return relative;
    }
    match (results_root.canonicalize(), run_dir.canonicalize()) {
        (Ok(root), Ok(dir)) => inside(&root, &dir).unwrap_or(dir),
        (_, Ok(dir)) => dir,
        _ => run_dir.to_owned(),
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &Path, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "symbolic links are only made on Unix",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{output::test_util::sample_cell, output::test_util::temp_path, pattern::Pattern};

    fn info(cells: &[CellResult]) -> RunInfo {
        RunInfo {
            run_id: "20260101-000000".into(),
            started_unix_s: 1,
            complete: true,
            commbench_version: "0.1.0".into(),
            git_commit: None,
            cpu_model: None,
            cpus: 2,
            kernel: None,
            rustc: None,
            target: "embedded".into(),
            scenario: serde_json::Value::Null,
            cells: cells.iter().map(|c| c.spec.name()).collect(),
            notes: Vec::new(),
            cpu_sets: Default::default(),
            scheduling: Default::default(),
            placement: Default::default(),
        }
    }

    #[test]
    fn writes_all_run_files() {
        let root = temp_path("run-files");
        let dir = root.join("20260101-000000");
        let cells = [
            sample_cell(Pattern::Sse, true),
            sample_cell(Pattern::RequestResponse, true),
        ];
        write_run(&dir, &info(&cells), &cells).unwrap();
        let mut names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let rows = read_summary(&dir.join("summary.csv")).unwrap();
        fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            names,
            [
                "request-response-c1000-r50-p128.connect.hgrm",
                "request-response-c1000-r50-p128.round_trip.hgrm",
                "run.json",
                "sse-c1000-r50-p128.connect.hgrm",
                "sse-c1000-r50-p128.delivery.hgrm",
                "summary.csv",
            ]
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].run_id, "20260101-000000");
    }

    #[test]
    fn latest_link_is_replaced_but_real_directories_are_not() {
        let root = temp_path("latest");
        let (first, second) = (root.join("run-1"), root.join("run-2"));
        fs::create_dir_all(&first).unwrap();
        fs::create_dir_all(&second).unwrap();
        link_latest(&root, &first).unwrap();
        assert_eq!(
            fs::read_link(root.join("latest")).unwrap(),
            Path::new("run-1")
        );
        link_latest(&root, &second).unwrap();
        assert_eq!(
            fs::read_link(root.join("latest")).unwrap(),
            Path::new("run-2")
        );
        assert!(root.join("latest").join(".").is_dir());

        fs::remove_file(root.join("latest")).unwrap();
        fs::create_dir(root.join("latest")).unwrap();
        let error = link_latest(&root, &first).unwrap_err().to_string();
        let still_dir = fs::symlink_metadata(root.join("latest")).unwrap().is_dir();
        let leftovers = fs::read_dir(&root).unwrap().count();
        fs::remove_dir_all(&root).unwrap();
        assert!(error.contains("is not a symbolic link"), "{error}");
        assert!(still_dir);
        assert_eq!(leftovers, 3, "no temporary link left behind");
    }
}

//! Every committed scenario and study file parses and validates.
#![allow(clippy::unwrap_used)]

use commbench_loadgen::{scenario::RawScenario, study};

#[test]
fn committed_scenarios_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let raw = RawScenario::from_file(&path).unwrap();
        // Studies may hold lists; expanding validates every combination like a run would.
        let plans = study::plans(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!plans.is_empty(), "{}", path.display());
        seen += 1;
    }
    assert!(
        seen >= 3,
        "expected the committed scenarios in {}",
        dir.display()
    );
}

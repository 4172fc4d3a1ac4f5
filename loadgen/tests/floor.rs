//! `commbench floor`: the bare-socket yardstick counts every write and answer, checks every byte
//! arrives, and refuses bad flags with a usage error.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn floor(args: &[&str]) -> serde_json::Value {
    let output = Command::new(env!("CARGO_BIN_EXE_commbench"))
        .arg("floor")
        .args(args)
        .args([
            "--clients",
            "20",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--json",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "floor failed: {stderr}");
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn push_writes_to_every_connection_on_every_tick() {
    let result = floor(&["--mode", "push", "--rate", "20", "--size", "300"]);
    // 20 ticks in the 1 s window (0, 50, ..., 950 ms), one write to each of 20 connections; the
    // command itself fails unless the clients received every byte written.
    assert_eq!(result["operations"], 400, "{result}");
    assert_eq!(result["would_block"], 0, "{result}");
    assert_eq!(result["size"], 300);
    assert!(result["cpu_s"].as_f64().unwrap() > 0.0, "{result}");
    let per_cpu = result["per_cpu_second"].as_f64().unwrap();
    let us = result["us_per_operation"].as_f64().unwrap();
    assert!((per_cpu * us / 1e6 - 1.0).abs() < 1e-6, "{result}");
}

#[test]
fn request_answers_every_poll_with_the_same_bytes() {
    // Each client checks each answer byte for byte; a wrong one fails the command.
    let result = floor(&["--mode", "request", "--interval", "50ms", "--size", "2KiB"]);
    let answers = result["operations"].as_u64().unwrap();
    assert!((1..=20 * 21).contains(&answers), "{result}");
    assert_eq!(result["size"], 2048);
}

#[test]
fn bad_floor_flags_are_usage_errors() {
    for (flag, value, says) in [
        ("--clients", "0", "out of range"),
        ("--rate", "nan", "not a rate"),
        ("--size", "2MiB", "out of range"),
        ("--server-cpus", "1000", "not one this process may use"),
        ("--mode", "pull", "invalid value"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_commbench"))
            .args(["floor", flag, value])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(says), "{flag} {value}: {stderr}");
    }
}

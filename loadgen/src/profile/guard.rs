//! `commbench guard -- COMMAND…` (hidden): what a profile's `[start]` command runs under, so that a
//! launcher that forks without `exec` (`npm start`, a shell that backgrounds its server) cannot
//! leave its server behind. The guard leads a process group of its own, which the command and
//! everything it forks join: commbench's stop signals the whole group, and when commbench is gone —
//! even SIGKILLed, when the kernel's parent-death signal reaches only the direct child — the guard
//! kills the group.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Child, ExitCode, ExitStatus},
    time::Duration,
};

use nix::{
    sys::{
        prctl,
        signal::{killpg, SigSet, Signal},
    },
    unistd::{getpgrp, getpid, getppid},
};

/// How often the guard looks whether commbench is still there and the group is done.
const WATCH: Duration = Duration::from_millis(100);

/// The stop signals a profile may choose (`stop_signal`). They go to the whole group, the guard
/// included, which holds them off to see the stop through.
const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Runs `command` in the guard's process group until it and everything it started have ended (its
/// exit status is the guard's), or until commbench is gone (then the whole group is killed).
pub fn run(command: &[String]) -> ExitCode {
    let Some((program, args)) = command.split_first() else {
        eprintln!("error: guard needs a command to run");
        return ExitCode::from(2);
    };
    let parent = getppid();
    // Started with the parent-death SIGKILL every child of commbench gets: the guard has to outlive
    // commbench to pass it on to the group.
    if let Err(error) = prctl::set_pdeathsig(None) {
        eprintln!("error: guard cannot clear its parent-death signal: {error}");
        return ExitCode::FAILURE;
    }
    let mut child = match std::process::Command::new(program).args(args).spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("error: cannot start {program}: {error}");
            return ExitCode::from(127);
        }
    };
    // Only now, so that the command starts with these signals unblocked.
    let mut stops = SigSet::empty();
    for signal in STOP_SIGNALS {
        stops.add(signal);
    }
    if let Err(error) = stops.thread_block() {
        eprintln!("warning: guard cannot hold off stop signals: {error}");
    }
    let mut status = None;
    loop {
        if getppid() != parent {
            // commbench is gone: so is everything it started (the guard too).
            let _ = killpg(getpgrp(), Signal::SIGKILL);
        }
        if status.is_none() {
            status = ended(&mut child);
        }
        if let Some(status) = status {
            if !others_in_group() {
                return exit_code(status);
            }
        }
        std::thread::sleep(WATCH);
    }
}

fn ended(child: &mut Child) -> Option<ExitStatus> {
    match child.try_wait() {
        Ok(status) => status,
        // Nothing left to wait for: count it as a failure, not as running forever.
        Err(_) => Some(ExitStatus::from_raw(1 << 8)),
    }
}

/// Whether a live process other than the guard is still in its process group.
fn others_in_group() -> bool {
    let me = getpid().as_raw();
    let group = getpgrp().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            return false;
        };
        pid != me && crate::procstat::group_of_live(pid as u32) == Some(group)
    })
}

/// The command's status as the guard's own: its code, or 128 + the signal that ended it.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

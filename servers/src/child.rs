//! Child processes that die with this process, even when it is SIGKILLed: the private brokers, the
//! embedded servers, the load workers and a profile's server are all started here.
//!
//! The kernel does the killing: each child is started with the parent-death signal set to SIGKILL
//! (`prctl(PR_SET_PDEATHSIG)`), which it keeps across `exec`. That signal fires when the *thread*
//! that forked the child exits, not when the process does; a child forked by a tokio worker or
//! blocking-pool thread would be killed when that thread ends. So every child is forked by one
//! thread (`child-spawner`) that lives as long as the process: callers hand it their command and
//! wait for the started child. A parent that dies between the fork and the `prctl` is caught by a
//! check of the child's parent id right after it.
//!
//! What the signal does not reach: a process the child forks and does not `exec` into (a start
//! script that keeps running beside its server, a daemon that detaches). Launchers that start such
//! programs make them `exec` (see `broker/rabbitmq.rs`).

use std::{
    io,
    panic::AssertUnwindSafe,
    sync::{mpsc, OnceLock},
};

type Job = Box<dyn FnOnce() + Send>;

/// Starts `command` (from the spawner thread) so that the child dies with this process.
pub fn spawn(mut command: std::process::Command) -> io::Result<std::process::Child> {
    die_with_parent(&mut command);
    on_spawner(move || command.spawn())?
}

/// [`spawn`] for a tokio command; the child belongs to the calling runtime, so this must be called
/// from within one.
pub fn spawn_tokio(mut command: tokio::process::Command) -> io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("no tokio runtime to own the child: {e}")))?;
    die_with_parent(command.as_std_mut());
    on_spawner(move || {
        let _entered = runtime.enter();
        command.spawn()
    })?
}

/// Runs `job` on the spawner thread and waits for its result.
fn on_spawner<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    static SPAWNER: OnceLock<io::Result<mpsc::Sender<Job>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(start_spawner).as_ref().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start the child-spawner thread: {e}"),
        )
    })?;
    let (done, result) = mpsc::sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = done.send(job());
    });
    let gone = || io::Error::other("the child-spawner thread is gone");
    spawner.send(job).map_err(|_| gone())?;
    result.recv().map_err(|_| gone())
}

/// The spawner thread: it runs jobs until the process ends (its sender lives in a static, so the
/// channel never closes). A job that panics is contained: the thread must not end, or the
/// children it forked would be killed with it.
fn start_spawner() -> io::Result<mpsc::Sender<Job>> {
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("child-spawner".into())
        .spawn(move || {
            for job in queue {
                let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
            }
        })?;
    Ok(jobs)
}

/// Makes the child ask for SIGKILL when its parent (thread) dies, and give up if the parent is
/// already gone.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;

    use nix::{
        errno::Errno,
        sys::{prctl, signal::Signal},
        unistd::{getppid, Pid},
    };
    let parent = Pid::this();
    // SAFETY: the closure runs in the forked child before `exec`, where only async-signal-safe
    // calls are allowed: it makes two system calls (prctl, getppid) through nix's thin wrappers,
    // allocates nothing and takes no lock. Returning an error makes the child exit before `exec`.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            if getppid() != parent {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut std::process::Command) {}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parent_of(pid: u32) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.split(' ').nth(1)?.parse().ok()
    }

    /// The parent-death signal fires when the forking thread ends: a child must not die with the
    /// short-lived thread that asked for it (the SIGKILL of the whole process is tested end to end
    /// in loadgen/tests/orphans.rs).
    #[test]
    fn a_child_outlives_the_thread_that_asked_for_it() {
        let mut child = std::thread::spawn(|| {
            let mut sleep = std::process::Command::new("sleep");
            sleep.arg("30");
            spawn(sleep).unwrap_or_else(|e| panic!("{e}"))
        })
        .join()
        .unwrap_or_else(|_| panic!("the asking thread panicked"));
        std::thread::sleep(Duration::from_millis(300));
        let exited = child.try_wait().ok().flatten();
        let parent = parent_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            exited, None,
            "the child died with the thread that asked for it"
        );
        assert_eq!(parent, Some(std::process::id()));
    }

    #[test]
    fn a_missing_program_is_a_not_found_error() {
        let command = std::process::Command::new("commbench-no-such-program");
        let error = spawn(command).err().map(|e| e.kind());
        assert_eq!(error, Some(io::ErrorKind::NotFound));
    }

    #[tokio::test]
    async fn a_tokio_child_is_owned_by_the_calling_runtime() {
        let mut echo = tokio::process::Command::new("sh");
        echo.args(["-c", "exit 7"]);
        let mut child = spawn_tokio(echo).unwrap_or_else(|e| panic!("{e}"));
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        let code = status.ok().and_then(Result::ok).and_then(|s| s.code());
        assert_eq!(code, Some(7));
    }
}

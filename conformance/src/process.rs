//! Every external program a test runs (openssl, curl, psql, the `ca-server` CLI, lego, certbot,
//! python, promtool, pkilint) goes through [`output_within`]: it runs in its own process group
//! with a time limit, so one stuck tool fails its test with "timed out after N s" instead of
//! hanging the suite. On the deadline the whole group is SIGKILLed (lego's and certbot's
//! children included), and the panic says it was a timeout, not a failed exit.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Limit for quick tools (openssl, curl, psql, promtool, lint_crl).
pub const QUICK: Duration = Duration::from_secs(60);
/// Limit for one `ca-server` CLI command.
pub const CLI: Duration = Duration::from_secs(120);
/// Limit for one run of an ACME client (lego, certbot) or the hvac script.
pub const CLIENT: Duration = Duration::from_secs(300);

/// Why a bounded run did not produce an exit status.
#[derive(Debug)]
pub enum Bounded {
    /// It exited (successfully or not).
    Exited(Output),
    /// It was still running at the deadline and its process group was killed; what it wrote
    /// until then.
    TimedOut(Output),
}

/// Runs `cmd` to completion within `limit`, feeding it `input` on stdin (none: `/dev/null`).
/// Panics only if the program cannot be started.
pub fn run_within(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Bounded {
    cmd.process_group(0)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", describe(cmd)));
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&bytes);
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let (status, timed_out) = match wait_within(&mut child, limit) {
        Some(status) => (status, false),
        None => (kill_group(&mut child), true),
    };
    // The pipes close when the group is gone; a grandchild that escaped the group could keep
    // them open, so the output is waited for only briefly.
    let collect =
        |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    if timed_out {
        Bounded::TimedOut(output)
    } else {
        Bounded::Exited(output)
    }
}

/// [`run_within`] for a program expected to finish: its output whatever the exit status; a
/// timeout panics with `"… timed out after …"` and what the program wrote so far.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    output_with_input(cmd, None, limit)
}

/// As [`output_within`], feeding `input` on stdin.
pub fn output_with_input(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    match run_within(cmd, input, limit) {
        Bounded::Exited(out) => out,
        Bounded::TimedOut(out) => panic!(
            "{} timed out after {limit:?} (process group killed); output so far:\n{}{}",
            describe(cmd),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Waits for `child` until `limit`; `None` if it is still running then.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => return None,
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// SIGKILLs the process group led by `child` (spawned with `process_group(0)`) and reaps it.
pub fn kill_group(child: &mut Child) -> ExitStatus {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    child
        .wait()
        .unwrap_or_else(|e| panic!("reaping pid {}: {e}", child.id()))
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        let _ = tx.send(bytes);
    });
    rx
}

/// `program arg1 arg2 …`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_program_is_a_timeout_and_its_children_die_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pid_file = dir.path().join("child.pid");
        let script = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pid_file.display()
        );
        let started = Instant::now();
        let Bounded::TimedOut(out) = run_within(
            Command::new("sh").args(["-c", &script]),
            None,
            Duration::from_millis(500),
        ) else {
            panic!("a 300 s sleep finished within 0.5 s")
        };
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
        let pid = std::fs::read_to_string(&pid_file).expect("pid");
        // Dead: gone, or a zombie waiting for whoever adopted it.
        let dead = || {
            std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'))
                })
                .unwrap_or(true)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !dead() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(dead(), "the grandchild was killed with the group");
    }

    #[test]
    fn exits_are_reported_with_their_output() {
        let Bounded::Exited(out) = run_within(
            Command::new("sh").args(["-c", "cat; echo err >&2; exit 3"]),
            Some(b"in"),
            QUICK,
        ) else {
            panic!("timed out")
        };
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(
            (&out.stdout[..], &out.stderr[..]),
            (&b"in"[..], &b"err\n"[..])
        );
    }

    #[test]
    #[should_panic(expected = "timed out after")]
    fn output_within_panics_with_timed_out() {
        output_within(Command::new("sleep").arg("30"), Duration::from_millis(200));
    }
}

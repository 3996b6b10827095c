//! The real `confab` binary in a child process: for `kill -9`, signals and the demo.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// The `confab` binary, built by cargo for the profile these tests run in (a no-op when
/// it is up to date).
pub async fn confab_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        let exe = std::env::current_exe().expect("test binary path");
        let profile_dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target/<profile>")
            .to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args([
            "build",
            "--quiet",
            "-p",
            "confab-gateway",
            "--bin",
            "confab",
        ]);
        if release {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building the confab binary failed");
        let binary = profile_dir.join("confab");
        assert!(binary.exists(), "{} missing", binary.display());
        binary
    })
    .await
    .expect("build task")
}

pub struct Process {
    child: Child,
    pub base: String,
}

impl Process {
    /// Starts the binary and reads its output until `found` extracts the base URL.
    fn spawn(mut command: Command, found: impl Fn(&str) -> Option<String>) -> Process {
        command
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command.spawn().expect("confab starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next()
                .expect("confab printed its address before exiting")
                .expect("readable output");
            if let Some(base) = found(&line) {
                break base;
            }
        };
        // Keep draining the output so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, base }
    }

    /// `confab serve` on `dir`, on a free port.
    pub fn serve(binary: &Path, dir: &Path, admin_token: &str) -> Process {
        Self::serve_with(binary, dir, admin_token, &[])
    }

    /// `confab serve` on `dir` with extra arguments (`--config FILE`).
    pub fn serve_with(
        binary: &Path,
        dir: &Path,
        admin_token: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Process {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("CONFAB_ADMIN_TOKEN", admin_token);
        Self::spawn(command, |line| {
            let at = line.find("addr=")?;
            let addr: String = line[at + 5..]
                .chars()
                .skip_while(|c| !c.is_ascii_digit())
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect();
            Some(format!("http://{addr}"))
        })
    }

    /// `confab demo` on `dir`; the base URL and agent token come from its banner.
    pub fn demo(binary: &Path, dir: &Path) -> (Process, String) {
        let mut command = Command::new(binary);
        command
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env_remove("CONFAB_ADMIN_TOKEN");
        let mut process = Self::spawn(command, |line| {
            let rest = line.trim().strip_prefix("export CONFAB=")?;
            Some(rest.to_string())
        });
        // The line is `export CONFAB=http://ADDR TOKEN=cfb_…`.
        let (base, token) = process.base.split_once(" TOKEN=").expect("banner line");
        let (base, token) = (base.to_string(), token.to_string());
        process.base = base;
        (process, token)
    }

    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("reaped")
    }
}

/// A test that fails half-way must not leave a server running behind it.
impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

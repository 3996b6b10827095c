//! A real IMAP server for the tests: Debian's Dovecot (`dovecot-imapd`), started per test
//! as a child process with a temporary configuration and maildir, on a free loopback
//! port, plain IMAP (loopback only), one user `lead`. Mail is delivered with `doveadm
//! save`, the server's own delivery path; `doveadm` also kicks the user off (a dropped
//! connection) and renumbers the mailbox (a new UIDVALIDITY).

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const USER: &str = "lead";
pub const PASSWORD: &str = "imap-secret";

pub struct Dovecot {
    pub port: u16,
    conf: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGKILL to the master takes its processes down with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dovecot_binary() -> String {
    std::env::var("DOVECOT").unwrap_or_else(|_| "/usr/sbin/dovecot".into())
}

impl Dovecot {
    pub async fn start() -> Dovecot {
        let dir = tempfile::tempdir().expect("temp dir");
        // Dovecot's auth process runs as its own user: it must read the directory.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let root = std::fs::metadata("/proc/self")
            .map(|m| m.uid() == 0)
            .unwrap_or(false);
        let passwd = dir.path().join("passwd");
        std::fs::write(&passwd, format!("{USER}:{{PLAIN}}{PASSWORD}\n")).expect("passwd");
        std::fs::set_permissions(&passwd, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mail = dir.path().join("mail");
        std::fs::create_dir_all(&mail).expect("mail dir");
        let (uid, gid) = if root {
            // Mail is never owned by root: the `nobody` user.
            std::os::unix::fs::chown(&mail, Some(65534), Some(65534)).expect("chown");
            (65534, 65534)
        } else {
            let me = std::fs::metadata("/proc/self").expect("self");
            (me.uid(), me.gid())
        };
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let d = dir.path().display();
            let non_root = if root {
                String::new()
            } else {
                let user = std::env::var("USER").unwrap_or_else(|_| "nobody".into());
                format!(
                    "default_internal_user = {user}\ndefault_login_user = {user}\n\
                     default_internal_group = {gid}\n"
                )
            };
            let chroot = if root { "" } else { "  chroot =\n" };
            let conf = dir.path().join("dovecot.conf");
            std::fs::write(
                &conf,
                format!(
                    "base_dir = {d}/run-{port}\nstate_dir = {d}/state\ninstance_name = confab-{port}\n\
                     log_path = {d}/dovecot.log\nprotocols = imap\nlisten = 127.0.0.1\nssl = no\n\
                     disable_plaintext_auth = no\nauth_mechanisms = plain login\nauth_failure_delay = 0\n\
                     mail_location = maildir:{d}/mail/%u\n{non_root}\
                     passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {d}/passwd\n}}\n\
                     userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/mail/%u\n}}\n\
                     service imap-login {{\n{chroot}  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n\
                       inet_listener imaps {{\n    port = 0\n  }}\n}}\n\
                     service anvil {{\n{chroot}}}\n"
                ),
            )
            .expect("config");
            let mut child = Command::new(dovecot_binary())
                .args(["-F", "-c"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("dovecot (Debian's dovecot-imapd) must be installed");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    // 89: the port was taken meanwhile; try another.
                    let mut err = String::new();
                    if let Some(mut stderr) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
                    }
                    last_error = format!("dovecot exited with {status}: {err}");
                    break;
                }
                if greeting(port).await {
                    return Dovecot {
                        port,
                        conf,
                        child,
                        _dir: dir,
                    };
                }
                assert!(Instant::now() < deadline, "dovecot did not start in time");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("dovecot did not start: {last_error}");
    }

    fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) {
        let mut child = Command::new(std::env::var("DOVEADM").unwrap_or_else(|_| "doveadm".into()))
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("doveadm");
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).expect("write to doveadm");
        }
        let output = child.wait_with_output().expect("doveadm ran");
        assert!(
            output.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Delivers a message to the user's INBOX.
    pub fn deliver(&self, raw: &str) {
        self.doveadm(&["save", "-u", USER, "-m", "INBOX"], Some(raw.as_bytes()));
    }

    /// Drops every connection of the user (the server says BYE).
    pub fn kick(&self) {
        self.doveadm(&["kick", USER], None);
    }

    /// Gives the INBOX a new UIDVALIDITY: clients must read it anew.
    pub fn renumber(&self, validity: u32) {
        self.doveadm(
            &[
                "mailbox",
                "update",
                "-u",
                USER,
                "--uid-validity",
                &validity.to_string(),
                "INBOX",
            ],
            None,
        );
    }
}

/// Whether an IMAP server greets on `port`.
async fn greeting(port: u16) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    else {
        return false;
    };
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await,
        Ok(Ok(n)) if buf[..n].starts_with(b"* OK")
    )
}

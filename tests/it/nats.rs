//! Real NATS servers for the tests: Debian's `nats-server` (2.9), a cluster of three with
//! JetStream started per test as child processes, each with its own temporary store and
//! free loopback ports (client, cluster routes, monitoring). A server can be killed
//! (SIGKILL), frozen (SIGSTOP) and thawed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsCluster {
    servers: Vec<Server>,
    _dir: tempfile::TempDir,
}

struct Server {
    client_port: u16,
    monitor_port: u16,
    child: Option<Child>,
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            if let Some(child) = &mut server.child {
                // A frozen server must be thawed to die promptly.
                signal(child.id(), "-CONT");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn binary() -> String {
    std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl NatsCluster {
    /// Three servers in one JetStream cluster, each answering its health check with
    /// JetStream enabled, and a JetStream meta leader elected.
    pub async fn start() -> NatsCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, route, _)| format!("nats://127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = Vec::new();
        for (i, &(client, route, monitor)) in ports.iter().enumerate() {
            let store: PathBuf = dir.path().join(format!("n{i}"));
            let conf = dir.path().join(format!("n{i}.conf"));
            std::fs::write(
                &conf,
                format!(
                    "server_name: n{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
                     jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n\
                     cluster {{\n  name: confab\n  listen: 127.0.0.1:{route}\n  routes: [ {routes} ]\n}}\n",
                    store.display()
                ),
            )
            .expect("nats config");
            let log = std::fs::File::create(dir.path().join(format!("n{i}.log"))).expect("log");
            let child = Command::new(binary())
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("nats-server starts (Debian's nats-server package)");
            servers.push(Server {
                client_port: client,
                monitor_port: monitor,
                child: Some(child),
            });
        }
        let mut cluster = NatsCluster { servers, _dir: dir };
        cluster.wait_ready(Duration::from_secs(30)).await;
        cluster
    }

    async fn wait_ready(&mut self, within: Duration) {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + within;
        for (i, server) in self.servers.iter_mut().enumerate() {
            loop {
                // A server that could not start (a port taken meanwhile) says why.
                if let Some(status) = server
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    let log = std::fs::read_to_string(self._dir.path().join(format!("n{i}.log")))
                        .unwrap_or_default();
                    panic!("nats-server n{i} exited ({status}):\n{log}");
                }
                let url = format!("http://127.0.0.1:{}/jsz", server.monitor_port);
                let leader = match http.get(&url).send().await {
                    Ok(r) => r
                        .json::<serde_json::Value>()
                        .await
                        .ok()
                        .and_then(|v| v["meta_cluster"]["leader"].as_str().map(str::to_owned)),
                    Err(_) => None,
                };
                if leader.is_some_and(|l| !l.is_empty()) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the NATS cluster did not elect a JetStream leader within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The client URL of server `i`.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].client_port)
    }

    pub fn urls(&self) -> Vec<String> {
        (0..self.servers.len()).map(|i| self.url(i)).collect()
    }

    /// SIGKILL to server `i`: gone at once, as in a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP to server `i`: its connections stay open and nothing answers.
    pub fn freeze(&self, i: usize) {
        if let Some(child) = &self.servers[i].child {
            signal(child.id(), "-STOP");
        }
    }

    /// SIGCONT to a frozen server `i`: it answers again, with what it held.
    pub fn thaw(&self, i: usize) {
        if let Some(child) = &self.servers[i].child {
            signal(child.id(), "-CONT");
        }
    }
}

//! `confab-load` end to end: the real binary against a Confab server running in this
//! process (port 0, temporary data directory), through the command line outside checks use.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use confab_gateway::{Config, Server};
use serde_json::Value;
use tokio::net::TcpListener;

struct Running {
    server: Server,
    admin_token: String,
    _dir: tempfile::TempDir,
}

async fn server(adjust: impl FnOnce(&mut Config)) -> Running {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_token = format!("admin-{}", confab_engine::admin::new_token());
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(admin_token.clone()),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Config::default()
    };
    adjust(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = confab_gateway::start_on(config, listener)
        .await
        .expect("server starts");
    Running {
        server,
        admin_token,
        _dir: dir,
    }
}

/// Runs `confab-load` with `args` against `running`; returns its `--json` report.
async fn load(running: &Running, args: &[&str]) -> Value {
    let url = format!("http://{}", running.server.addr());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_confab-load"))
        .args([
            "--url",
            &url,
            "--admin-token",
            &running.admin_token,
            "--json",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("confab-load starts");
    let output = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("confab-load ends within its run time")
        .expect("confab-load output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last line is not the JSON report ({e}): {stdout}\n{stderr}"))
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} missing in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_webhook_is_acknowledged_and_every_delta_delivered() {
    let running = server(|_| {}).await;
    let report = load(
        &running,
        &[
            "--rate",
            "300",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--subscribers",
            "2",
            "--conversations",
            "20",
        ],
    )
    .await;
    assert_eq!(report["mode"], "load");
    let sent = count(&report, "sent");
    assert!(sent >= 300, "{report}");
    assert_eq!(count(&report, "acked"), sent, "{report}");
    assert_eq!(count(&report, "errors"), 0, "{report}");
    assert_eq!(count(&report, "deltas_expected"), 2 * sent, "{report}");
    assert_eq!(count(&report, "deltas_received"), 2 * sent, "{report}");
    for field in [
        "rate",
        "webhook_p50_ms",
        "webhook_p99_ms",
        "delta_p50_ms",
        "delta_p99_ms",
    ] {
        assert!(report[field].as_f64().is_some(), "{field} in {report}");
    }
    running.server.shutdown().await.expect("shutdown");
}

/// A server that drops its subscribers as too slow after a few queued frames: they
/// resume with `since` and still receive every delta exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_closed_as_slow_resume_without_losing_a_delta() {
    let running = server(|c| c.stream.queue_capacity = 2).await;
    let report = load(
        &running,
        &[
            "--rate",
            "max",
            "--concurrency",
            "32",
            "--duration",
            "2",
            "--warmup",
            "0",
            "--subscribers",
            "3",
            "--conversations",
            "50",
        ],
    )
    .await;
    let sent = count(&report, "sent");
    assert!(sent > 0, "{report}");
    assert_eq!(count(&report, "acked"), sent, "{report}");
    assert!(count(&report, "resumes") > 0, "{report}");
    assert_eq!(count(&report, "errors"), 0, "{report}");
    assert_eq!(count(&report, "deltas_duplicate"), 0, "{report}");
    assert_eq!(count(&report, "deltas_received"), 3 * sent, "{report}");
    running.server.shutdown().await.expect("shutdown");
}

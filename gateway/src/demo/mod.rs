//! `confab demo`: the real server, plus everything needed to see it work without a Meta,
//! mail or LinkedIn account. It provisions a demo workspace through the admin API
//! ([`seed`]), gives it a WhatsApp channel whose Graph API is a loopback [`sandbox`] that
//! answers sends and reports delivery statuses, an email channel sending to a loopback
//! [`smtp_sink`], a LinkedIn channel whose Unipile API is a loopback [`unipile`] stand-in,
//! and lets simulated [`leads`] write in through the channels' webhook paths.
//! Nothing here reaches into the engine: all traffic takes the same HTTP routes as in
//! production, which is the point of the demo.

pub mod leads;
pub mod sandbox;
pub mod seed;
pub mod smtp_sink;
pub mod unipile;

use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::config::Config;
use crate::server::Server;
use sandbox::{Sandbox, SandboxConfig};
use seed::DemoState;
use smtp_sink::SmtpSink;

/// Where the demo keeps its data unless told otherwise, so it never mixes with a real
/// install in the default `./confab-data`.
pub const DEMO_DATA_DIR: &str = "./confab-demo-data";

/// Runs the demo until `signal` resolves (or the server fails), then stops the leads first
/// (so nothing writes into a draining server), the server, and the sandbox last (the
/// server's outbound queue may still be sending to it while draining).
pub async fn run(mut config: Config, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
    let own_data_dir = config.data_dir == Config::default().data_dir;
    if own_data_dir {
        config.data_dir = PathBuf::from(DEMO_DATA_DIR);
    }
    // Provisioning goes through the admin API, which needs a token; a generated one lives
    // only as long as this process.
    let generated_admin_token = config.admin_token.is_none();
    let admin_token = config
        .admin_token
        .get_or_insert_with(confab_engine::admin::new_token)
        .clone();
    let data_dir = config.data_dir.clone();
    let saved = {
        let dir = data_dir.clone();
        tokio::task::spawn_blocking(move || seed::load(&dir))
            .await
            .context("reading the demo state panicked")?
    };
    let sandbox_listener = bind_sandbox(saved.as_ref()).await?;
    let sink = start_sink(saved.as_ref()).await?;
    // The Unipile stand-in plays the remembered account (or a new one, created with it).
    let linkedin = saved
        .as_ref()
        .and_then(|s| s.linkedin.clone())
        .unwrap_or_else(seed::DemoLinkedin::generate);
    let unipile = unipile::UnipileSandbox::start(&linkedin.account_id, &linkedin.api_key).await?;

    let server = crate::server::start(config).await?;
    let setup = set_up(
        &server,
        &data_dir,
        &admin_token,
        saved,
        sandbox_listener,
        &sink,
        (&linkedin, &unipile.base_url),
    )
    .await;
    let (state, sandbox) = match setup {
        Ok(ready) => ready,
        Err(e) => {
            if let Err(stop) = server.shutdown().await {
                tracing::warn!(error = %stop, "the server did not stop cleanly");
            }
            return Err(e);
        }
    };
    let mailbox = state
        .mailbox
        .clone()
        .context("the demo mailbox was not provisioned")?;
    let mailer = leads::Mailer::new(
        &format!(
            "http://{}/webhooks/email/{}",
            reachable(server.addr()),
            mailbox.id
        ),
        &mailbox.inbound_secret,
        seed::MAILBOX_ADDRESS,
    )?;
    let account = state
        .linkedin
        .clone()
        .context("the demo LinkedIn channel was not provisioned")?;
    unipile.connect(
        format!(
            "http://{}/webhooks/linkedin/{}",
            reachable(server.addr()),
            account.id
        ),
        account.webhook_secret.clone(),
    );
    let leads = leads::start(
        leads::Wires {
            webhooks: sandbox.webhooks(),
            mail: mailer,
            linkedin: unipile.writer(),
        },
        leads::Heard {
            sent: sandbox.subscribe(),
            mailed: sink.subscribe(),
            linkedin: unipile.subscribe(),
        },
        &state.script_progress,
    );

    print!(
        "{}",
        banner(&Banner {
            addr: reachable(server.addr()),
            data_dir: &data_dir,
            own_data_dir,
            state: &state,
            admin_token: generated_admin_token.then_some(admin_token.as_str()),
            sandbox_base_url: &sandbox.base_url,
            smtp_sink: Some(sink.addr),
            unipile_base_url: Some(&unipile.base_url),
        })
    );

    // The leads stop inside the shutdown signal, before the server drains; their progress
    // comes out through `progress` (it does not when the server fails on its own).
    let (progress_tx, mut progress) = oneshot::channel();
    let result = server
        .run_until(async move {
            signal.await;
            let _ = progress_tx.send(leads.stop().await);
        })
        .await;
    sandbox.stop().await;
    if let Ok(script_progress) = progress.try_recv() {
        let state = DemoState {
            script_progress,
            ..state
        };
        let saved = tokio::task::spawn_blocking(move || seed::save(&data_dir, &state)).await;
        if let Err(e) = saved.map_err(anyhow::Error::from).and_then(|saved| saved) {
            tracing::warn!(error = %e, "cannot remember the leads' progress");
        }
    }
    result
}

/// Provisions (or finds) the demo workspace and starts the sandbox for its channel.
async fn set_up(
    server: &Server,
    data_dir: &Path,
    admin_token: &str,
    saved: Option<DemoState>,
    sandbox_listener: TcpListener,
    sink: &SmtpSink,
    (linkedin, unipile_base_url): (&seed::DemoLinkedin, &str),
) -> anyhow::Result<(DemoState, Sandbox)> {
    let base_url = format!("http://{}", reachable(server.addr()));
    let sandbox_addr = sandbox_listener.local_addr()?;
    let state = seed::ensure(
        &server.app().store,
        data_dir,
        &base_url,
        admin_token,
        saved,
        seed::StandIns {
            sandbox_base_url: &sandbox::base_url(sandbox_addr),
            smtp_port: sink.addr.port(),
            linkedin,
            unipile_base_url,
        },
    )
    .await
    .context("cannot provision the demo workspace")?;
    let channel = &state.channel;
    let sandbox = sandbox::start_on(
        sandbox_listener,
        SandboxConfig::new(
            format!("{base_url}/webhooks/whatsapp/{}", channel.id),
            &channel.phone_number_id,
            &channel.app_secret,
            &channel.access_token,
        ),
    )?;
    Ok((state, sandbox))
}

/// Binds the sandbox where the remembered channel expects it, so the channel (and the
/// conversations on it) can be reused; any free port when that is not possible.
async fn bind_sandbox(saved: Option<&DemoState>) -> anyhow::Result<TcpListener> {
    let remembered = saved
        .and_then(|state| reqwest::Url::parse(&state.channel.api_base_url).ok())
        .filter(|url| url.host_str() == Some("127.0.0.1"))
        .and_then(|url| url.port());
    if let Some(port) = remembered {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
            Ok(listener) => return Ok(listener),
            Err(e) => tracing::warn!(port, error = %e, "the sandbox's previous port is taken"),
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .context("cannot bind the WhatsApp sandbox on 127.0.0.1")
}

/// Starts the SMTP sink the demo mailbox sends to, where it listened before if it can.
async fn start_sink(saved: Option<&DemoState>) -> anyhow::Result<SmtpSink> {
    if let Some(port) = saved.and_then(|s| s.mailbox.as_ref()).map(|m| m.smtp_port) {
        match SmtpSink::start((Ipv4Addr::LOCALHOST, port).into()).await {
            Ok(sink) => return Ok(sink),
            Err(e) => tracing::warn!(port, error = %e, "the SMTP sink's previous port is taken"),
        }
    }
    SmtpSink::start((Ipv4Addr::LOCALHOST, 0).into())
        .await
        .context("cannot bind the demo's SMTP sink on 127.0.0.1")
}

/// The address a local client uses to reach a server listening on `addr`: a wildcard
/// address (`0.0.0.0`, `::`) is not something to connect to.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

struct Banner<'a> {
    addr: SocketAddr,
    data_dir: &'a Path,
    /// Whether the demo chose the data dir itself (rather than the user).
    own_data_dir: bool,
    state: &'a DemoState,
    /// Printed only when the demo generated it: a token the user configured is theirs.
    admin_token: Option<&'a str>,
    sandbox_base_url: &'a str,
    /// Where the demo mailbox's mail goes.
    smtp_sink: Option<SocketAddr>,
    /// Where the demo LinkedIn account's Unipile stand-in listens.
    unipile_base_url: Option<&'a str>,
}

/// What the demo prints once it is ready: where things are, the tokens, and commands to
/// paste.
fn banner(b: &Banner<'_>) -> String {
    let addr = b.addr;
    let token = &b.state.agent_token;
    let data_dir = b.data_dir.display();
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    let rule = "=".repeat(78);
    line("");
    line(&rule);
    line("  Confab demo is running");
    line(&rule);
    line(&format!("  Web inbox     http://{addr}/"));
    line(&format!(
        "                sign in as {} with the password {}",
        seed::AGENT_EMAIL,
        seed::AGENT_PASSWORD
    ));
    line(&format!("  API base      http://{addr}/api/v1"));
    line(&format!(
        "  Workspace     {} ({})",
        seed::WORKSPACE_NAME,
        b.state.workspace_id
    ));
    line(&format!(
        "  WhatsApp      channel {}, sending to the built-in sandbox at {}",
        b.state.channel.id, b.sandbox_base_url
    ));
    line("                (loopback only: no real WhatsApp message leaves this machine)");
    if let (Some(mailbox), Some(sink)) = (&b.state.mailbox, b.smtp_sink) {
        line(&format!(
            "  Email         channel {} ({}), sending to the built-in SMTP sink at {sink}",
            mailbox.id,
            seed::MAILBOX_ADDRESS
        ));
        line("                (loopback only: no real mail leaves this machine)");
    }
    if let (Some(account), Some(url)) = (&b.state.linkedin, b.unipile_base_url) {
        line(&format!(
            "  LinkedIn      channel {}, through the built-in Unipile stand-in at {url}",
            account.id
        ));
        line("                (loopback only: no real LinkedIn message leaves this machine)");
    }
    line(&format!("  Agent token   {token}"));
    match b.admin_token {
        Some(admin) => line(&format!(
            "  Admin token   {admin}   (generated for this run; set CONFAB_ADMIN_TOKEN to choose one)"
        )),
        None => line("  Admin token   the one you configured (CONFAB_ADMIN_TOKEN or --config)"),
    }
    let mut dir_line = format!("  Data dir      {data_dir}");
    if b.own_data_dir {
        let _ = write!(
            dir_line,
            "   (demo-only, apart from `confab serve`'s ./confab-data; pass --data-dir to change)"
        );
    }
    line(&dir_line);
    line("                The demo reuses its workspace on restart; delete the directory to start over.");
    line("");
    line("  Simulated leads write in every 2-5 s through the signed webhooks");
    line(&format!(
        "  POST /webhooks/whatsapp/{} (/webhooks/email/… and /webhooks/linkedin/… for the others);",
        b.state.channel.id
    ));
    line("  answer one and they may write back.");
    line("");
    line("  Try it (jq is optional: drop `| jq` to see raw JSON):");
    line("");
    line(&format!("    export CONFAB=http://{addr} TOKEN={token}"));
    line("");
    line("    # list conversations, newest activity first");
    line("    curl -s -H \"Authorization: Bearer $TOKEN\" $CONFAB/api/v1/conversations | jq");
    line("");
    line("    # read the newest conversation (or set CONV to an id from the list)");
    line("    CONV=$(curl -s -H \"Authorization: Bearer $TOKEN\" $CONFAB/api/v1/conversations | jq -r '.items[0].id')");
    line("    curl -s -H \"Authorization: Bearer $TOKEN\" $CONFAB/api/v1/conversations/$CONV/messages | jq");
    line("");
    line("    # reply as the agent: the sandbox reports it sent, delivered, then read");
    line("    curl -s -X POST -H \"Authorization: Bearer $TOKEN\" -H 'content-type: application/json' \\");
    line("      -d '{\"text\":\"Hi {{first_name}}, happy to help! When suits you for a quick call?\"}' \\");
    line("      $CONFAB/api/v1/conversations/$CONV/messages | jq");
    line("");
    line("    # watch the live stream, then type: {\"type\":\"subscribe\",\"since\":null}");
    line(&format!(
        "    websocat -H \"Authorization: Bearer $TOKEN\" ws://{addr}/api/v1/stream"
    ));
    line("    # no websocat? Python's websockets package (pip install websockets) and a ticket:");
    line(&format!(
        "    python3 -m websockets \"ws://{addr}/api/v1/stream?ticket=$(curl -s -X POST -H \"Authorization: Bearer $TOKEN\" $CONFAB/api/v1/stream/ticket | jq -r .ticket)\""
    ));
    line("");
    line("  Ctrl-C stops the demo.");
    line(&rule);
    line("");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use seed::DemoChannel;

    fn state() -> DemoState {
        DemoState {
            workspace_id: "WS".into(),
            agent_id: "AG".into(),
            agent_token: "cfb_agent".into(),
            channel: DemoChannel {
                id: "CH".into(),
                phone_number_id: "100000000000002".into(),
                app_secret: "s3cr3t-app".into(),
                verify_token: "s3cr3t-verify".into(),
                access_token: "s3cr3t-access".into(),
                api_base_url: "http://127.0.0.1:4000".into(),
            },
            script_progress: Vec::new(),
            mailbox: Some(seed::DemoMailbox {
                id: "MB".into(),
                inbound_secret: "s3cr3t-mail".into(),
                smtp_port: 2525,
            }),
            linkedin: Some(seed::DemoLinkedin {
                id: "LI".into(),
                account_id: "acc".into(),
                api_key: "s3cr3t-key".into(),
                webhook_secret: "s3cr3t-hook".into(),
            }),
        }
    }

    #[test]
    fn the_banner_has_the_tokens_and_ready_commands() {
        let state = state();
        let text = banner(&Banner {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            data_dir: Path::new(DEMO_DATA_DIR),
            own_data_dir: true,
            state: &state,
            admin_token: Some("cfb_admin"),
            sandbox_base_url: "http://127.0.0.1:4000",
            smtp_sink: Some("127.0.0.1:2525".parse().expect("addr")),
            unipile_base_url: Some("http://127.0.0.1:4001"),
        });
        for expected in [
            "http://127.0.0.1:8080/api/v1",
            "TOKEN=cfb_agent",
            "cfb_admin",
            "$CONFAB/api/v1/conversations | jq",
            "ws://127.0.0.1:8080/api/v1/stream",
            "{\"type\":\"subscribe\",\"since\":null}",
            "/webhooks/whatsapp/CH",
            "channel MB (hello@northwind-growth.example), sending to the built-in SMTP sink at 127.0.0.1:2525",
            "channel LI, through the built-in Unipile stand-in at http://127.0.0.1:4001",
            DEMO_DATA_DIR,
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        // Never the channel's secrets.
        assert!(!text.contains("s3cr3t"));
    }

    #[test]
    fn a_configured_admin_token_is_not_printed() {
        let state = state();
        let text = banner(&Banner {
            addr: "127.0.0.1:8080".parse().expect("addr"),
            data_dir: Path::new("/srv/demo"),
            own_data_dir: false,
            state: &state,
            admin_token: None,
            sandbox_base_url: "http://127.0.0.1:4000",
            smtp_sink: None,
            unipile_base_url: None,
        });
        assert!(text.contains("the one you configured"));
        assert!(!text.contains("demo-only"));
    }

    #[test]
    fn wildcard_listen_addresses_are_reached_on_loopback() {
        let reach = |s: &str| reachable(s.parse().expect("addr")).to_string();
        assert_eq!(reach("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(reach("[::]:8080"), "[::1]:8080");
        assert_eq!(reach("192.168.1.2:8080"), "192.168.1.2:8080");
    }
}

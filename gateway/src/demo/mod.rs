//! `confab demo` (being written).

use crate::config::Config;

pub async fn run(_config: Config, _signal: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not built yet")
}

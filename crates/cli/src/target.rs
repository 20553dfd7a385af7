//! Where the read commands (`runs`, `results`, `report`, `watch`,
//! `compare`) get their answers: a server, or the runs that embedded
//! `gauntlet run`s stored in the data directory, read through the same
//! services started in this process.

use gauntlet_config::GrpcConfig;
use std::path::PathBuf;

use gauntlet_config::GauntletConfig;

use crate::{client, embedded};

#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// Ask this gateway (http://HOST:PORT). Without it, the runs that
    /// `gauntlet run` (without --server) stored in --data-dir.
    #[arg(long, env = "GAUNTLET_SERVER")]
    pub server: Option<String>,
    /// Where embedded runs are stored.
    #[arg(long, env = "GAUNTLET_DATA_DIR", default_value = ".gauntlet")]
    pub data_dir: PathBuf,
}

impl Target {
    /// Calls `f` with a gateway: the server's, or one started in this
    /// process over the data directory and stopped once `f` is done.
    pub async fn with_gateway<T>(
        &self,
        config: &GauntletConfig,
        f: impl AsyncFnOnce(&mut client::Gateway) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        if let Some(url) = &self.server {
            return f(&mut client::Gateway::connect(url, config).await?).await;
        }
        let db = self.data_dir.join(embedded::DATABASE_FILE);
        anyhow::ensure!(
            db.exists(),
            "no embedded runs in {}: `gauntlet run SUITE` stores its runs there \
             (or give --data-dir); to ask a server, give --server URL or set GAUNTLET_SERVER",
            self.data_dir.display()
        );
        let mut config = config.clone();
        // Reading only: a run left unfinished by an interrupted `gauntlet
        // run` stays as it is, and no provider is called.
        config.reconcile.enabled = false;
        let stack = embedded::Stack::start(config.clone(), &self.data_dir, 0).await?;
        let channel = client::connect(&stack.url(), &GrpcConfig::default()).await?;
        let mut gateway = client::Gateway::new(channel, client::limits(&config, false));
        let out = f(&mut gateway).await;
        drop(gateway);
        let stopped = stack.shutdown().await;
        let out = out?;
        stopped?;
        Ok(out)
    }
}

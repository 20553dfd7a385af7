use gauntlet_service::ServiceBinary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ServiceBinary { name: "worker" }
        .run(gauntlet_worker::serve)
        .await
}

use gauntlet_service::ServiceBinary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ServiceBinary { name: "monitor" }
        .run(gauntlet_monitor::serve)
        .await
}

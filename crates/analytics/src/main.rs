use gauntlet_service::ServiceBinary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ServiceBinary { name: "analytics" }
        .run(gauntlet_analytics::serve)
        .await
}

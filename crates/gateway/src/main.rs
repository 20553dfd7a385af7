use gauntlet_service::ServiceBinary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ServiceBinary { name: "gateway" }
        .run(gauntlet_gateway::serve)
        .await
}

use gauntlet_service::ServiceBinary;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ServiceBinary { name: "reports" }
        .run(gauntlet_reports::serve)
        .await
}

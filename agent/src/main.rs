#[tokio::main]
async fn main() -> anyhow::Result<()> {
    clearml_agent::Args::parse_and_run().await
}

//! Throwaway virtual hosts for tests: each test gets its own, on the broker
//! in `GAUNTLET_TEST_AMQP_URL` (default local RabbitMQ), deleted on drop.

use crate::admin;

pub struct TestVhost {
    pub name: String,
    /// amqp:// URL of the new virtual host.
    pub url: String,
}

impl TestVhost {
    pub async fn create() -> Self {
        let name = format!("gauntlet-test-{}", uuid::Uuid::new_v4().simple());
        admin::create_vhost(&name, "guest")
            .await
            .expect("rabbitmqctl must be able to create a vhost");
        let base = std::env::var("GAUNTLET_TEST_AMQP_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let url = admin::url_with_vhost(&base, &name);
        Self { name, url }
    }
}

impl Drop for TestVhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .status();
    }
}

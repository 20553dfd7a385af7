//! Broker administration the services do not need but operators and tests
//! do: creating and deleting virtual hosts (each test gets its own).

use tokio::process::Command;

use crate::{BusError, Result};

async fn rabbitmqctl(args: &[&str]) -> Result<()> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .map_err(|e| BusError::Admin(format!("cannot run rabbitmqctl: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(BusError::Admin(format!(
            "rabbitmqctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Creates `vhost` and grants `user` full rights on it.
pub async fn create_vhost(vhost: &str, user: &str) -> Result<()> {
    rabbitmqctl(&["-q", "add_vhost", vhost]).await?;
    rabbitmqctl(&["-q", "set_permissions", "-p", vhost, user, ".*", ".*", ".*"]).await
}

pub async fn delete_vhost(vhost: &str) -> Result<()> {
    rabbitmqctl(&["-q", "delete_vhost", vhost]).await
}

/// `base` (an amqp:// URL) pointed at another virtual host.
pub fn url_with_vhost(base: &str, vhost: &str) -> String {
    let (scheme_auth_host, _) = match base.rfind('/') {
        Some(i) if i > "amqp://".len() => base.split_at(i),
        _ => (base, ""),
    };
    format!("{scheme_auth_host}/{vhost}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_replaces_the_path() {
        assert_eq!(
            url_with_vhost("amqp://guest:guest@127.0.0.1:5672/%2f", "t1"),
            "amqp://guest:guest@127.0.0.1:5672/t1"
        );
        assert_eq!(
            url_with_vhost("amqp://127.0.0.1:5672", "t1"),
            "amqp://127.0.0.1:5672/t1"
        );
    }
}

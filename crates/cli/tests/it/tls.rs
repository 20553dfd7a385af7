//! TLS on the gRPC servers, as a user reaches them: `gauntlet serve
//! gateway` with a certificate from a test CA, the CLI on `https://` with
//! `--ca-cert`, a wrong CA refused cleanly, and mutual TLS.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use gauntlet_bus::testing::TestVhost;
use gauntlet_store::testing::TestDatabase;

use crate::cli::{BIN, free_port, text};

/// Runs openssl in `dir`, failing the test with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` for a new P-256 key `NAME.key` with subject `CN=NAME`,
/// writing `out`, with `extra` options.
fn new_key(dir: &Path, name: &str, out: &str, extra: &[&str]) {
    let (key, subject) = (format!("{name}.key"), format!("/CN={name}"));
    let mut args = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        out,
        "-subj",
        &subject,
    ];
    args.extend_from_slice(extra);
    openssl(dir, &args);
}

/// A CA (`NAME.pem`, `NAME.key`).
fn ca(dir: &Path, name: &str) {
    new_key(
        dir,
        name,
        &format!("{name}.pem"),
        &[
            "-x509",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// A certificate `NAME.pem`/`NAME.key` signed by `ca` for `usage`
/// (`serverAuth` for 127.0.0.1 and localhost, or `clientAuth`).
fn leaf(dir: &Path, ca: &str, name: &str, usage: &str) {
    new_key(dir, name, &format!("{name}.csr"), &[]);
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage={usage}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn path(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

/// `gauntlet serve gateway` on `port` with `env`, killed when dropped.
fn gateway(
    db: &TestDatabase,
    vhost: &TestVhost,
    port: u16,
    env: &[(&str, String)],
) -> tokio::process::Child {
    tokio::process::Command::new(BIN)
        .args(["serve", "gateway"])
        .env_remove("GAUNTLET_SERVER")
        .env("GAUNTLET_AUTH__ENABLED", "false")
        .env("GAUNTLET_DATABASE__URL", &db.config.url)
        .env("GAUNTLET_AMQP__URL", &vhost.url)
        .env("GAUNTLET_REDIS__URL", "")
        .env("GAUNTLET_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env("GAUNTLET_GATEWAY__METRICS_LISTEN", "")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// `gauntlet runs --server URL` with `args` and `env`, until it succeeds
/// (the gateway is up) or 60 s pass.
async fn until_listed(dir: &Path, url: &str, args: &[&str], env: &[(&str, &str)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut all = vec!["runs", "--server", url];
        all.extend_from_slice(args);
        let out = crate::cli::gauntlet_env(&all, dir, env).await;
        if out.status.success() {
            return;
        }
        assert!(Instant::now() < deadline, "never served: {:?}", text(&out));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_cli_reaches_a_tls_gateway_with_its_ca_and_fails_cleanly_without_it() {
    let certs = tempfile::tempdir().unwrap();
    let d = certs.path();
    ca(d, "ca");
    ca(d, "other");
    leaf(d, "ca", "server", "serverAuth");
    leaf(d, "ca", "client", "clientAuth");
    let dir = tempfile::tempdir().unwrap();
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let tls = [
        ("GAUNTLET_GRPC__TLS_CERT", path(d, "server.pem")),
        ("GAUNTLET_GRPC__TLS_KEY", path(d, "server.key")),
    ];
    let port = free_port();
    let _gateway = gateway(&db, &vhost, port, &tls);
    let https = format!("https://127.0.0.1:{port}");
    let ca_pem = path(d, "ca.pem");
    until_listed(dir.path(), &https, &["--ca-cert", &ca_pem], &[]).await;
    // The same from the environment.
    let out = crate::cli::gauntlet_env(
        &["runs", "--server", &https],
        dir.path(),
        &[("GAUNTLET_CA_CERT", &ca_pem)],
    )
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

    // A CA that did not sign the server's certificate: one clear line.
    let other = path(d, "other.pem");
    let out = crate::cli::gauntlet(
        &["runs", "--server", &https, "--ca-cert", &other],
        dir.path(),
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach the Gauntlet server at https://127.0.0.1")
            && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    // Plaintext to a TLS server fails too, without hanging.
    let started = Instant::now();
    let out = crate::cli::gauntlet(
        &["runs", "--server", &format!("http://127.0.0.1:{port}")],
        dir.path(),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{:?}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(15));
    // A CA file that is not there is named.
    let out = crate::cli::gauntlet(
        &[
            "runs",
            "--server",
            &https,
            "--ca-cert",
            "/nonexistent/ca.pem",
        ],
        dir.path(),
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("grpc.tls_ca") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );

    // Mutual TLS: the server asks for a client certificate from its CA.
    let mtls_port = free_port();
    let mut mtls = tls.to_vec();
    mtls.push(("GAUNTLET_GRPC__TLS_CA", ca_pem.clone()));
    mtls.push(("GAUNTLET_GRPC__TLS_CLIENT_AUTH", "true".into()));
    let _mtls_gateway = gateway(&db, &vhost, mtls_port, &mtls);
    let mtls_url = format!("https://127.0.0.1:{mtls_port}");
    let (client_pem, client_key) = (path(d, "client.pem"), path(d, "client.key"));
    let identity = [
        ("GAUNTLET_GRPC__TLS_CERT", client_pem.as_str()),
        ("GAUNTLET_GRPC__TLS_KEY", client_key.as_str()),
    ];
    until_listed(dir.path(), &mtls_url, &["--ca-cert", &ca_pem], &identity).await;
    let out = crate::cli::gauntlet(
        &["runs", "--server", &mtls_url, "--ca-cert", &ca_pem],
        dir.path(),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "no client certificate, no answer: {:?}",
        text(&out)
    );
}

#[tokio::test]
async fn a_server_certificate_that_cannot_be_read_stops_the_start_naming_the_key() {
    let db = TestDatabase::create().await;
    let vhost = TestVhost::create().await;
    let port = free_port();
    let missing: PathBuf = "/nonexistent/server.pem".into();
    let child = gateway(
        &db,
        &vhost,
        port,
        &[
            ("GAUNTLET_GRPC__TLS_CERT", missing.display().to_string()),
            ("GAUNTLET_GRPC__TLS_KEY", "/nonexistent/server.key".into()),
        ],
    );
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the gateway gives up")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("grpc.tls_cert") && stderr.contains("/nonexistent/server.pem"),
        "{stderr}"
    );
}

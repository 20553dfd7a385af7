//! TLS for the gRPC servers and for every client of one, from the `[grpc]`
//! section: `tls_cert`/`tls_key` (what a server presents, and a client when
//! the server asks), `tls_ca` (what clients trust, and what a server
//! requires of clients with `tls_client_auth`).

use anyhow::Context as _;
use gauntlet_config::GrpcConfig;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

fn read(key: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("grpc.{key}: cannot read `{path}`"))
}

fn identity(grpc: &GrpcConfig) -> anyhow::Result<Option<Identity>> {
    match (grpc.tls_cert.is_empty(), grpc.tls_key.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some(Identity::from_pem(
            read("tls_cert", &grpc.tls_cert)?,
            read("tls_key", &grpc.tls_key)?,
        ))),
        (true, false) => anyhow::bail!("grpc.tls_key is set but grpc.tls_cert is not; set both"),
        (false, true) => anyhow::bail!("grpc.tls_cert is set but grpc.tls_key is not; set both"),
    }
}

/// The servers' TLS, or None to serve plaintext.
pub fn server(grpc: &GrpcConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let Some(identity) = identity(grpc)? else {
        anyhow::ensure!(
            !grpc.tls_client_auth,
            "grpc.tls_client_auth needs grpc.tls_cert and grpc.tls_key (the server's own identity)"
        );
        return Ok(None);
    };
    let mut tls = ServerTlsConfig::new().identity(identity);
    if grpc.tls_client_auth {
        anyhow::ensure!(
            !grpc.tls_ca.is_empty(),
            "grpc.tls_client_auth needs grpc.tls_ca, the CA client certificates must be signed by"
        );
        tls = tls.client_ca_root(Certificate::from_pem(read("tls_ca", &grpc.tls_ca)?));
    }
    Ok(Some(tls))
}

/// An endpoint for `url` (named `field` in errors): TLS for `https://`,
/// trusting `tls_ca` (else the public web roots) and presenting
/// `tls_cert`/`tls_key` when set.
pub fn endpoint(field: &str, url: &str, grpc: &GrpcConfig) -> anyhow::Result<Endpoint> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| anyhow::anyhow!("{field}: `{url}` is not a valid URL: {e}"))?;
    if !url.starts_with("https://") {
        return Ok(endpoint);
    }
    let mut tls = ClientTlsConfig::new();
    tls = if grpc.tls_ca.is_empty() {
        tls.with_webpki_roots()
    } else {
        tls.ca_certificate(Certificate::from_pem(read("tls_ca", &grpc.tls_ca)?))
    };
    if let Some(identity) = identity(grpc)? {
        tls = tls.identity(identity);
    }
    endpoint
        .tls_config(tls)
        .with_context(|| format!("{field}: TLS for `{url}`"))
}

//! Admin and observability endpoints: counters, reset, runtime config, health.

use std::sync::Arc;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{MockConfig, MockStats, api::invalid_request, server::Shared};

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    Json(shared.counters.snapshot())
}

pub(crate) async fn reset(State(shared): State<Arc<Shared>>) -> Json<MockStats> {
    shared.reset_stats();
    Json(shared.counters.snapshot())
}

pub(crate) async fn get_config(State(shared): State<Arc<Shared>>) -> Json<MockConfig> {
    Json(shared.config.load())
}

/// Replaces the whole config; omitted fields take their defaults.
pub(crate) async fn put_config(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let config: MockConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return invalid_request(&format!("invalid mock config: {e}")),
    };
    if let Err(e) = config.validate() {
        return invalid_request(&e.to_string());
    }
    shared.set_config(&config);
    tracing::info!(?config, "mock config replaced");
    (StatusCode::OK, Json(config)).into_response()
}

pub(crate) async fn healthz() -> &'static str {
    "ok"
}

//! `/metrics` (Prometheus text), `/healthz` (the process answers) and `/readyz` (the gRPC
//! listener is serving, the broker has joined its cluster, every replica it should hold is
//! open, and it is in the ISR of every partition it follows: a StatefulSet rolling its brokers, or a PodDisruptionBudget, then
//! waits for a restarted broker to catch up before taking down the next).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::node::Node;

#[derive(Clone)]
struct Shared {
    node: Arc<Node>,
    ready: Arc<AtomicBool>,
}

pub(crate) async fn serve(
    listener: crate::listener::GuardedListener,
    node: Arc<Node>,
    ready: Arc<AtomicBool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { node, ready });
    let shutdown = async move {
        let _ = stopped.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %weir_proto::Chain(&e), "HTTP server failed");
    }
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.node.metrics.encode(),
    )
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if !shared.ready.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string());
    }
    let offline = shared.node.offline_replicas();
    if !offline.is_empty() {
        let shown: Vec<String> = offline
            .iter()
            .take(5)
            .map(|(topic, partition, why)| format!("{topic}-{partition} ({why})"))
            .collect();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: {} replica(s) could not be opened: {}{}\n",
                offline.len(),
                shown.join("; "),
                if offline.len() > shown.len() {
                    "; ..."
                } else {
                    ""
                }
            ),
        );
    }
    let behind = shared.node.out_of_sync();
    if behind.is_empty() {
        return (StatusCode::OK, "ready\n".to_string());
    }
    let shown: Vec<String> = behind
        .iter()
        .take(10)
        .map(|(topic, partition)| format!("{topic}-{partition}"))
        .collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "not ready: catching up, outside the ISR of {} partition(s): {}{}\n",
            behind.len(),
            shown.join(", "),
            if behind.len() > shown.len() {
                ", ..."
            } else {
                ""
            }
        ),
    )
}

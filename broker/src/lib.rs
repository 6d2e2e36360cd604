//! weir-broker: the data plane. Partitions and their logs, the gRPC API (`weir.v1.Weir`,
//! `weir.v1.Admin`, `weir.v1.Groups`), consumer groups, Prometheus metrics and health.
//!
//! What it is not yet: replicated (one broker holds every partition, so the high watermark is
//! the log end) or coordinated by a controller (topic metadata is a file in the data
//! directory); consumer groups and idempotent producers are still to come.
//!
//! Main types: [`Node`] (topics, partitions, the operations), [`Service`] (the gRPC layer),
//! [`BrokerConfig`]. [`run`] serves a node until told to stop.
//!
//! # Guarantees
//! - With `flush.messages=1`, a produce is acknowledged, and its records become visible to
//!   fetches, only once they are on disk (concurrent appends share fsyncs). With other flush
//!   policies a record is visible once appended, as in Kafka.
//! - A clean stop (SIGTERM) ends open Subscribe streams and closes every log with its
//!   clean-shutdown marker; after SIGKILL, every log recovers on the next start.

pub mod config;
pub mod coordinator;
pub mod group;
mod http;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod producer;
pub mod replica;
pub mod service;
pub mod topic;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;

pub use config::BrokerConfig;
pub use node::Node;
pub use service::Service;

/// The largest gRPC message accepted or sent (a produce request or a fetch response).
pub const MAX_MESSAGE_SIZE: usize = 64 << 20;

/// How often `flush.ms` flushes and recovery-point checkpoints run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(200);

/// Opens the node, binds both listeners, prints `ready grpc=ADDR http=ADDR` on stdout, and
/// serves until `shutdown` completes; then closes every log cleanly.
///
/// # Errors
/// A bad config, a log that cannot be opened, or a port that cannot be bound.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let node = Arc::new(tokio::task::block_in_place(|| Node::open(config.clone()))?);
    node.start_coordinator().await?;
    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind the gRPC listener {}", config.listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("bind the HTTP listener {}", config.http_listen))?;
    let grpc_address = grpc.local_addr()?;
    let http_address = http.local_addr()?;
    let ready = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = tokio::sync::watch::channel(false);

    let maintenance = tokio::spawn(maintain(
        Arc::clone(&node),
        config.retention_check_interval,
        stopped.clone(),
    ));
    let http_server = tokio::spawn(http::serve(
        http,
        Arc::clone(&node),
        Arc::clone(&ready),
        stopped.clone(),
    ));

    let service = Service::new(Arc::clone(&node), stopped.clone());
    // The signal stops everything at once, so that open Subscribe streams end and the server
    // can finish.
    let shutdown = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let server = tonic::transport::Server::builder()
        // Batches of a MiB and more: HTTP/2's default 64 KiB windows would stall them.
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        // Produce requests arrive in frames of this size (HTTP/2's default is 16 KiB).
        .max_frame_size(Some((1 << 24) - 1))
        .tcp_nodelay(true)
        .add_service(
            weir_proto::v1::weir_server::WeirServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(
            weir_proto::v1::admin_server::AdminServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        )
        .add_service(weir_proto::v1::groups_server::GroupsServer::new(service))
        // The builder's tcp_nodelay applies only to listeners tonic binds itself: without it
        // here, Nagle held small answers behind the client's delayed ACK (40 ms stalls).
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            shutdown,
        );
    ready.store(true, Ordering::Release);
    tracing::info!(grpc = %grpc_address, http = %http_address, data_dir = %config.data_dir.display(), "broker ready");
    println!("ready grpc={grpc_address} http={http_address}");

    let served = server.await;
    ready.store(false, Ordering::Release);
    tracing::info!("shutting down: closing logs");
    let _ = maintenance.await;
    let _ = http_server.await;
    close(node, config.shutdown_timeout).await;
    served.context("gRPC server")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Waits (up to `timeout`) for requests still holding the node to finish, then closes it.
async fn close(mut node: Arc<Node>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        match Arc::try_unwrap(node) {
            Ok(node) => return tokio::task::block_in_place(|| node.close()),
            Err(shared) if Instant::now() < deadline => {
                node = shared;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => {
                tracing::warn!(
                    "requests still running at the shutdown deadline; logs will recover on the next start"
                );
                return;
            }
        }
    }
}

async fn maintain(
    node: Arc<Node>,
    retention_interval: Duration,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_retention = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
        let retention = last_retention.elapsed() >= retention_interval;
        if retention {
            last_retention = Instant::now();
        }
        let node = Arc::clone(&node);
        let _ = tokio::task::spawn_blocking(move || node.maintain(retention)).await;
    }
}

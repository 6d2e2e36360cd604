//! weir-broker: the data plane. Partitions and their logs, replication (leader and follower),
//! the gRPC API (`weir.v1.Weir`, `weir.v1.Admin`, `weir.v1.Groups`, `weir.v1.Replication`),
//! consumer groups, Prometheus metrics and health.
//!
//! Main types: [`Node`] (the broker core: topics, partitions and every operation, which each
//! front door calls), [`Service`] (the gRPC front door: it only translates), [`BrokerConfig`].
//! [`run`] serves a node until told to stop.
//!
//! Layers, each importing only those below it: the front doors `service` (gRPC) and `kafka`
//! (Kafka's wire protocol), `cluster` (the loops that talk to the controller) and `http` on
//! top; `node` (its modules: `metadata`, `replication`, `admin`,
//! `groups`, `offsets`, `records`, `maintenance`); `coordinator` (reaching the node only
//! through its `Replicas` trait) and `config`; `topic` and `metrics`; `partition`; and at the
//! bottom `failure`, `links`, `replica`, `producer`, `group`, `classic`, `consumer_protocol`,
//! `listener`.
//!
//! # Guarantees
//! - With `flush.messages=1`, a produce is acknowledged, and its records become visible to
//!   fetches, only once they are on disk (concurrent appends share fsyncs). With other flush
//!   policies a record is visible once appended, as in Kafka.
//! - A clean stop (SIGTERM) ends open Subscribe streams and closes every log with its
//!   clean-shutdown marker; after SIGKILL, every log recovers on the next start.

pub mod classic;
pub mod cluster;
pub mod config;
pub mod consumer_protocol;
pub mod coordinator;
pub mod failure;
pub mod group;
mod http;
pub mod kafka;
pub mod links;
pub mod listener;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod producer;
pub mod replica;
pub mod service;
pub mod throttle;
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

/// Opens the node, binds its listeners, prints `ready grpc=ADDR http=ADDR kafka=ADDR` on stdout, and
/// serves until `shutdown` completes; then closes every log cleanly.
///
/// # Errors
/// A bad config, a log that cannot be opened, or a port that cannot be bound.
pub async fn run(
    config: BrokerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut config = config;
    config.validate()?;
    let grpc = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("bind the gRPC listener {}", config.listen))?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .with_context(|| format!("bind the HTTP listener {}", config.http_listen))?;
    let kafka = TcpListener::bind(config.kafka_listen)
        .await
        .with_context(|| format!("bind the Kafka listener {}", config.kafka_listen))?;
    let grpc_address = grpc.local_addr()?;
    let http_address = http.local_addr()?;
    let kafka_address = kafka.local_addr()?;
    // The bound ports (the configured ones may be 0); a wildcard address is not one a client
    // can dial.
    let dialable = |bound: std::net::SocketAddr| {
        let host = if bound.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            bound.ip()
        };
        std::net::SocketAddr::new(host, bound.port()).to_string()
    };
    if config.advertised_address.is_none() {
        config.advertised_address = Some(dialable(grpc_address));
    }
    if config.kafka_advertised_address.is_none() {
        config.kafka_advertised_address = Some(dialable(kafka_address));
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let bounds = |handshake| listener::Limits {
        max_connections: config.max_connections,
        handshake_timeout: config.connection_handshake_timeout,
        idle_timeout: config.connection_idle_timeout,
        handshake,
    };
    // Without a controller to join, this broker embeds one: a cluster of one. It listens on
    // a loopback port of its own, never on the client port, and takes only this process's
    // own secret: no client can reach it.
    let (embedded, secret, controller_address) = match &config.controller {
        Some(address) => {
            let path = config
                .cluster_secret_file
                .as_deref()
                .context("a broker joining a controller needs cluster_secret_file")?;
            let secret = weir_proto::ClusterSecret::read(path)?;
            (None, secret, address.clone())
        }
        None => {
            let dir = config.data_dir.join("controller");
            let store = weir_controller::FileStore::open(&dir).with_context(|| {
                format!("open the embedded controller's store in {}", dir.display())
            })?;
            import_single_node_metadata(&config, &store).await?;
            let controller =
                weir_controller::server::Controller::start(store, Default::default()).await?;
            let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .context("bind the embedded controller's loopback listener")?;
            let address = listener.local_addr()?.to_string();
            let secret = weir_proto::ClusterSecret::generate();
            let mut stopping = stopped.clone();
            let server = tokio::spawn(weir_controller::server::serve_controller(
                Arc::clone(&controller),
                listener,
                secret.clone(),
                async move {
                    let _ = stopping.wait_for(|&stop| stop).await;
                },
            ));
            (Some((controller, server)), secret, address)
        }
    };
    let node = Arc::new(tokio::task::block_in_place(|| {
        Node::open(config.clone(), &controller_address, secret.clone())
    })?);
    let grpc = listener::GuardedListener::new(
        grpc,
        bounds(listener::HTTP2_PREFACE),
        "grpc",
        node.metrics.listener_stats("grpc"),
    );
    let http = listener::GuardedListener::new(
        http,
        bounds(listener::Handshake::HeaderEnd),
        "http",
        node.metrics.listener_stats("http"),
    );
    let kafka = listener::GuardedListener::new(
        kafka,
        // A request's length, API key and version.
        bounds(listener::Handshake::Bytes(8)),
        "kafka",
        node.metrics.listener_stats("kafka"),
    );
    let connections = [
        ("grpc", grpc.gauge()),
        ("http", http.gauge()),
        ("kafka", kafka.gauge()),
    ];
    let ready = Arc::new(AtomicBool::new(false));
    // Client calls are answered BROKER_STARTING (retriable) until the metadata is applied.
    let serving = Arc::new(AtomicBool::new(false));

    let maintenance = tokio::spawn(maintain(
        Arc::clone(&node),
        config.retention_check_interval,
        connections,
        stopped.clone(),
    ));
    let http_server = tokio::spawn(http::serve(
        http,
        Arc::clone(&node),
        Arc::clone(&ready),
        stopped.clone(),
    ));

    let service = Service::new(Arc::clone(&node), stopped.clone());
    // The signal stops everything at once, so that open Subscribe streams and metadata
    // watches end and the servers can finish.
    // A broker of a cluster hands its leaderships over first (controlled shutdown), still
    // serving meanwhile, so that clients and followers move before it closes.
    let handover = (config.controller.is_some() && !config.controlled_shutdown_timeout.is_zero())
        .then(|| (Arc::clone(&node), config.controlled_shutdown_timeout));
    let shutdown = async move {
        shutdown.await;
        if let Some((node, limit)) = handover {
            cluster::controlled_shutdown(&node, limit).await;
        }
        let _ = stop.send(true);
    };
    let liveness = embedded
        .as_ref()
        .map(|(c, _)| tokio::spawn(Arc::clone(c).run_liveness()));
    let gate = StartingGate {
        serving: Arc::clone(&serving),
        broker: config.broker_id,
    };
    let server = tonic::transport::Server::builder()
        // Batches of a MiB and more: HTTP/2's default 64 KiB windows would stall them.
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        // Produce requests arrive in frames of this size (HTTP/2's default is 16 KiB).
        .max_frame_size(Some((1 << 24) - 1))
        .tcp_nodelay(true)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            weir_proto::v1::weir_server::WeirServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            gate.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            weir_proto::v1::admin_server::AdminServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            gate.clone(),
        ))
        // Followers only: they hold the cluster secret, clients do not.
        .add_service(tonic::service::interceptor::InterceptedService::new(
            weir_proto::v1::replication_server::ReplicationServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            secret.guard(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            weir_proto::v1::groups_server::GroupsServer::new(service),
            gate,
        ))
        // The builder's tcp_nodelay applies only to listeners tonic binds itself: without it
        // here, Nagle held small answers behind the client's delayed ACK (40 ms stalls).
        .serve_with_incoming_shutdown(grpc.into_stream(), shutdown);
    let server = tokio::spawn(server);

    // Join the cluster: register, heartbeat, apply the metadata, lead and follow.
    let mut loops = Vec::new();
    if let Some(interval) = cluster::register(&node, &stopped).await {
        loops.push(tokio::spawn(cluster::heartbeat(
            Arc::clone(&node),
            interval,
            stopped.clone(),
        )));
        loops.push(tokio::spawn(cluster::watch_metadata(
            Arc::clone(&node),
            stopped.clone(),
        )));
        loops.push(tokio::spawn(cluster::propose_isr_changes(
            Arc::clone(&node),
            stopped.clone(),
        )));
        if node.wait_for_metadata(Duration::from_secs(30)).await {
            serving.store(true, Ordering::Release);
            node.start_coordinator().await?;
            if let Err(f) = node.reserve_producer_ids().await {
                tracing::warn!(error = %f.message, "no producer ids reserved yet");
            }
            // Kafka clients are served once the broker knows its topics (until then their
            // connections wait in the listen backlog).
            loops.push(tokio::spawn(kafka::serve(
                kafka,
                Arc::clone(&node),
                stopped.clone(),
            )));
            ready.store(true, Ordering::Release);
            tracing::info!(grpc = %grpc_address, http = %http_address, kafka = %kafka_address, broker = config.broker_id, data_dir = %config.data_dir.display(), "broker ready");
            println!("ready grpc={grpc_address} http={http_address} kafka={kafka_address}");
        } else {
            tracing::error!(controller = %controller_address, "no metadata from the controller within 30 s");
        }
    }

    let served = server.await.context("gRPC server task")?;
    ready.store(false, Ordering::Release);
    tracing::info!("shutting down: closing logs");
    for task in loops {
        let _ = task.await;
    }
    if let Some(liveness) = liveness {
        liveness.abort();
    }
    if let Some((_, server)) = embedded {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %weir_proto::error_chain(&e), "the embedded controller's server failed")
            }
            Err(e) => tracing::error!(error = %e, "the embedded controller's server task failed"),
        }
    }
    node.stop_fetchers();
    let _ = maintenance.await;
    let _ = http_server.await;
    close(node, config.shutdown_timeout).await;
    served.context("gRPC server")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Answers every client call with the retriable `BROKER_STARTING` until the broker has
/// applied the cluster's metadata: before that, it would call existing topics unknown.
#[derive(Debug, Clone)]
struct StartingGate {
    serving: Arc<AtomicBool>,
    broker: i32,
}

impl tonic::service::Interceptor for StartingGate {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.serving.load(Ordering::Acquire) {
            return Ok(request);
        }
        Err(weir_proto::Reason::BrokerStarting.status(format!(
            "broker {} is starting: it has not applied the cluster's metadata yet; try again shortly",
            self.broker
        )))
    }
}

/// A data directory from before the controller kept its topics in `metadata.json`: the
/// embedded controller starts from them (every partition led by this broker), once.
async fn import_single_node_metadata(
    config: &BrokerConfig,
    store: &weir_controller::FileStore,
) -> anyhow::Result<()> {
    use weir_controller::MetadataStore;
    let legacy = config.data_dir.join("metadata.json");
    if !legacy.exists() || store.load().await?.is_some() {
        return Ok(());
    }
    let old = topic::Metadata::load(&config.data_dir)?;
    let me = config.broker_id;
    let mut state = weir_controller::ClusterState {
        next_producer_id: old.next_producer_id,
        ..Default::default()
    };
    for (name, record) in old.topics {
        let partition = weir_controller::PartitionState {
            replicas: vec![me],
            leader: Some(me),
            leader_epoch: 0,
            isr: vec![me],
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        };
        state.topics.insert(
            name.clone(),
            weir_controller::Topic {
                id: record.id,
                name,
                config: record.config,
                partitions: vec![partition; usize::try_from(record.partitions).unwrap_or(0)],
            },
        );
    }
    let topics = state.topics.len();
    store.store(&state, None).await?;
    std::fs::rename(&legacy, config.data_dir.join("metadata.json.imported"))?;
    tracing::info!(
        topics,
        "imported the topics of metadata.json into the embedded controller"
    );
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
    connections: [(&'static str, listener::ConnectionGauge); 3],
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_retention = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(MAINTENANCE_INTERVAL) => {}
            _ = stopped.changed() => return,
        }
        for (name, gauge) in &connections {
            node.metrics.set_connections(name, gauge.open());
        }
        let retention = last_retention.elapsed() >= retention_interval;
        if retention {
            last_retention = Instant::now();
        }
        let node = Arc::clone(&node);
        let _ = tokio::task::spawn_blocking(move || node.maintain(retention)).await;
    }
}

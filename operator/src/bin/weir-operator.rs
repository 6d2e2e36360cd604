//! `weir-operator`: reconciles `Cluster`, `Topic` and `ConsumerGroup` resources, and runs
//! each cluster's controller, while it holds the `coordination.k8s.io/v1` Lease. Every
//! replica serves `/healthz` and `/metrics`; only the Lease holder is ready (`/readyz`) and
//! answers on the controller endpoint, so the operator's Service leads brokers to it.
//!
//! The Kubernetes client is configured as kubectl's: in a pod, from its service account;
//! elsewhere, from `KUBECONFIG` or `~/.kube/config`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Parser;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use weir_controller::server::Timing;
use weir_operator::endpoint::{Endpoint, Registry};
use weir_operator::lease::{Elector, Role};
use weir_operator::metrics::Metrics;
use weir_operator::reconcile::{Context, Settings, run};

#[derive(Debug, Parser)]
#[command(
    name = "weir-operator",
    version,
    about = "The Kubernetes operator of Weir"
)]
struct Options {
    /// Watch only this namespace [default: every namespace].
    #[arg(long, env = "WEIR_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// This replica's name in the election (the pod's name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// The namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    #[arg(long, default_value = "weir-operator")]
    lease_name: String,
    /// A holder that has not renewed for this long loses the Lease.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// The controller endpoint brokers register with.
    #[arg(long, env = "WEIR_GRPC_LISTEN", default_value = "0.0.0.0:9100")]
    grpc_listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    #[arg(long, env = "WEIR_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// How brokers in pods reach the controller endpoint (the operator Service's DNS name
    /// and port).
    #[arg(
        long,
        env = "WEIR_CONTROLLER_ADDRESS",
        default_value = "weir-operator.weir-system.svc:9100"
    )]
    controller_address: String,
    /// How often brokers heartbeat.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// A broker silent for this long is dead and its partitions move (Kafka's
    /// `broker.session.timeout.ms` is 9 s): each decision is several API writes here.
    #[arg(long, default_value = "9s", value_parser = humantime::parse_duration)]
    session_timeout: Duration,
    /// How often every resource is reconciled again, changed or not.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    resync: Duration,
}

fn main() -> ExitCode {
    let options = Options::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(operate(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Clone)]
struct Health {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
}

async fn operate(options: Options) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("no Kubernetes API server configured (in a pod, or by KUBECONFIG)")?;
    let identity = options.identity.clone().unwrap_or_else(|| {
        format!(
            "{}-{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "weir-operator".into()),
            std::process::id()
        )
    });
    let registry = Arc::new(Registry::default());
    let metrics = Arc::new(Metrics::default());

    let grpc = tokio::net::TcpListener::bind(options.grpc_listen)
        .await
        .with_context(|| format!("bind the controller endpoint {}", options.grpc_listen))?;
    let http = tokio::net::TcpListener::bind(options.http_listen)
        .await
        .with_context(|| format!("bind the HTTP listener {}", options.http_listen))?;
    let grpc_address = grpc.local_addr()?;
    let http_address = http.local_addr()?;
    let endpoint = Endpoint {
        registry: Arc::clone(&registry),
        client: client.clone(),
    };
    let grpc_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(weir_proto::v1::controller_server::ControllerServer::new(
                endpoint,
            ))
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
            ),
    );
    let health = Health {
        registry: Arc::clone(&registry),
        metrics: Arc::clone(&metrics),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(health);
    let http_server = tokio::spawn(async move { axum::serve(http, app).await });
    tracing::info!(%identity, grpc = %grpc_address, http = %http_address, "operator started");
    println!("ready grpc={grpc_address} http={http_address}");

    let elector = Elector::new(
        kube::Api::namespaced(client.clone(), &options.lease_namespace),
        &options.lease_name,
        &identity,
        options.lease_duration,
    );
    let settings = Settings {
        controller_address: options.controller_address.clone(),
        identity: identity.clone(),
        timing: Timing {
            heartbeat_interval: options.heartbeat_interval,
            session_timeout: options.session_timeout,
            // Brokers find a new holder through the Service once it is ready, or by trying
            // their next address.
            takeover_grace: options.lease_duration / 3,
            ..Timing::default()
        },
        resync: options.resync,
    };
    let reporter = Reporter {
        controller: "weir-operator".into(),
        instance: Some(identity.clone()),
    };
    let mut term: Option<tokio::task::JoinHandle<()>> = None;
    let mut renewed = Instant::now();
    // client-go's retry period is a seventh of its lease duration: a candidate sees the
    // holder gone within the duration and two such periods.
    let every = options.lease_duration / 6;
    let mut terminate = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut interrupt = signal(tokio::signal::unix::SignalKind::interrupt())?;
    // client-go's renew deadline: a holder that has not renewed for two thirds of the
    // duration stops, before another may take over; no round may take longer.
    let renew_deadline = options.lease_duration * 2 / 3;
    loop {
        let round = tokio::time::timeout(renew_deadline, elector.round())
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!("the API server did not answer within {renew_deadline:?}").into(),
                ))
            });
        match round {
            Ok(Role::Leading { epoch }) => {
                renewed = Instant::now();
                if term.is_none() {
                    tracing::info!(
                        epoch,
                        "holding the Lease: reconciling and serving the controller"
                    );
                    registry.set_leading(true, Some(identity.clone()));
                    metrics.set_leader(true);
                    let context = Arc::new(Context::new(
                        client.clone(),
                        Recorder::new(client.clone(), reporter.clone()),
                        Arc::clone(&registry),
                        settings.clone(),
                        epoch,
                        Arc::clone(&metrics),
                    ));
                    term = Some(tokio::spawn(run(context, options.namespace.clone())));
                }
            }
            Ok(Role::Following { holder }) => {
                if term.is_some() {
                    tracing::warn!(?holder, "lost the Lease: stepping down");
                    step_down(&mut term, &registry, &metrics).await;
                }
                registry.set_leading(false, holder);
            }
            Err(e) => tracing::warn!(error = %weir_proto::Chain(&e), "could not reach the Lease"),
        }
        if term.is_some() && renewed.elapsed() > renew_deadline {
            tracing::warn!("could not renew the Lease in time: stepping down");
            step_down(&mut term, &registry, &metrics).await;
            registry.set_leading(false, None);
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("shutting down");
    step_down(&mut term, &registry, &metrics).await;
    if let Err(e) = elector.release().await {
        tracing::warn!(error = %weir_proto::Chain(&e), "could not release the Lease");
    }
    grpc_server.abort();
    http_server.abort();
    Ok(())
}

fn signal(kind: tokio::signal::unix::SignalKind) -> anyhow::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(kind).context("install a signal handler")
}

async fn step_down(
    term: &mut Option<tokio::task::JoinHandle<()>>,
    registry: &Registry,
    metrics: &Metrics,
) {
    if let Some(task) = term.take() {
        task.abort();
        let _ = task.await;
    }
    registry.set_leading(false, None);
    registry.stop_all().await;
    metrics.set_leader(false);
    metrics.set_controllers(0);
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.registry.is_leading() {
        (
            StatusCode::OK,
            "ready: holding the controller Lease\n".to_string(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "not ready: the controller Lease is held by {}\n",
                health
                    .registry
                    .holder()
                    .unwrap_or_else(|| "no one yet".into())
            ),
        )
    }
}

async fn metrics_text(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

//! weir-test-dns: the cluster domain's DNS for the real-node tests, in place of CoreDNS (no
//! CoreDNS image is reachable from these machines; ../shared/TESTING.md §1b).
//!
//! Answers A queries as Kubernetes' DNS specification does for what Weir needs:
//! `<service>.<namespace>.svc.<domain>` (the ClusterIP, or a headless Service's endpoint
//! addresses) and `<hostname>.<service>.<namespace>.svc.<domain>` (a StatefulSet Pod behind
//! a headless Service). Names in the cluster domain that do not exist are NXDOMAIN; names
//! outside it are REFUSED: it forwards nothing, so no query leaves the machine. Services and
//! Endpoints are listed from the API server every half second.
//!
//! `weir-test-dns --kubeconfig FILE --listen 10.244.0.1:53 --domain cluster.local`

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long, default_value = "cluster.local")]
    domain: String,
}

/// Names (lowercase, no trailing dot) to their addresses.
type Zone = BTreeMap<String, Vec<Ipv4Addr>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
    let zone = Arc::new(RwLock::new(Zone::new()));
    let socket = tokio::net::UdpSocket::bind(args.listen)
        .await
        .with_context(|| format!("bind {}", args.listen))?;
    eprintln!("weir-test-dns: serving {} on {}", args.domain, args.listen);
    let suffix = format!(".svc.{}", args.domain.trim_end_matches('.'));
    tokio::spawn(refresh(client, suffix.clone(), Arc::clone(&zone)));
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        let Ok(query) = Message::from_vec(&buf[..len]) else {
            continue;
        };
        let reply = {
            let zone = zone
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            answer(&query, &zone, &args.domain)
        };
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

/// The zone from the API server, every half second (an error keeps the last one).
async fn refresh(client: Client, suffix: String, zone: Arc<RwLock<Zone>>) {
    let services: Api<Service> = Api::all(client.clone());
    let endpoints: Api<Endpoints> = Api::all(client);
    loop {
        match (
            services.list(&Default::default()).await,
            endpoints.list(&Default::default()).await,
        ) {
            (Ok(services), Ok(endpoints)) => {
                let next = build_zone(&services.items, &endpoints.items, &suffix);
                *zone
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
            }
            (Err(e), _) | (_, Err(e)) => eprintln!("weir-test-dns: list: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn build_zone(services: &[Service], endpoints: &[Endpoints], suffix: &str) -> Zone {
    let mut zone = Zone::new();
    let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        (
            m.name.clone().unwrap_or_default(),
            m.namespace.clone().unwrap_or_default(),
        )
    };
    let endpoints: BTreeMap<_, _> = endpoints.iter().map(|e| (key(&e.metadata), e)).collect();
    for service in services {
        let (name, namespace) = key(&service.metadata);
        let service_name = format!("{name}.{namespace}{suffix}");
        let cluster_ip = service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref());
        let addresses = endpoints
            .get(&(name.clone(), namespace.clone()))
            .into_iter()
            .flat_map(|e| e.subsets.iter().flatten())
            .flat_map(|s| s.addresses.iter().flatten());
        match cluster_ip {
            Some(ip) if ip != "None" => {
                if let Ok(ip) = ip.parse() {
                    zone.insert(service_name, vec![ip]);
                }
            }
            _ => {
                let mut all = Vec::new();
                for address in addresses {
                    let Ok(ip) = address.ip.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    all.push(ip);
                    if let Some(host) = &address.hostname {
                        zone.insert(format!("{host}.{service_name}"), vec![ip]);
                    }
                }
                zone.insert(service_name, all);
            }
        }
    }
    zone
}

fn answer(query: &Message, zone: &Zone, domain: &str) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(false)
        .set_authoritative(true);
    let Some(question) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply;
    };
    reply.add_query(question.clone());
    let name = question.name().to_lowercase().to_utf8();
    let name = name.trim_end_matches('.');
    let domain = domain.trim_end_matches('.');
    if !(name == domain || name.ends_with(&format!(".{domain}"))) {
        reply.set_response_code(ResponseCode::Refused);
        return reply;
    }
    match zone.get(name) {
        None => {
            reply.set_response_code(ResponseCode::NXDomain);
        }
        Some(addresses) => {
            if question.query_type() == RecordType::A {
                for ip in addresses {
                    reply.add_answer(Record::from_rdata(
                        question.name().clone(),
                        5,
                        RData::A(A(*ip)),
                    ));
                }
            }
        }
    }
    reply
}

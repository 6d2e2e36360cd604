//! The broker's connections to the rest of the cluster: gRPC channels to the controller and to
//! other brokers, and what every call to the controller carries.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use weir_proto::ClusterSecret;
use weir_proto::v1::controller_client::ControllerClient;

use crate::MAX_MESSAGE_SIZE;

/// The pause after a failed call to the controller or a leader before the next try.
pub const RETRY: Duration = Duration::from_millis(200);

/// A lazily connected gRPC channel to `address` (`host:port` or a URL).
///
/// # Errors
/// An address that is not a valid URI.
pub fn channel(address: &str) -> Result<Channel, tonic::transport::Error> {
    let url = if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(url)?
        .connect_timeout(Duration::from_secs(2))
        // No call between brokers, or to the controller, waits for ever on a half-dead
        // connection: unary calls time out (a watch stream's headers come at once), and
        // keepalive pings find a silent peer.
        .timeout(Duration::from_secs(15))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(16 << 20))
        .initial_connection_window_size(Some(64 << 20))
        .connect_lazy())
}

/// What every call to the controller carries: the broker's cluster
/// ([`weir_proto::CLUSTER_HEADER`]) and the cluster secret ([`weir_proto::SECRET_HEADER`]).
#[derive(Debug, Clone)]
pub struct ClusterHeader {
    pub cluster: Option<MetadataValue<Ascii>>,
    pub secret: ClusterSecret,
}

impl Interceptor for ClusterHeader {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(cluster) = &self.cluster {
            request
                .metadata_mut()
                .insert(weir_proto::CLUSTER_HEADER, cluster.clone());
        }
        self.secret.attach(&mut request);
        Ok(request)
    }
}

/// A client of the controller, naming the broker's cluster and holding its secret.
pub type Controller = ControllerClient<InterceptedService<Channel, ClusterHeader>>;

pub fn controller_client(channel: Channel, cluster: ClusterHeader) -> Controller {
    ControllerClient::with_interceptor(channel, cluster)
        .max_decoding_message_size(MAX_MESSAGE_SIZE)
        .max_encoding_message_size(MAX_MESSAGE_SIZE)
}

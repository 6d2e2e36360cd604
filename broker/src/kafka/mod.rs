//! The Kafka wire protocol: a second front door to the same broker core ([`Node`]) as the gRPC
//! service. Each connection reads length-prefixed request frames, checks and decodes them
//! (`kafka-protocol`, after `bounds` has walked each body), runs each request as a task of its
//! own, and writes the responses back in request order (several requests may be in flight on
//! one connection; an `acks=0` produce gets no response).
//!
//! What a client cannot make unbounded: a frame is at most `socket_request_max_bytes`; the
//! frames read but not answered and the records of fetch responses not yet written, over all
//! connections, hold at most `queued_max_request_bytes` (reading waits; a fetch reads only
//! what fits); each connection has at most [`IN_FLIGHT`] requests running. A malformed frame, an unknown API or an unsupported version
//! (but for ApiVersions, answered as Kafka answers it) closes that connection only.

mod admin;
mod alter_configs;
mod apis;
pub mod bounds;
mod configs;
mod consumer_group;
mod delete_records;
mod errors;
mod fetch;
mod groups;
mod leader_epoch;
mod list_offsets;
mod membership;
mod metadata;
mod offsets;
mod produce;
mod producer_id;

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::{Decodable, Encodable};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::listener::{GuardedListener, GuardedStream};
use crate::node::Node;

/// Requests of one connection running at once; the next frame is read once one is answered.
pub const IN_FLIGHT: usize = 16;

/// Serves Kafka clients on `listener` until `stopped`.
pub async fn serve(
    mut listener: GuardedListener,
    node: Arc<Node>,
    mut stopped: watch::Receiver<bool>,
) {
    let queued = Arc::new(Semaphore::new(node.config.queued_max_request_bytes));
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|&stop| stop) => return,
        };
        let node = Arc::clone(&node);
        let queued = Arc::clone(&queued);
        let stopped = stopped.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, peer, node, queued, stopped).await {
                tracing::info!(%peer, error = %e, "Kafka connection closed");
            }
        });
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "a frame of {0} bytes: a request is at least 8 bytes and at most socket_request_max_bytes ({1})"
    )]
    FrameSize(i64, usize),
    #[error("API key {0} is not one this broker serves")]
    UnknownApi(i16),
    #[error("{0:?} version {1} is not one this broker serves")]
    UnsupportedVersion(ApiKey, i16),
    #[error("a malformed {0:?} v{1} request: {2}")]
    Malformed(ApiKey, i16, String),
    #[error("a frame's {0} bytes did not arrive within {1:?}")]
    SlowFrame(usize, Duration),
    #[error("an acks=0 produce failed ({0}): the connection closes so that the producer notices")]
    SilentProduceFailed(String),
}

/// How long a frame's bytes may take to arrive once its length has, and how long one
/// response may take to be written: a client that stops reading or writing midway is dropped.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(60);

/// What a request's task gives the connection.
enum Outcome {
    /// A response, and what holds its bytes against the memory budget until it is written.
    Respond(Box<ResponseKind>, Option<OwnedSemaphorePermit>),
    /// An `acks=0` produce that succeeded: no response.
    Silent,
    /// Close the connection (an `acks=0` produce that failed, as Kafka does).
    Close(Box<Closed>),
}

/// One request's answer, in the connection's request order. Dropped unanswered (the
/// connection closed, the broker stops), its task is aborted. Its frame's bytes stay counted
/// against `queued_max_request_bytes` until its response is written.
struct Pending {
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    answer: JoinHandle<Outcome>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.answer.abort();
    }
}

async fn connection(
    stream: GuardedStream,
    peer: std::net::SocketAddr,
    node: Arc<Node>,
    queued: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), Closed> {
    let (mut reader, writer) = tokio::io::split(stream);
    // One less than IN_FLIGHT waits in the channel while the writer holds one.
    let (pending, answers) = mpsc::channel::<Pending>(IN_FLIGHT - 1);
    let mut writing = tokio::spawn(write_answers(answers, writer));
    let max = node.config.socket_request_max_bytes;
    // Produce requests of one connection append in the order they came (Kafka's brokers
    // handle a connection's requests one at a time): each waits for the one before.
    let mut produced: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let result = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut reader, max, &queued) => frame,
            _ = stopped.wait_for(|&stop| stop) => break Ok(()),
            // The writer failed or gave up: nothing more can be answered.
            () = pending.closed() => break Ok(()),
        };
        let (frame, permit) = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break Ok(()),
            Err(closed) => break Err(closed),
        };
        let next = match decode(frame) {
            Ok(mut request) => {
                request.client_host = format!("/{}", peer.ip());
                let (correlation_id, key, version) = (
                    request.header.correlation_id,
                    request.key,
                    request.header.request_api_version,
                );
                let node = Arc::clone(&node);
                let memory = Arc::clone(&queued);
                let turn = if key == ApiKey::Produce {
                    let (done, next) = tokio::sync::oneshot::channel();
                    Some((produced.replace(next), done))
                } else {
                    None
                };
                let answer = tokio::spawn(async move {
                    match turn {
                        Some((before, done)) => {
                            if let Some(before) = before {
                                let _ = before.await;
                            }
                            let outcome = handle(&node, request, &memory).await;
                            let _ = done.send(());
                            outcome
                        }
                        None => handle(&node, request, &memory).await,
                    }
                });
                Pending {
                    correlation_id,
                    key,
                    version,
                    answer,
                    _permit: Some(permit),
                }
            }
            Err(Refusal::UnsupportedApiVersions { correlation_id }) => Pending {
                correlation_id,
                key: ApiKey::ApiVersions,
                version: 0,
                answer: tokio::spawn(async {
                    Outcome::Respond(Box::new(apis::unsupported_version()), None)
                }),
                _permit: Some(permit),
            },
            Err(Refusal::Close(closed)) => break Err(closed),
        };
        let sent = tokio::select! {
            sent = pending.send(next) => sent.is_ok(),
            _ = stopped.wait_for(|&stop| stop) => false,
        };
        if !sent {
            break Ok(());
        }
    };
    drop(pending);
    if *stopped.borrow() {
        // The broker stops: what is still running is not waited for.
        writing.abort();
        return result;
    }
    // Answers already running are still written (within the transfer deadline, after at
    // most the longest fetch wait), unless the writer itself failed.
    let patience = node.config.fetch_max_wait + TRANSFER_DEADLINE;
    match tokio::time::timeout(patience, &mut writing).await {
        Ok(Ok(Err(closed))) => Err(closed),
        Ok(_) => result,
        Err(_) => {
            writing.abort();
            result
        }
    }
}

/// Reads one frame: `None` at a clean end of the stream.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
    queued: &Arc<Semaphore>,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, Closed> {
    let mut length = [0u8; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let length = i32::from_be_bytes(length);
    let size = usize::try_from(length)
        .ok()
        .filter(|n| (8..=max).contains(n))
        .ok_or(Closed::FrameSize(i64::from(length), max))?;
    // The frame's bytes are held (against every connection's share) until it is answered.
    let permit = Arc::clone(queued)
        .acquire_many_owned(u32::try_from(size).unwrap_or(u32::MAX))
        .await
        .map_err(|_| std::io::Error::other("the broker is stopping"))?;
    let mut frame = BytesMut::zeroed(size);
    tokio::time::timeout(TRANSFER_DEADLINE, reader.read_exact(&mut frame))
        .await
        .map_err(|_| Closed::SlowFrame(size, TRANSFER_DEADLINE))??;
    Ok(Some((frame.freeze(), permit)))
}

/// A decoded request.
struct Request {
    key: ApiKey,
    header: RequestHeader,
    body: RequestKind,
    /// The client's address, as group members show it.
    client_host: String,
}

enum Refusal {
    /// ApiVersions at a version this broker does not serve: Kafka's answer is
    /// UNSUPPORTED_VERSION in a v0 body, with the versions served, so the client can ask
    /// again at one of them.
    UnsupportedApiVersions {
        correlation_id: i32,
    },
    Close(Closed),
}

/// Checks and decodes one request frame (the bytes after its length) as a connection does,
/// for the fuzzer: the API and version, or why the connection would close.
///
/// # Errors
/// What closes the connection, as the log says it.
pub fn decode_frame(frame: Bytes) -> Result<(ApiKey, i16), String> {
    if frame.len() < 8 {
        return Err(Closed::FrameSize(frame.len() as i64, usize::MAX).to_string());
    }
    match decode(frame) {
        Ok(request) => Ok((request.key, request.header.request_api_version)),
        Err(Refusal::UnsupportedApiVersions { .. }) => Ok((ApiKey::ApiVersions, 0)),
        Err(Refusal::Close(closed)) => Err(closed.to_string()),
    }
}

fn decode(frame: Bytes) -> Result<Request, Refusal> {
    let raw_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key =
        ApiKey::try_from(raw_key).map_err(|()| Refusal::Close(Closed::UnknownApi(raw_key)))?;
    let Some(range) = apis::served(key) else {
        return Err(Refusal::Close(Closed::UnknownApi(raw_key)));
    };
    if !(range.0..=range.1).contains(&version) {
        if key == ApiKey::ApiVersions {
            return Err(Refusal::UnsupportedApiVersions { correlation_id });
        }
        return Err(Refusal::Close(Closed::UnsupportedVersion(key, version)));
    }
    let malformed = |e: String| Refusal::Close(Closed::Malformed(key, version, e));
    let mut bytes = frame;
    let header = RequestHeader::decode(&mut bytes, key.request_header_version(version))
        .map_err(|e| malformed(format!("header: {e}")))?;
    bounds::check(key, version, bytes.chunk()).map_err(|e| malformed(e.to_string()))?;
    let body =
        RequestKind::decode(key, &mut bytes, version).map_err(|e| malformed(e.to_string()))?;
    Ok(Request {
        key,
        header,
        body,
        client_host: String::new(),
    })
}

/// Runs one request; `memory` is the listener's budget, which a fetch's records are held
/// against until written.
async fn handle(node: &Node, request: Request, memory: &Arc<Semaphore>) -> Outcome {
    let version = request.header.request_api_version;
    let response = match request.body {
        RequestKind::ApiVersions(_) => apis::api_versions(),
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::metadata(node, r, version)),
        RequestKind::Produce(r) => {
            let acks = r.acks;
            let answer = produce::produce(node, r).await;
            if acks == 0 {
                let failed = answer
                    .responses
                    .iter()
                    .flat_map(|t| t.partition_responses.iter().map(move |p| (t, p)))
                    .find(|(_, p)| p.error_code != errors::NONE);
                return match failed {
                    Some((t, p)) => Outcome::Close(Box::new(Closed::SilentProduceFailed(format!(
                        "{}-{}: error {}",
                        t.name.0, p.index, p.error_code
                    )))),
                    None => Outcome::Silent,
                };
            }
            ResponseKind::Produce(answer)
        }
        RequestKind::Fetch(r) => {
            let (response, held) = fetch::fetch(node, r, memory).await;
            return Outcome::Respond(Box::new(ResponseKind::Fetch(response)), held);
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(admin::create_topics(node, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(admin::delete_topics(node, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(admin::create_partitions(node, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(offsets::find_coordinator(node, r, version).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(offsets::offset_commit(node, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(offsets::offset_fetch(node, r, version).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(configs::describe_configs(node, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(alter_configs::alter_configs(node, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            alter_configs::incremental_alter_configs(node, r).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(delete_records::delete_records(node, r))
        }
        RequestKind::DescribeCluster(_) => {
            ResponseKind::DescribeCluster(metadata::describe_cluster(node))
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(leader_epoch::offset_for_leader_epoch(node, r))
        }
        RequestKind::JoinGroup(r) => {
            let client_id = request.header.client_id.as_ref().map(ToString::to_string);
            let client = (
                client_id.as_deref().unwrap_or(""),
                request.client_host.as_str(),
            );
            ResponseKind::JoinGroup(membership::join_group(node, r, version, client).await)
        }
        RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(membership::sync_group(node, r).await),
        RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(membership::heartbeat(node, r).await),
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(membership::leave_group(node, r, version).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            consumer_group::consumer_group_heartbeat(node, r).await,
        ),
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(groups::list_groups(node, r)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(groups::describe_groups(node, r, version).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(groups::delete_groups(node, r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(producer_id::init_producer_id(node, r).await)
        }
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(list_offsets::list_offsets(node, r, version))
        }
        other => {
            // `decode` admits only the APIs `apis` serves, each handled above.
            tracing::error!(request = ?request.key, "a request this broker decodes but does not serve: {other:?}");
            return Outcome::Close(Box::new(Closed::UnknownApi(request.key as i16)));
        }
    };
    Outcome::Respond(Box::new(response), None)
}

/// Writes each answer, in request order, as it completes; each within the transfer
/// deadline.
async fn write_answers<W: tokio::io::AsyncWrite + Unpin>(
    mut answers: mpsc::Receiver<Pending>,
    mut writer: W,
) -> Result<(), Closed> {
    let mut buffer = BytesMut::new();
    while let Some(mut pending) = answers.recv().await {
        let (answer, held) = match (&mut pending.answer).await {
            Ok(Outcome::Respond(answer, held)) => (answer, held),
            Ok(Outcome::Silent) => continue,
            Ok(Outcome::Close(closed)) => return Err(*closed),
            Err(e) => {
                tracing::error!(request = ?pending.key, error = %e, "a Kafka request's task failed");
                return Err(std::io::Error::other("a request failed").into());
            }
        };
        buffer.clear();
        buffer.extend_from_slice(&[0; 4]);
        let header = ResponseHeader::default().with_correlation_id(pending.correlation_id);
        // ApiVersions answers always carry a v0 header, whatever the request's version.
        let header_version = if pending.key == ApiKey::ApiVersions {
            0
        } else {
            pending.key.response_header_version(pending.version)
        };
        let encoded = header
            .encode(&mut buffer, header_version)
            .and_then(|()| answer.encode(&mut buffer, pending.version));
        drop(answer);
        let length = i32::try_from(buffer.len() - 4).ok();
        let (Ok(()), Some(length)) = (encoded, length) else {
            tracing::error!(request = ?pending.key, version = pending.version, "cannot encode a Kafka response");
            return Err(std::io::Error::other("a response could not be encoded").into());
        };
        buffer[..4].copy_from_slice(&length.to_be_bytes());
        // One write per answer: the next one may be a long poll still waiting.
        tokio::time::timeout(TRANSFER_DEADLINE, writer.write_all(&buffer))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client stopped reading its responses",
                )
            })??;
        // Written: the response's bytes leave the memory budget.
        drop(held);
        // A large fetch's buffer is not kept for the life of the connection.
        if buffer.capacity() > 1 << 20 {
            buffer = BytesMut::new();
        }
    }
    writer.flush().await?;
    Ok(())
}

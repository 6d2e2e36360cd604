//! Any bytes as each request message the broker's and controller's services decode: prost
//! decoding never panics, and memory stays bounded by the message (prost allocates by what
//! it reads, not by counts it is told).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use weir_proto::v1;

fuzz_target!(|data: &[u8]| {
    let _ = v1::ProduceRequest::decode(data);
    let _ = v1::FetchRequest::decode(data);
    let _ = v1::SubscribeRequest::decode(data);
    let _ = v1::ListOffsetsRequest::decode(data);
    let _ = v1::MetadataRequest::decode(data);
    let _ = v1::CreateTopicRequest::decode(data);
    let _ = v1::AlterTopicConfigRequest::decode(data);
    let _ = v1::GroupHeartbeatRequest::decode(data);
    let _ = v1::CommitOffsetsRequest::decode(data);
    let _ = v1::ResetOffsetsRequest::decode(data);
    let _ = v1::ReplicaFetchRequest::decode(data);
    let _ = v1::RegisterBrokerRequest::decode(data);
    let _ = v1::AlterIsrRequest::decode(data);
    let _ = v1::ClusterMetadata::decode(data);
});

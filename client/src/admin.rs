//! Topic administration.

use std::collections::{BTreeMap, HashMap};

use weir_proto::v1;

use crate::{Client, ClientError};

impl Client {
    /// One admin call, tried again while the broker is unreachable or starting.
    async fn admin_call<T, F, Fut>(&self, what: &str, call: F) -> Result<T, ClientError>
    where
        F: Fn(v1::admin_client::AdminClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.retrying(what, || async {
            call(self.admin.clone())
                .await
                .map(tonic::Response::into_inner)
                .map_err(ClientError::from)
        })
        .await
    }

    /// # Errors
    /// The broker's error: `TOPIC_EXISTS`, `INVALID_TOPIC`, `UNKNOWN_CONFIG`, ...
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i32,
        config: BTreeMap<String, String>,
    ) -> Result<v1::TopicDescription, ClientError> {
        let request = v1::CreateTopicRequest {
            name: name.to_string(),
            partitions,
            replication_factor,
            config: config.into_iter().collect::<HashMap<_, _>>(),
        };
        let what = format!("creating topic {name:?}");
        self.admin_call(&what, |mut admin| {
            let request = request.clone();
            async move { admin.create_topic(request).await }
        })
        .await
    }

    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let what = format!("deleting topic {name:?}");
        let request = v1::DeleteTopicRequest {
            name: name.to_string(),
        };
        self.admin_call(&what, |mut admin| {
            let request = request.clone();
            async move { admin.delete_topic(request).await }
        })
        .await?;
        self.forget(name);
        Ok(())
    }

    /// # Errors
    /// The broker's error.
    pub async fn list_topics(&self) -> Result<Vec<v1::TopicDescription>, ClientError> {
        Ok(self
            .admin_call("listing topics", |mut admin| async move {
                admin.list_topics(v1::ListTopicsRequest {}).await
            })
            .await?
            .topics)
    }

    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_TOPIC`.
    pub async fn describe_topic(&self, name: &str) -> Result<v1::TopicDescription, ClientError> {
        let what = format!("describing topic {name:?}");
        let request = v1::DescribeTopicRequest {
            name: name.to_string(),
        };
        let mut described = self
            .admin_call(&what, |mut admin| {
                let request = request.clone();
                async move { admin.describe_topic(request).await }
            })
            .await?;
        // A broker knows the offsets of the replicas it holds, but a follower's high watermark
        // trails its leader's (by a fetch): each partition's leader is asked.
        let mut asked = std::collections::BTreeMap::new();
        for index in 0..described.partitions.len() {
            let p = &described.partitions[index];
            if p.leader < 0 {
                continue;
            }
            if let std::collections::btree_map::Entry::Vacant(slot) = asked.entry(p.leader) {
                let answer = match self.leader(name, p.partition).await {
                    Ok(mut leader) => leader
                        .metadata(v1::MetadataRequest {
                            topics: vec![name.to_string()],
                        })
                        .await
                        .ok()
                        .and_then(|r| r.into_inner().topics.into_iter().next()),
                    Err(_) => None,
                };
                slot.insert(answer);
            }
            let from_leader = asked
                .get(&p.leader)
                .and_then(Option::as_ref)
                .and_then(|t| t.partitions.iter().find(|q| q.partition == p.partition))
                .filter(|q| q.log_end_offset >= 0)
                .cloned();
            if let Some(q) = from_leader {
                let p = &mut described.partitions[index];
                p.log_start_offset = q.log_start_offset;
                p.log_end_offset = q.log_end_offset;
                p.high_watermark = q.high_watermark;
                p.size_bytes = q.size_bytes;
            }
        }
        Ok(described)
    }

    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_CONFIG`.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        set: BTreeMap<String, String>,
        delete: Vec<String>,
    ) -> Result<v1::TopicDescription, ClientError> {
        let request = v1::AlterTopicConfigRequest {
            name: name.to_string(),
            set: set.into_iter().collect(),
            delete,
        };
        let what = format!("changing the config of topic {name:?}");
        self.admin_call(&what, |mut admin| {
            let request = request.clone();
            async move { admin.alter_topic_config(request).await }
        })
        .await
    }

    /// # Errors
    /// The broker's error.
    pub async fn add_partitions(
        &self,
        name: &str,
        total: i32,
    ) -> Result<v1::TopicDescription, ClientError> {
        let request = v1::AddPartitionsRequest {
            name: name.to_string(),
            partitions: total,
        };
        let what = format!("adding partitions to topic {name:?}");
        let description = self
            .admin_call(&what, |mut admin| {
                let request = request.clone();
                async move { admin.add_partitions(request).await }
            })
            .await?;
        self.forget(name);
        Ok(description)
    }
}

impl Client {
    /// Moves partitions to new replica sets (an empty list cancels a partition's move);
    /// per-partition results, an empty `error` where accepted.
    ///
    /// # Errors
    /// The broker's or the controller's, for the call as a whole.
    pub async fn alter_reassignments(
        &self,
        reassignments: Vec<v1::PartitionReassignment>,
    ) -> Result<Vec<v1::ReassignmentResult>, ClientError> {
        let request = v1::AlterReassignmentsRequest { reassignments };
        let answer = self
            .admin_call("reassigning partitions", |mut admin| {
                let request = request.clone();
                async move { admin.alter_reassignments(request).await }
            })
            .await?;
        for topic in request.reassignments.iter().map(|r| r.topic.as_str()) {
            self.forget(topic);
        }
        Ok(answer.results)
    }

    /// The reassignments under way.
    ///
    /// # Errors
    /// The broker's or the controller's.
    pub async fn list_reassignments(&self) -> Result<Vec<v1::ReassignmentStatus>, ClientError> {
        Ok(self
            .admin_call("listing reassignments", |mut admin| async move {
                admin
                    .list_reassignments(v1::ListReassignmentsRequest {})
                    .await
            })
            .await?
            .reassignments)
    }

    /// The brokers (with their racks) and every topic's partitions, as a broker knows them.
    ///
    /// # Errors
    /// The broker's.
    pub async fn cluster_metadata(&self) -> Result<v1::MetadataResponse, ClientError> {
        self.retrying("reading the cluster's metadata", || async {
            self.weir()
                .metadata(v1::MetadataRequest { topics: Vec::new() })
                .await
                .map(tonic::Response::into_inner)
                .map_err(ClientError::from)
        })
        .await
    }

    /// # Errors
    /// The broker's error.
    pub async fn list_groups(&self) -> Result<Vec<v1::GroupSummary>, ClientError> {
        // Each broker lists the groups it coordinates.
        let mut groups = std::collections::BTreeMap::new();
        let mut first_error = None;
        for address in self.brokers().await {
            let answer = if address == self.address() {
                self.groups().list_groups(v1::ListGroupsRequest {}).await
            } else {
                match self.channel(&address) {
                    Ok(channel) => {
                        v1::groups_client::GroupsClient::new(channel)
                            .list_groups(v1::ListGroupsRequest {})
                            .await
                    }
                    Err(_) => continue,
                }
            };
            match answer {
                Ok(answer) => {
                    for group in answer.into_inner().groups {
                        groups.entry(group.group_id.clone()).or_insert(group);
                    }
                }
                Err(status) => {
                    first_error.get_or_insert(status);
                }
            }
        }
        match (groups.is_empty(), first_error) {
            (true, Some(status)) => Err(status.into()),
            _ => Ok(groups.into_values().collect()),
        }
    }

    /// # Errors
    /// The broker's error, e.g. `UNKNOWN_GROUP`.
    pub async fn describe_group(&self, group: &str) -> Result<v1::GroupDescription, ClientError> {
        let request = v1::DescribeGroupRequest {
            group_id: group.to_string(),
        };
        let answer = self
            .with_coordinator(group, |mut c| {
                let request = request.clone();
                async move { c.describe_group(request).await }
            })
            .await?;
        Ok(answer)
    }

    /// Deletes a group without members and its committed offsets.
    ///
    /// # Errors
    /// The broker's error: `UNKNOWN_GROUP`, `GROUP_NOT_EMPTY`.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        let request = v1::DeleteGroupRequest {
            group_id: group.to_string(),
        };
        self.with_coordinator(group, |mut c| {
            let request = request.clone();
            async move { c.delete_group(request).await }
        })
        .await?;
        Ok(())
    }

    /// Calls the group's coordinator, finding it again when it moved, and trying again (as
    /// the retry policy says) while it is unreachable.
    pub(crate) async fn with_coordinator<T, F, Fut>(
        &self,
        group: &str,
        call: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(v1::groups_client::GroupsClient<tonic::transport::Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let what = format!("waiting for the coordinator of group {group:?}");
        self.retrying(&what, || async {
            let result = match self.coordinator(group).await {
                Ok(coordinator) => call(coordinator).await.map_err(ClientError::from),
                Err(e) => Err(e),
            };
            if result.as_ref().is_err_and(ClientError::is_retryable) {
                self.forget_coordinators();
            }
            result.map(tonic::Response::into_inner)
        })
        .await
    }

    /// Moves a group's committed offsets of `topic`; the group must have no members.
    ///
    /// # Errors
    /// The broker's error, e.g. `GROUP_NOT_EMPTY`.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        spec: v1::OffsetSpec,
        timestamp: i64,
        offset: Option<i64>,
    ) -> Result<(), ClientError> {
        let request = v1::ResetOffsetsRequest {
            group_id: group.to_string(),
            topic: topic.to_string(),
            spec: spec as i32,
            timestamp,
            offset,
            partition_offsets: Default::default(),
        };
        self.with_coordinator(group, |mut c| {
            let request = request.clone();
            async move { c.reset_offsets(request).await }
        })
        .await?;
        Ok(())
    }

    /// Moves a group's committed offsets of some partitions of `topic`, each to its own
    /// offset (clamped to the log's range); the group must have no members.
    ///
    /// # Errors
    /// The broker's error, e.g. `GROUP_NOT_EMPTY`.
    pub async fn reset_group_partition_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: std::collections::HashMap<i32, i64>,
    ) -> Result<(), ClientError> {
        let request = v1::ResetOffsetsRequest {
            group_id: group.to_string(),
            topic: topic.to_string(),
            spec: v1::OffsetSpec::Earliest as i32,
            timestamp: 0,
            offset: None,
            partition_offsets: offsets,
        };
        self.with_coordinator(group, |mut c| {
            let request = request.clone();
            async move { c.reset_offsets(request).await }
        })
        .await?;
        Ok(())
    }
}

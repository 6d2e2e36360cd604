//! The operator's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciliations: Family<KindLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    leader: Gauge,
    controllers: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weir_operator");
        let reconciliations = Family::<KindLabels, Counter>::default();
        let failures = Family::<KindLabels, Counter>::default();
        let leader = Gauge::default();
        let controllers = Gauge::default();
        registry.register(
            "reconciliations",
            "Reconciliations run, by resource kind",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed (and were retried), by resource kind",
            failures.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the controller Lease",
            leader.clone(),
        );
        registry.register(
            "cluster_controllers",
            "Cluster controllers running in this replica",
            controllers.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            failures,
            leader,
            controllers,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &'static str) {
        self.reconciliations
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    pub fn failed(&self, kind: &'static str) {
        self.failures.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub fn set_controllers(&self, running: usize) {
        self.controllers
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

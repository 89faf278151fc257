//! Prometheus metrics: tool calls and their latency per tool and outcome, and requests refused
//! before any tool ran, per reason. Every label value comes from a closed set (tool names,
//! error kinds, refusal reasons), so the series count is bounded.

use std::sync::Arc;
use std::time::Duration;

use decision_gate_core::Action;
use decision_gate_core::access::AccessRefusal;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds, 0.25 ms to 10 s.
const BUCKETS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    tool: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    transport: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    component: &'static str,
}

/// The server's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    calls: Family<CallLabels, Counter>,
    latency: Family<CallLabels, Histogram>,
    refusals: Family<RefusalLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("decision_gate");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<CallLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(BUCKETS)) as fn() -> Histogram,
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        let fallbacks = Family::<FallbackLabels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool and outcome (ok or the error kind)",
            calls.clone(),
        );
        registry.register(
            "tool_call_duration_seconds",
            "Tool call latency by tool and outcome",
            latency.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused before any tool ran, by transport and reason",
            refusals.clone(),
        );
        registry.register(
            "fallbacks",
            "Decisions taken by a local fallback because a shared component did not answer, by \
             component",
            fallbacks.clone(),
        );
        Self {
            registry: Arc::new(registry),
            calls,
            latency,
            refusals,
            fallbacks,
        }
    }

    /// Records one tool call; `tool` is `None` for an unknown tool name.
    pub fn call(&self, tool: Option<Action>, outcome: &'static str, elapsed: Duration) {
        let labels = CallLabels {
            tool: tool.map_or("unknown", Action::name),
            outcome,
        };
        self.calls.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Records a request refused before any tool ran.
    pub fn refusal(&self, transport: &'static str, refusal: AccessRefusal) {
        self.refusals
            .get_or_create(&RefusalLabels {
                transport,
                reason: refusal.kind().as_str(),
            })
            .inc();
    }

    /// Records a decision taken by a local fallback because `component` (a closed set of
    /// names, e.g. `rate_limit_redis`) did not answer.
    pub fn fallback(&self, component: &'static str) {
        self.fallbacks
            .get_or_create(&FallbackLabels { component })
            .inc();
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_refusals_appear_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.call(Some(Action::ScenarioNext), "ok", Duration::from_micros(700));
        metrics.call(None, "invalid_input", Duration::from_micros(10));
        metrics.refusal("http", AccessRefusal::RateLimited);
        metrics.fallback("rate_limit_redis");
        let text = metrics.render();
        assert!(
            text.contains(r#"decision_gate_fallbacks_total{component="rate_limit_redis"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"decision_gate_tool_calls_total{tool="scenario_next",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"decision_gate_tool_calls_total{tool="unknown",outcome="invalid_input"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"decision_gate_tool_call_duration_seconds_bucket{le="0.001",tool="scenario_next",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"decision_gate_requests_refused_total{transport="http",reason="rate_limited"} 1"#
            ),
            "{text}"
        );
    }
}

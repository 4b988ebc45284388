//! What Services and NetworkPolicies select, evaluated from the objects:
//! the test cluster has no network plugin, so the rules are checked by
//! reading them, never by sending traffic.
//!
//! ```text
//! selects(selector, labels)             a LabelSelector against one label map
//! selected(policy, pods)                the pods a NetworkPolicy isolates
//! admits(policies, namespaces, from, to, port)
//!                                       may `from` open a TCP connection to
//!                                       `to`'s `port`, by the ingress rules?
//! ```
//!
//! The semantics are those of the `networking.k8s.io/v1` API reference
//! (NetworkPolicySpec, NetworkPolicyPeer, NetworkPolicyPort): a pod no
//! Ingress policy selects admits everything; a selected pod admits what some
//! rule of some selecting policy allows; a peer with a `podSelector` only
//! means pods of the policy's namespace, with a `namespaceSelector` only
//! every pod of those namespaces, with both the pods matching both. An
//! `ipBlock` peer names addresses, which mean nothing here, so evaluating one
//! panics rather than guess.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use kube::ResourceExt as _;

/// Whether `selector` matches an object with `labels` (every `matchLabels`
/// pair and every `matchExpressions` requirement; the empty selector matches
/// everything). Panics on an operator the API does not define.
pub fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let pairs = selector.match_labels.iter().flatten();
    let pairs_hold = pairs
        .into_iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions_hold = selector
        .match_expressions
        .iter()
        .flatten()
        .all(|requirement| {
            let value = labels.get(&requirement.key);
            let values = requirement.values.as_deref().unwrap_or_default();
            match requirement.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("unknown label selector operator {other}"),
            }
        });
    pairs_hold && expressions_hold
}

/// Whether `policy` governs ingress to pods it selects: `policyTypes`
/// names `Ingress`, or is unset (the API server then sets it, always with
/// `Ingress`).
fn governs_ingress(policy: &NetworkPolicy) -> bool {
    policy
        .spec
        .as_ref()
        .and_then(|spec| spec.policy_types.as_ref())
        .is_none_or(|types| types.iter().any(|t| t == "Ingress"))
}

/// Whether `policy` selects `pod`: same namespace, and its `podSelector`
/// matches the pod's labels (an unset selector selects every pod).
fn selects_pod(policy: &NetworkPolicy, pod: &Pod) -> bool {
    policy.namespace() == pod.namespace()
        && policy
            .spec
            .as_ref()
            .and_then(|spec| spec.pod_selector.as_ref())
            .is_none_or(|selector| selects(selector, pod.labels()))
}

/// The pods of `pods` whose ingress `policy` governs.
pub fn selected<'a>(policy: &NetworkPolicy, pods: &'a [Pod]) -> Vec<&'a Pod> {
    pods.iter()
        .filter(|pod| governs_ingress(policy) && selects_pod(policy, pod))
        .collect()
}

/// Whether `peer` of a rule in `policy` matches `from`, whose namespace's
/// labels are in `namespaces`.
fn peer_matches(
    peer: &NetworkPolicyPeer,
    policy: &NetworkPolicy,
    namespaces: &[Namespace],
    from: &Pod,
) -> bool {
    assert!(
        peer.ip_block.is_none(),
        "NetworkPolicy {}: an ipBlock peer cannot be evaluated without real addresses",
        policy.name_any()
    );
    let namespace_matches = match &peer.namespace_selector {
        None => from.namespace() == policy.namespace(),
        Some(selector) => {
            let name = from.namespace().expect("a pod has a namespace");
            let namespace = namespaces
                .iter()
                .find(|ns| ns.name_any() == name)
                .unwrap_or_else(|| panic!("namespace {name} of pod {} not given", from.name_any()));
            selects(selector, namespace.labels())
        }
    };
    let pod_matches = peer
        .pod_selector
        .as_ref()
        .is_none_or(|selector| selects(selector, from.labels()));
    namespace_matches && pod_matches
}

/// Whether `rule_port` allows TCP `port` on `to`: unset port means every
/// port; a number, or a number up to `endPort`; a name, the port of that name
/// among `to`'s containers.
fn port_matches(rule_port: &NetworkPolicyPort, to: &Pod, port: u16) -> bool {
    if rule_port.protocol.as_deref().unwrap_or("TCP") != "TCP" {
        return false;
    }
    let port = i32::from(port);
    match &rule_port.port {
        None => true,
        Some(IntOrString::Int(first)) => {
            *first == port
                || rule_port
                    .end_port
                    .is_some_and(|end| (*first..=end).contains(&port))
        }
        Some(IntOrString::String(name)) => to
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|container| container.ports.iter().flatten())
            .any(|p| {
                p.name.as_deref() == Some(name.as_str())
                    && p.container_port == port
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            }),
    }
}

/// Whether the ingress rules of `policies` let pod `from` open a TCP
/// connection to pod `to` on `port`. `namespaces` must hold the namespace
/// of every pod (their labels, as the API server keeps them, are what a
/// `namespaceSelector` matches).
pub fn admits(
    policies: &[NetworkPolicy],
    namespaces: &[Namespace],
    from: &Pod,
    to: &Pod,
    port: u16,
) -> bool {
    let isolating: Vec<&NetworkPolicy> = policies
        .iter()
        .filter(|policy| governs_ingress(policy) && selects_pod(policy, to))
        .collect();
    if isolating.is_empty() {
        return true;
    }
    isolating.into_iter().any(|policy| {
        let rules = policy
            .spec
            .iter()
            .flat_map(|spec| spec.ingress.iter().flatten());
        rules.into_iter().any(|rule| {
            let from_ok = rule.from.as_ref().is_none_or(|peers| {
                peers.is_empty()
                    || peers
                        .iter()
                        .any(|peer| peer_matches(peer, policy, namespaces, from))
            });
            let port_ok = rule.ports.as_ref().is_none_or(|ports| {
                ports.is_empty() || ports.iter().any(|p| port_matches(p, to, port))
            });
            from_ok && port_ok
        })
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn mk_pod(namespace: &str, name: &str, labels: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "main", "ports": [{"name": "grpc", "containerPort": 50052}]}]}
        }))
        .unwrap()
    }

    fn mk_namespace(name: &str) -> Namespace {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}}
        }))
        .unwrap()
    }

    fn mk_policy(namespace: &str, spec: serde_json::Value) -> NetworkPolicy {
        serde_json::from_value(json!({
            "metadata": {"namespace": namespace, "name": "p"},
            "spec": spec
        }))
        .unwrap()
    }

    fn mk_selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_follow_every_operator() {
        let web = labels(&[("app", "web"), ("tier", "front")]);
        assert!(selects(&mk_selector(json!({})), &web));
        assert!(selects(
            &mk_selector(json!({"matchLabels": {"app": "web"}})),
            &web
        ));
        assert!(!selects(
            &mk_selector(json!({"matchLabels": {"app": "db"}})),
            &web
        ));
        assert!(!selects(
            &mk_selector(json!({"matchLabels": {"x": "web"}})),
            &web
        ));
        for (operator, values, expected) in [
            ("In", json!(["front", "back"]), true),
            ("In", json!(["back"]), false),
            ("NotIn", json!(["back"]), true),
            ("NotIn", json!(["front"]), false),
            ("Exists", json!(null), true),
            ("DoesNotExist", json!(null), false),
        ] {
            let selector = mk_selector(json!({"matchExpressions": [
                {"key": "tier", "operator": operator, "values": values}
            ]}));
            assert_eq!(selects(&selector, &web), expected, "{operator} {values}");
        }
        let absent = mk_selector(
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}),
        );
        assert!(selects(&absent, &web));
    }

    #[test]
    fn a_peer_with_both_selectors_needs_both() {
        let policy = mk_policy(
            "tenant",
            json!({
                "podSelector": {"matchLabels": {"role": "server"}},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "system"}},
                    "podSelector": {"matchLabels": {"role": "client"}}
                }], "ports": [{"port": 50052}]}]
            }),
        );
        let namespaces = [mk_namespace("system"), mk_namespace("tenant")];
        let server = mk_pod("tenant", "server", json!({"role": "server"}));
        let client = mk_pod("system", "client", json!({"role": "client"}));
        let client_in_tenant = mk_pod("tenant", "client", json!({"role": "client"}));
        let other_in_system = mk_pod("system", "other", json!({"role": "other"}));
        let policies = [policy];
        assert!(admits(&policies, &namespaces, &client, &server, 50052));
        assert!(!admits(&policies, &namespaces, &client, &server, 50051));
        assert!(!admits(
            &policies,
            &namespaces,
            &client_in_tenant,
            &server,
            50052
        ));
        assert!(!admits(
            &policies,
            &namespaces,
            &other_in_system,
            &server,
            50052
        ));
        // A pod the policy does not select is not isolated.
        assert!(admits(
            &policies,
            &namespaces,
            &other_in_system,
            &client_in_tenant,
            1
        ));
        assert_eq!(
            selected(&policies[0], &[server.clone(), client_in_tenant]),
            [&server]
        );
    }

    #[test]
    fn a_pod_selector_alone_means_the_policys_namespace() {
        let policies = [mk_policy(
            "system",
            json!({
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                             "ports": [{"protocol": "TCP", "port": "grpc"}]}]
            }),
        )];
        let namespaces = [mk_namespace("system"), mk_namespace("other")];
        let server = mk_pod("system", "server", json!({"role": "server"}));
        let client = mk_pod("system", "client", json!({"role": "client"}));
        let elsewhere = mk_pod("other", "client", json!({"role": "client"}));
        assert!(admits(&policies, &namespaces, &client, &server, 50052));
        assert!(!admits(&policies, &namespaces, &client, &server, 8080));
        assert!(!admits(&policies, &namespaces, &elsewhere, &server, 50052));
    }

    #[test]
    fn a_policy_without_rules_admits_nothing() {
        let policies = [mk_policy(
            "system",
            json!({"podSelector": {"matchLabels": {"role": "server"}}, "policyTypes": ["Ingress"]}),
        )];
        let namespaces = [mk_namespace("system")];
        let server = mk_pod("system", "server", json!({"role": "server"}));
        let client = mk_pod("system", "client", json!({}));
        assert!(!admits(&policies, &namespaces, &client, &server, 50052));
        let egress_only = [mk_policy(
            "system",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        )];
        assert!(admits(&egress_only, &namespaces, &client, &server, 50052));
    }
}

//! Whether a StatefulSet's pods fit the namespace's ResourceQuotas.
//!
//! A ResourceQuota on pod resources (`pods`, `requests.cpu`, `limits.memory`,
//! …) is charged when the StatefulSet controller creates the pods, long
//! after the StatefulSet itself was written: a server-side dry run of the
//! StatefulSet passes, and the pods then never appear (`FailedCreate …
//! exceeded quota`). [`check`] predicts that refusal before any write: for
//! every quota whose scopes match the pods, and every pod resource it
//! limits, the *increase* of the charge (the desired template's per-pod
//! amount × desired replicas, minus what the current StatefulSet's pods are
//! charged) must fit the quota's remaining room (`hard − used`, from the
//! quota's status, which is what the quota admission enforces).
//!
//! The per-pod amount is what the quota admission charges
//! (`k8s.io/component-helpers/resource` `PodRequests`/`PodLimits`): the sum
//! over containers, or the largest init container when that is larger; a
//! container's limit stands in for a request it does not set (the API
//! server's defaulting). A quota this module cannot judge (a
//! `scopeSelector`, a `PriorityClass` or `CrossNamespacePodAffinity` scope,
//! a value that does not parse) is left to the API server: the check never
//! refuses what it does not understand. Object counts (`configmaps`,
//! `count/…`) are charged when each object is written; the dry run of that
//! write sees them.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceQuota};

use crate::quantity::Quantity;

/// The pods a StatefulSet runs: its pod spec and replica count.
#[derive(Clone, Copy, Debug)]
pub struct Pods<'a> {
    /// The template's pod spec.
    pub spec: &'a PodSpec,
    /// How many pods of it run (a StatefulSet's `spec.replicas`, default 1).
    pub replicas: i32,
}

/// One quota resource a change would exceed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exceeded {
    /// The ResourceQuota's name.
    pub quota: String,
    /// The resource as the quota names it (`requests.cpu`, `pods`, …).
    pub resource: String,
    /// The increase of the charge the change would cause.
    pub requested: Amount,
    /// `hard − used` before the change (negative when already over).
    pub remaining: Amount,
    /// The quota's `hard` value.
    pub hard: Amount,
    /// The quota's `used` value.
    pub used: Amount,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ResourceQuota {:?}: {} would grow by {}, only {} remaining (hard {}, used {})",
            self.quota, self.resource, self.requested, self.remaining, self.hard, self.used
        )
    }
}

/// A quota amount with the unit it is read in: a number of pods, cores or
/// bytes (or of an extended resource), kept in milli-units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Amount(pub Quantity);

impl fmt::Display for Amount {
    /// Whole units as an integer with a binary suffix when exact (`64Mi`),
    /// otherwise milli-units (`1500m`), the forms `kubectl` shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let milli = self.0.milli();
        if milli % 1000 != 0 {
            return write!(f, "{milli}m");
        }
        let units = milli / 1000;
        for (suffix, size) in [("Gi", 1_i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if units != 0 && units % size == 0 {
                return write!(f, "{}{suffix}", units / size);
            }
        }
        write!(f, "{units}")
    }
}

/// What a pod is charged for one quota resource name, `None` when the name
/// is not a pod resource (object counts, storage, services, …).
fn pod_charge(resource: &str, spec: &PodSpec) -> Option<Quantity> {
    match resource {
        "pods" | "count/pods" => Some(Quantity::parse("1").expect("a literal")),
        "cpu" | "memory" | "ephemeral-storage" => Some(per_pod(spec, resource, Side::Requests)),
        // PVC storage is charged to claims, not pods.
        "requests.storage" => None,
        other => {
            if let Some(name) = other.strip_prefix("requests.") {
                Some(per_pod(spec, name, Side::Requests))
            } else {
                other
                    .strip_prefix("limits.")
                    .map(|name| per_pod(spec, name, Side::Limits))
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Requests,
    Limits,
}

/// One container's amount of `name`: its request (its limit when it sets no
/// request), or its limit.
fn container(container: &Container, name: &str, side: Side) -> Quantity {
    let resources = container.resources.as_ref();
    let get = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.and_then(|map| map.get(name))
            .and_then(|q| Quantity::parse(&q.0))
    };
    let limit = get(resources.and_then(|r| r.limits.as_ref()));
    match side {
        Side::Limits => limit,
        Side::Requests => get(resources.and_then(|r| r.requests.as_ref())).or(limit),
    }
    .unwrap_or(Quantity::ZERO)
}

/// A pod's amount of `name`: the sum over its containers, or its largest
/// init container when that is larger (init containers run one at a time).
fn per_pod(spec: &PodSpec, name: &str, side: Side) -> Quantity {
    let sum = spec
        .containers
        .iter()
        .map(|c| container(c, name, side))
        .fold(Quantity::ZERO, |a, b| a.checked_add(b).unwrap_or(a));
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container(c, name, side))
        .max()
        .unwrap_or(Quantity::ZERO);
    sum.max(init)
}

/// Whether the pods are BestEffort as the quota admission's scopes read it
/// (`k8s.io/kubernetes` `qos.GetPodQOS`): no container, init containers
/// included, sets a request or limit above zero for `cpu` or `memory`, the
/// only resources QoS counts. A GPU-only or `cpu: "0"` pod is BestEffort.
fn best_effort(spec: &PodSpec) -> bool {
    let positive = |map: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| {
        map.into_iter().flatten().any(|(name, q)| {
            matches!(name.as_str(), "cpu" | "memory")
                // A value that does not parse is not zero.
                && Quantity::parse(&q.0).is_none_or(|q| q > Quantity::ZERO)
        })
    };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| {
            c.resources
                .as_ref()
                .is_none_or(|r| !positive(r.requests.as_ref()) && !positive(r.limits.as_ref()))
        })
}

/// Whether `quota` charges these pods: `Some(true)` yes, `Some(false)` no
/// (a scope excludes them), `None` when this module cannot tell.
fn charges(quota: &ResourceQuota, spec: &PodSpec) -> Option<bool> {
    let quota_spec = quota.spec.as_ref()?;
    if quota_spec.scope_selector.is_some() {
        return None;
    }
    let terminating = spec.active_deadline_seconds.is_some();
    let mut matches = true;
    for scope in quota_spec.scopes.iter().flatten() {
        matches &= match scope.as_str() {
            "Terminating" => terminating,
            "NotTerminating" => !terminating,
            "BestEffort" => best_effort(spec),
            "NotBestEffort" => !best_effort(spec),
            _ => return None,
        };
    }
    Some(matches)
}

/// The quota resources a change of a StatefulSet's pods from `current`
/// (`None`: no StatefulSet yet) to `desired` would exceed, for every quota of
/// the namespace. Empty: the pods fit (or the quotas are not this module's
/// to judge). Only an increase is checked: pods already running were
/// admitted, and a change that charges less is never refused.
pub fn check(
    quotas: &[ResourceQuota],
    current: Option<Pods<'_>>,
    desired: Pods<'_>,
) -> Vec<Exceeded> {
    let mut exceeded = Vec::new();
    for quota in quotas {
        if charges(quota, desired.spec) != Some(true) {
            continue;
        }
        let (Some(spec), Some(status)) = (quota.spec.as_ref(), quota.status.as_ref()) else {
            continue;
        };
        let used = status.used.as_ref();
        // The quota admission enforces `status.hard` (the quota controller
        // copies `spec.hard` there); a quota not yet seen by the controller
        // has only its spec.
        let hard = status.hard.as_ref().or(spec.hard.as_ref());
        for (resource, hard) in hard.into_iter().flatten() {
            let Some(per_desired) = pod_charge(resource, desired.spec) else {
                continue;
            };
            let charge =
                |per_pod: Quantity, replicas: i32| per_pod.checked_mul(i64::from(replicas.max(0)));
            let Some(wanted) = charge(per_desired, desired.replicas) else {
                continue;
            };
            let charged = match current {
                Some(current) if charges(quota, current.spec) == Some(true) => {
                    pod_charge(resource, current.spec).and_then(|per| charge(per, current.replicas))
                }
                Some(_) | None => Some(Quantity::ZERO),
            };
            let Some(charged) = charged else { continue };
            let increase = wanted.milli() - charged.milli();
            if increase <= 0 {
                continue;
            }
            // Usage not yet computed by the quota controller counts as zero,
            // as the quota admission treats it.
            let used_now = match used.and_then(|used| used.get(resource)) {
                Some(q) => match Quantity::parse(&q.0) {
                    Some(q) => q,
                    None => continue,
                },
                None => Quantity::ZERO,
            };
            let Some(hard_now) = Quantity::parse(&hard.0) else {
                continue;
            };
            let remaining = hard_now.milli() - used_now.milli();
            if increase > remaining {
                exceeded.push(Exceeded {
                    quota: quota.metadata.name.clone().unwrap_or_default(),
                    resource: resource.clone(),
                    requested: Amount(milli(increase)),
                    remaining: Amount(milli(remaining)),
                    hard: Amount(hard_now),
                    used: Amount(used_now),
                });
            }
        }
    }
    exceeded
}

/// A quantity of `milli` thousandths.
fn milli(milli: i128) -> Quantity {
    Quantity::from_milli(milli)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mk_spec(requests: serde_json::Value, limits: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({"containers": [
            {"name": "app", "image": "x", "resources": {"requests": requests, "limits": limits}}
        ]}))
        .unwrap()
    }

    fn mk_quota(name: &str, hard: serde_json::Value, used: serde_json::Value) -> ResourceQuota {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"hard": hard},
            "status": {"hard": hard, "used": used}
        }))
        .unwrap()
    }

    #[test]
    fn a_new_statefulset_must_fit_the_remaining_room() {
        let spec = mk_spec(json!({"cpu": "500m", "memory": "64Mi"}), json!({}));
        let quota = mk_quota(
            "small",
            json!({"requests.cpu": "1", "pods": "10", "configmaps": "1"}),
            json!({"requests.cpu": "250m", "pods": "1", "configmaps": "1"}),
        );
        let fits = check(
            std::slice::from_ref(&quota),
            None,
            Pods {
                spec: &spec,
                replicas: 1,
            },
        );
        assert_eq!(fits, []);
        let exceeded = check(
            &[quota],
            None,
            Pods {
                spec: &spec,
                replicas: 3,
            },
        );
        assert_eq!(exceeded.len(), 1, "{exceeded:?}");
        assert_eq!(exceeded[0].resource, "requests.cpu");
        assert_eq!(
            exceeded[0].to_string(),
            "ResourceQuota \"small\": requests.cpu would grow by 1500m, only 750m remaining (hard 1, used 250m)"
        );
    }

    #[test]
    fn only_the_increase_over_the_current_pods_is_charged() {
        let old = mk_spec(json!({"cpu": "500m"}), json!({}));
        let new = mk_spec(json!({"cpu": "600m"}), json!({}));
        // Two pods of 500m run: 1 of 1.2 used; two of 600m need 200m more.
        let quota = mk_quota("q", json!({"cpu": "1200m"}), json!({"cpu": "1"}));
        let current = Some(Pods {
            spec: &old,
            replicas: 2,
        });
        assert_eq!(
            check(
                std::slice::from_ref(&quota),
                current,
                Pods {
                    spec: &new,
                    replicas: 2
                }
            ),
            []
        );
        let more = check(
            std::slice::from_ref(&quota),
            current,
            Pods {
                spec: &new,
                replicas: 3,
            },
        );
        assert_eq!(more.len(), 1);
        assert_eq!(more[0].requested, Amount(Quantity::parse("800m").unwrap()));
        // Fewer pods never need room, even over a quota already exceeded.
        let full = mk_quota("q", json!({"cpu": "1"}), json!({"cpu": "2"}));
        assert_eq!(
            check(
                &[full],
                current,
                Pods {
                    spec: &new,
                    replicas: 1
                }
            ),
            []
        );
    }

    #[test]
    fn pods_limits_and_memory_are_checked_and_other_resources_are_not() {
        let spec = mk_spec(
            json!({"memory": "64Mi"}),
            json!({"cpu": "1", "memory": "128Mi"}),
        );
        let quota = mk_quota(
            "q",
            json!({"pods": "2", "limits.memory": "200Mi", "requests.cpu": "10",
                   "requests.storage": "0", "services": "0", "count/statefulsets.apps": "0"}),
            json!({"pods": "1"}),
        );
        let exceeded: Vec<_> = check(
            &[quota],
            None,
            Pods {
                spec: &spec,
                replicas: 2,
            },
        )
        .into_iter()
        .map(|e| (e.resource, e.requested.to_string(), e.remaining.to_string()))
        .collect();
        assert_eq!(
            exceeded,
            [
                (
                    "limits.memory".to_string(),
                    "256Mi".to_string(),
                    "200Mi".to_string()
                ),
                ("pods".to_string(), "2".to_string(), "1".to_string()),
            ]
        );
    }

    #[test]
    fn a_limit_stands_in_for_a_missing_request_and_init_containers_count_at_most_once() {
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [
                {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "2"}}},
                {"name": "i2", "image": "x", "resources": {"requests": {"cpu": "1"}}}
            ],
            "containers": [
                {"name": "a", "image": "x", "resources": {"limits": {"cpu": "500m"}}},
                {"name": "b", "image": "x", "resources": {"requests": {"cpu": "500m"}}}
            ]
        }))
        .unwrap();
        assert_eq!(
            per_pod(&spec, "cpu", Side::Requests),
            Quantity::parse("2").unwrap()
        );
        assert_eq!(
            per_pod(&spec, "cpu", Side::Limits),
            Quantity::parse("500m").unwrap()
        );
    }

    #[test]
    fn scopes_decide_which_quotas_charge_the_pods() {
        let spec = mk_spec(json!({"cpu": "1"}), json!({}));
        let scoped = |scopes: serde_json::Value| {
            let mut quota = mk_quota("q", json!({"pods": "0"}), json!({}));
            quota.spec.as_mut().unwrap().scopes = serde_json::from_value(scopes).unwrap();
            quota
        };
        let refused = |quota: ResourceQuota| {
            !check(
                &[quota],
                None,
                Pods {
                    spec: &spec,
                    replicas: 1,
                },
            )
            .is_empty()
        };
        assert!(refused(scoped(json!(["NotTerminating", "NotBestEffort"]))));
        assert!(!refused(scoped(json!(["Terminating"]))));
        assert!(!refused(scoped(json!(["BestEffort"]))));
        // Not this module's to judge: left to the API server.
        assert!(!refused(scoped(json!(["PriorityClass"]))));
        // QoS counts only cpu and memory above zero: a GPU-only pod, or one
        // asking for no cpu, is BestEffort, and a quota forbidding
        // BestEffort pods refuses it.
        for (requests, limits) in [
            (
                json!({"nvidia.com/gpu": "1"}),
                json!({"nvidia.com/gpu": "1"}),
            ),
            (json!({"cpu": "0"}), json!({})),
            (json!({"ephemeral-storage": "1Gi"}), json!({"memory": "0"})),
        ] {
            let spec = mk_spec(requests, limits);
            let refused = |scopes: serde_json::Value| {
                let mut quota = mk_quota("q", json!({"pods": "0"}), json!({}));
                quota.spec.as_mut().unwrap().scopes = serde_json::from_value(scopes).unwrap();
                check(
                    &[quota],
                    None,
                    Pods {
                        spec: &spec,
                        replicas: 1,
                    },
                )
                .into_iter()
                .map(|e| (e.resource, e.requested.to_string()))
                .collect::<Vec<_>>()
            };
            assert_eq!(
                refused(json!(["BestEffort"])),
                [("pods".to_string(), "1".to_string())],
                "{spec:?}"
            );
            assert_eq!(refused(json!(["NotBestEffort"])), [], "{spec:?}");
        }
        let mut selector = mk_quota("q", json!({"pods": "0"}), json!({}));
        selector.spec.as_mut().unwrap().scope_selector = Some(Default::default());
        assert!(!refused(selector));
    }

    #[test]
    fn amounts_read_as_kubectl_shows_them() {
        let show = |text: &str| Amount(Quantity::parse(text).unwrap()).to_string();
        assert_eq!(show("1500m"), "1500m");
        assert_eq!(show("2"), "2");
        assert_eq!(show("64Mi"), "64Mi");
        assert_eq!(show("1Gi"), "1Gi");
        assert_eq!(show("0"), "0");
        assert_eq!(Amount(Quantity::from_milli(-250)).to_string(), "-250m");
    }
}

//! The `self` cluster's quota: what a deploy is charged, and whether the
//! namespace's `limits.k8sResources` (`vCPU`, `memory`, `gpuNvidia`, `gpuAmd`)
//! still covers it. Quantities are parsed by the planner's
//! [`Quantity`], the same reading the renderer uses.

use k8sworker_core::model::{ConfigEntry, InstallationRequest, Resources};
use k8sworker_core::quantity::Quantity;
use serde_json::{Map, Value, json};

/// Why a deploy to `self` cannot be charged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The request has neither a `resourceRequest` nor a `resourceLimit`
    /// entry, so it cannot be charged.
    #[error("a deploy to the self cluster needs a resourceRequest or a resourceLimit")]
    ResourcesRequired,
    /// `cpu` or `memory` is in neither `resourceRequest` nor
    /// `resourceLimit`: a dimension left out would be charged nothing.
    #[error("a deploy to the self cluster must state {} in resourceRequest or resourceLimit", .0.join(" and "))]
    DimensionsRequired(Vec<&'static str>),
    /// A quantity does not parse, or the charge overflows.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The dimension or resource name.
        field: String,
        /// What is wrong, for a person.
        reason: String,
    },
    /// The charge does not fit the namespace's `k8sResources` quota.
    #[error("{resource} quota exceeded: requested {requested}, in use {in_use}, limit {limit}")]
    Exceeded {
        /// The Vantiq dimension (`vCPU`, `memory`, `gpuNvidia`, `gpuAmd`).
        resource: &'static str,
        /// This deploy's charge, as a quantity.
        requested: String,
        /// What the namespace's other installations are charged.
        in_use: String,
        /// The quota, or why there is none.
        limit: String,
    },
}

/// The quota dimensions: (Vantiq name, Kubernetes resource name).
pub const DIMENSIONS: [(&str, &str); 4] = [
    ("vCPU", "cpu"),
    ("memory", "memory"),
    ("gpuNvidia", "nvidia.com/gpu"),
    ("gpuAmd", "amd.com/gpu"),
];

fn quantity_of<'a>(resources: &'a Resources, name: &str) -> Option<&'a str> {
    resources
        .quantities()
        .find(|(resource, _)| *resource == name)
        .map(|(_, value)| value)
}

fn parse(field: &str, text: &str) -> Result<Quantity, QuotaError> {
    Quantity::parse(text).ok_or_else(|| QuotaError::Invalid {
        field: field.to_owned(),
        reason: format!("{text:?} is not a Kubernetes quantity"),
    })
}

/// Formats milli-units as a quantity string (`1500m`, `2`).
pub fn format(quantity: Quantity) -> String {
    let milli = quantity.milli();
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

/// The Kubernetes resources a deploy to `self` must state (in
/// `resourceRequest` or `resourceLimit`); the GPUs are charged when stated.
pub const REQUIRED_RESOURCES: [&str; 2] = ["cpu", "memory"];

/// What a deploy to `self` is charged: per dimension the larger of
/// `resourceRequest` and `resourceLimit`, times `replicaCount`. Refuses a
/// request with neither entry, or one that leaves out `cpu` or `memory`. The answer maps each Vantiq dimension to a
/// quantity string (`{"vCPU": "1500m", "memory": "2147483648", …}`).
pub fn charge(request: &InstallationRequest) -> Result<Value, QuotaError> {
    let mut requests = None;
    let mut limits = None;
    for entry in &request.config {
        match entry {
            ConfigEntry::ResourceRequest(resources) => requests = Some(resources),
            ConfigEntry::ResourceLimit(resources) => limits = Some(resources),
            _ => {}
        }
    }
    if requests.is_none() && limits.is_none() {
        return Err(QuotaError::ResourcesRequired);
    }
    let missing: Vec<&'static str> = REQUIRED_RESOURCES
        .into_iter()
        .filter(|name| {
            [requests, limits]
                .into_iter()
                .flatten()
                .all(|resources| quantity_of(resources, name).is_none())
        })
        .collect();
    if !missing.is_empty() {
        return Err(QuotaError::DimensionsRequired(missing));
    }
    let replicas = i64::from(request.replica_count().max(0));
    let mut out = Map::new();
    for (vantiq, kubernetes) in DIMENSIONS {
        let mut largest = Quantity::ZERO;
        for resources in [requests, limits].into_iter().flatten() {
            if let Some(text) = quantity_of(resources, kubernetes) {
                largest = largest.max(parse(kubernetes, text)?);
            }
        }
        let total = largest
            .checked_mul(replicas)
            .ok_or_else(|| QuotaError::Invalid {
                field: kubernetes.to_owned(),
                reason: "the charge overflows".into(),
            })?;
        out.insert(vantiq.to_owned(), json!(format(total)));
    }
    Ok(Value::Object(out))
}

fn dimension(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// Checks `charge` plus the namespace's other charges against `limits`
/// (the namespace's `limits` object). No `k8sResources` quota: nothing is
/// permitted.
pub fn check(limits: &Value, charge: &Value, others: &[Value]) -> Result<(), QuotaError> {
    let quota = limits.get("k8sResources").filter(|quota| quota.is_object());
    for (vantiq, _) in DIMENSIONS {
        let requested = parse(
            vantiq,
            &dimension(charge.get(vantiq)).unwrap_or_else(|| "0".into()),
        )?;
        let mut in_use = Quantity::ZERO;
        for other in others {
            if let Some(text) = dimension(other.get(vantiq)) {
                in_use = in_use.checked_add(parse(vantiq, &text)?).unwrap_or(in_use);
            }
        }
        let Some(quota) = quota else {
            return Err(QuotaError::Exceeded {
                resource: vantiq,
                requested: format(requested),
                in_use: format(in_use),
                limit: "none (the namespace has no k8sResources quota)".into(),
            });
        };
        let limit = match dimension(quota.get(vantiq)) {
            Some(text) => parse(vantiq, &text)?,
            None => Quantity::ZERO,
        };
        let fits = in_use
            .checked_add(requested)
            .is_some_and(|total| total <= limit);
        if requested > Quantity::ZERO && !fits {
            return Err(QuotaError::Exceeded {
                resource: vantiq,
                requested: format(requested),
                in_use: format(in_use),
                limit: format(limit),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(config: Value) -> InstallationRequest {
        InstallationRequest::from_json(
            &json!({"name": "a", "k8sNamespace": "ns", "config": config}),
        )
        .unwrap()
    }

    #[test]
    fn charge_is_the_larger_times_replicas() {
        let r = request(json!([
            {"type": "image", "name": "nginx", "replicaCount": 2},
            {"type": "resourceRequest", "cpu": "500m", "memory": "1Gi"},
            {"type": "resourceLimit", "cpu": "1", "memory": "512Mi"}
        ]));
        let charge = charge(&r).unwrap();
        assert_eq!(charge["vCPU"], "2");
        assert_eq!(charge["memory"], (2u64 << 30).to_string());
        assert_eq!(charge["gpuNvidia"], "0");
    }

    #[test]
    fn resources_are_required() {
        let r = request(json!([{"type": "image", "name": "nginx"}]));
        assert!(matches!(charge(&r), Err(QuotaError::ResourcesRequired)));
    }

    #[test]
    fn cpu_and_memory_are_both_required() {
        let cpu_only = request(json!([
            {"type": "image", "name": "nginx"},
            {"type": "resourceLimit", "cpu": "1"}
        ]));
        assert_eq!(
            charge(&cpu_only),
            Err(QuotaError::DimensionsRequired(vec!["memory"]))
        );
        let gpu_only = request(json!([
            {"type": "image", "name": "nginx"},
            {"type": "resourceRequest", "nvidia.com/gpu": "1"}
        ]));
        assert_eq!(
            charge(&gpu_only),
            Err(QuotaError::DimensionsRequired(vec!["cpu", "memory"]))
        );
        // Each may come from either entry.
        let split = request(json!([
            {"type": "image", "name": "nginx"},
            {"type": "resourceRequest", "cpu": "250m"},
            {"type": "resourceLimit", "memory": "64Mi"}
        ]));
        assert_eq!(charge(&split).unwrap()["vCPU"], "250m");
    }

    #[test]
    fn quota_is_enforced() {
        let limits = json!({"k8sResources": {"vCPU": "2", "memory": "4Gi"}});
        let small = json!({"vCPU": "1", "memory": "1Gi", "gpuNvidia": "0", "gpuAmd": "0"});
        assert!(check(&limits, &small, std::slice::from_ref(&small)).is_ok());
        assert!(matches!(
            check(&limits, &small, &[small.clone(), small.clone()]),
            Err(QuotaError::Exceeded {
                resource: "vCPU",
                ..
            })
        ));
        assert!(check(&json!({}), &small, &[]).is_err());
        let gpu = json!({"vCPU": "0", "memory": "0", "gpuNvidia": "1", "gpuAmd": "0"});
        assert!(check(&limits, &gpu, &[]).is_err());
    }
}

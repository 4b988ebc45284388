//! What an installation has in the executor's namespace right now.
//!
//! Answered from the watch-fed [`Cache`] once it is synced: no API call.
//! The installation's objects are those of the managed kinds carrying its
//! labels; each requested name the labels did not find is looked up by name
//! (an object in the way, possibly not ours), and each referenced
//! ConfigMap, Secret or claim by name. StatefulSets and Services carry their
//! replica counts and the fields an update may not change (see
//! [`k8sworker_core::immutable`]); each object carries the fields other
//! field managers own, with the values the cache kept
//! ([`k8sworker_core::managed`]: values outside `metadata` only for the
//! kinds watched whole). Secret data never leaves the API server: Secrets
//! are watched as metadata only.

use std::collections::BTreeSet;

use k8sworker_proto::v1::{ComponentRef, ObserveRequest, ObserveResponse, ObservedComponent};

use crate::{Error, cache::Cache, kinds::Kind};

/// Observes `request.installation` in `namespace` (already checked to be
/// the executor's own) from the synced `cache`.
pub fn observe(
    cache: &Cache,
    namespace: &str,
    request: &ObserveRequest,
) -> Result<ObserveResponse, Error> {
    let names = checked_refs(namespace, &request.names, |kind| kind.is_managed())?;
    let references = checked_refs(namespace, &request.references, |kind| {
        matches!(
            kind,
            Kind::ConfigMap | Kind::Secret | Kind::PersistentVolumeClaim
        )
    })?;

    let mut components: Vec<ObservedComponent> = cache
        .installation(&request.installation)
        .into_iter()
        .map(|entry| entry.observed.clone())
        .collect();
    let seen: BTreeSet<(String, String)> = components
        .iter()
        .filter_map(|c| c.r#ref.as_ref())
        .map(|r| (r.kind.clone(), r.name.clone()))
        .collect();
    let found = names
        .iter()
        .filter(|(_, r)| !seen.contains(&(r.kind.clone(), r.name.clone())))
        .filter_map(|(kind, r)| cache.get(*kind, &r.name))
        .map(|entry| entry.observed.clone());
    components.extend(found);
    components.sort_by(|a, b| {
        let key = |c: &ObservedComponent| {
            let r = c.r#ref.clone().unwrap_or_default();
            (Kind::from_type(&r.api_version, &r.kind), r.name)
        };
        key(a).cmp(&key(b))
    });

    let existing = references
        .into_iter()
        .filter(|(kind, r)| cache.get(*kind, &r.name).is_some())
        .map(|(_, r)| r)
        .collect();
    Ok(ObserveResponse {
        components,
        existing_references: existing,
    })
}

/// Checks kinds and namespaces of requested refs; fills in the namespace.
fn checked_refs(
    namespace: &str,
    refs: &[ComponentRef],
    allowed: impl Fn(Kind) -> bool,
) -> Result<Vec<(Kind, ComponentRef)>, Error> {
    refs.iter()
        .map(|r| {
            let mut r = r.clone();
            if r.namespace.is_empty() {
                r.namespace = namespace.to_string();
            } else if r.namespace != namespace {
                return Err(Error::WrongNamespace {
                    requested: r.namespace.clone(),
                    own: namespace.to_string(),
                });
            }
            match Kind::from_type(&r.api_version, &r.kind).filter(|kind| allowed(*kind)) {
                Some(kind) => Ok((kind, r)),
                None => Err(Error::invalid_component(
                    &r,
                    "this kind cannot be observed here",
                )),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_outside_the_namespace_or_kinds_are_refused() {
        let mk = |kind: &str, namespace: &str| ComponentRef {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: "x".into(),
        };
        let refs = checked_refs("ns-a", &[mk("Secret", "")], |_| true).unwrap();
        assert_eq!(refs[0].1.namespace, "ns-a");
        assert!(matches!(
            checked_refs("ns-a", &[mk("Secret", "ns-b")], |_| true),
            Err(Error::WrongNamespace { .. })
        ));
        assert!(matches!(
            checked_refs("ns-a", &[mk("Pod", "")], |_| true),
            Err(Error::Invalid { .. })
        ));
        assert!(matches!(
            checked_refs("ns-a", &[mk("PersistentVolumeClaim", "")], |kind| kind
                .is_managed()),
            Err(Error::Invalid { .. })
        ));
    }
}

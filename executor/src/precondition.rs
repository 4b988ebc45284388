//! Whether the state a plan was computed from still holds.
//!
//! Before the first write of a plan, every step's object is looked up in
//! the executor's synced [`Cache`] (no API call) and compared with the
//! step's [`Expectation`]: must-not-exist, or exactly the observed uid and
//! resourceVersion. One stale step refuses the whole plan. An existing
//! object whose owner record (`k8sworker.io/owner`) does not name the plan's
//! tenant, installation and the object itself is reported as not owned,
//! never touched; the one exception is an object from before owner records
//! (this installation's two labels, no record), which a create or update
//! may meet (the update adopts it by writing the record). The writes that
//! follow repeat the check atomically on the server (resourceVersion in the
//! applied object, delete preconditions), so the check here is what makes a
//! refused plan cost nothing, and the server-side check is what makes a
//! race, or a cache that lags another writer, harmless.
//!
//! An update of a StatefulSet or Service is refused when it would change a
//! field the API server never lets an update change
//! ([`k8sworker_core::immutable`], kept by the cache): the planner refuses
//! such a plan already; this second line keeps a plan from another planner
//! from stopping half-way at the API server's refusal.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use k8sworker_core::component::{ComponentId, Object};
use k8sworker_core::immutable;
use k8sworker_core::labels;
use k8sworker_core::managed;
use k8sworker_core::owner::{OwnerRecord, Tenant};
use k8sworker_proto::v1::Action;
use kube::{Api, Client, api::DynamicObject};
use serde_json::Value;

pub use crate::reduce::{Found, owner};
use crate::{
    Error,
    cache::Cache,
    error::Problem,
    kinds::{self, Kind},
    plan::{CheckedStep, Expectation},
};

/// Why a precondition does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The object changed (or appeared, or vanished) after it was observed.
    Stale(String),
    /// The object exists but is not this installation's.
    NotOwned(String),
}

/// Whose a step's object must be: the owner record it must carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The plan's installation.
    pub installation: String,
    /// The record naming the plan's tenant, installation and the object.
    pub record: String,
}

impl Expected {
    /// The owner `tenant`'s plan for `installation` expects of `object`.
    pub fn new(tenant: &Tenant, installation: &str, object: ComponentId) -> Expected {
        Expected {
            installation: installation.to_owned(),
            record: OwnerRecord::new(tenant, installation, object).to_string(),
        }
    }
}

/// What one check found: the step's index, the object, its immutable
/// fields (updates of StatefulSets and Services only) and, when read, its
/// managedFields.
type Read = (
    usize,
    Option<Found>,
    Option<immutable::Fields>,
    Option<Vec<ManagedFieldsEntry>>,
);

/// Compares what was found with what the step expects. An object being
/// deleted satisfies only a delete: writing to it would be lost a moment later.
pub fn verdict(
    action: Action,
    expectation: &Expectation,
    found: Option<&Found>,
    expected: &Expected,
) -> Result<(), Refusal> {
    let installation = expected.installation.as_str();
    let ownership = |found: &Found| match (found.owner_record.as_deref(), owner(&found.labels)) {
        (Some(record), _) if record == expected.record => Ok(()),
        (Some(record), _) => Err(Refusal::NotOwned(format!(
            "owned by {record:?}, not {:?}",
            expected.record
        ))),
        (None, Some(owner))
            if owner == installation && matches!(action, Action::Create | Action::Update) =>
        {
            Ok(())
        }
        (None, Some(owner)) if owner == installation => Err(Refusal::NotOwned(format!(
            "has installation {installation:?}'s labels from before owner records and no {} annotation; only a deploy adopts it",
            labels::OWNER
        ))),
        (None, Some(other)) => Err(Refusal::NotOwned(format!(
            "belongs to installation {other:?}"
        ))),
        (None, None) => Err(Refusal::NotOwned(format!(
            "exists without the labels {}={} and {}={installation}",
            labels::MANAGED_BY,
            labels::MANAGER,
            labels::INSTALLATION
        ))),
    };
    match (expectation, found) {
        (Expectation::Unchecked, _) | (Expectation::MustNotExist, None) => Ok(()),
        (Expectation::MustNotExist, Some(found)) => {
            ownership(found)?;
            Err(Refusal::Stale(format!(
                "exists (uid {}), the plan expected it absent",
                found.uid
            )))
        }
        (Expectation::Version { uid, .. }, None) => Err(Refusal::Stale(format!(
            "is gone, the plan expected uid {uid}"
        ))),
        (
            Expectation::Version {
                uid,
                resource_version,
            },
            Some(found),
        ) => {
            ownership(found)?;
            if found.deleting && action != Action::Delete {
                Err(Refusal::Stale(
                    "is being deleted; plan again once it is gone".to_string(),
                ))
            } else if found.uid != *uid {
                Err(Refusal::Stale(format!(
                    "was replaced (uid {}), the plan expected uid {uid}",
                    found.uid
                )))
            } else if found.resource_version != *resource_version {
                Err(Refusal::Stale(format!(
                    "changed (resourceVersion {}), the plan expected {resource_version}",
                    found.resource_version
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// Checks every checked step's object against the synced `cache` and
/// refuses the plan when any precondition fails; not-owned objects are
/// reported ahead of stale ones. An UPDATE of an object another field
/// manager wrote may have to take fields over; its object's
/// `managedFields`, which the cache does not keep, are read (one metadata
/// read) and it gets its [`CheckedStep::handover`].
///
/// With `read_creates` (no dry-run wave follows, whose dry run of a CREATE
/// finds an object the cache has not seen yet), the object of each CREATE
/// the cache says is absent is read by metadata, as before the cache.
pub async fn check_all(
    client: &Client,
    cache: &Cache,
    steps: &mut [CheckedStep],
    tenant: &Tenant,
    installation: &str,
    read_creates: bool,
) -> Result<(), Error> {
    let mut found: Vec<Read> = Vec::new();
    for (index, step) in steps.iter().enumerate() {
        if step.expectation == Expectation::Unchecked {
            continue;
        }
        let api = || -> Api<DynamicObject> {
            Api::namespaced_with(
                client.clone(),
                &step.component.namespace,
                &kinds::api_resource(step.kind),
            )
        };
        let failed = |source| Error::kube("read", crate::error::describe(&step.component), source);
        let entry = cache.get(step.kind, &step.component.name);
        if entry.is_none() && read_creates && step.action == Action::Create {
            let read = api()
                .get_metadata_opt(&step.component.name)
                .await
                .map_err(failed)?;
            if let Some(meta) = read {
                found.push((
                    index,
                    Some(Found::from_object_meta(&meta.metadata)),
                    None,
                    None,
                ));
                continue;
            }
        }
        let whole =
            step.action == Action::Update && matches!(step.kind, Kind::StatefulSet | Kind::Service);
        let fields = entry.as_ref().filter(|_| whole).map(|entry| {
            entry
                .observed
                .immutable_fields
                .clone()
                .into_iter()
                .collect()
        });
        let managed = match &entry {
            Some(entry)
                if step.action == Action::Update && !entry.observed.foreign_managers.is_empty() =>
            {
                api()
                    .get_metadata_opt(&step.component.name)
                    .await
                    .map_err(failed)?
                    .and_then(|meta| meta.metadata.managed_fields)
            }
            _ => None,
        };
        found.push((index, entry.map(|e| e.found.clone()), fields, managed));
    }

    let mut stale = Vec::new();
    let mut not_owned = Vec::new();
    let mut fixed = Vec::new();
    for (index, found, fields, managed) in found {
        let step = &mut steps[index];
        if let (Action::Update, Some(object), Some(managed)) =
            (step.action, step.object.as_ref(), managed.as_ref())
        {
            step.handover = managed::handover(managed, object, labels::MANAGER);
        }
        let step = &steps[index];
        let id = ComponentId::new(step.kind, step.component.name.clone());
        let expected = Expected::new(tenant, installation, id.clone());
        match verdict(step.action, &step.expectation, found.as_ref(), &expected) {
            Ok(()) => {
                let desired = step
                    .object
                    .as_ref()
                    .and_then(|object| typed(step.kind, object));
                if let (Some(desired), Some(fields)) = (desired, fields) {
                    fixed.extend(immutable::changes(&id, &desired, &fields).into_iter().map(
                        |change| Problem {
                            component: step.component.clone(),
                            detail: format!(
                                "field `{}` would change from {} to {}",
                                change.field, change.observed, change.desired
                            ),
                        },
                    ));
                }
            }
            Err(Refusal::Stale(detail)) => stale.push(Problem {
                component: step.component.clone(),
                detail,
            }),
            Err(Refusal::NotOwned(detail)) => not_owned.push(Problem {
                component: step.component.clone(),
                detail,
            }),
        }
    }
    if !not_owned.is_empty() {
        Err(Error::NotOwned(not_owned))
    } else if !stale.is_empty() {
        Err(Error::Stale(stale))
    } else if !fixed.is_empty() {
        Err(Error::Immutable(fixed))
    } else {
        Ok(())
    }
}

/// A StatefulSet or Service as a typed object, for comparing immutable
/// fields; `None` for other kinds or JSON that does not read as the kind.
fn typed(kind: Kind, object: &Value) -> Option<Object> {
    match kind {
        Kind::StatefulSet => serde_json::from_value(object.clone())
            .ok()
            .map(|sts| Object::StatefulSet(Box::new(sts))),
        Kind::Service => serde_json::from_value(object.clone())
            .ok()
            .map(Object::Service),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn tenant() -> Tenant {
        Tenant::new("acme", "c1").unwrap()
    }

    fn inst() -> Expected {
        Expected::new(
            &tenant(),
            "inst",
            ComponentId::new(k8sworker_core::component::Kind::ConfigMap, "cm"),
        )
    }

    /// An object with `installation`'s labels and, for one, its owner record
    /// (for tenant `acme/c1`, ConfigMap `cm`).
    fn mk_found(uid: &str, rv: &str, installation: Option<&str>) -> Found {
        let mut found = mk_legacy(uid, rv, installation);
        found.owner_record = installation.map(|installation| {
            Expected::new(
                &tenant(),
                installation,
                ComponentId::new(k8sworker_core::component::Kind::ConfigMap, "cm"),
            )
            .record
        });
        found
    }

    /// An object from before owner records: labels only.
    fn mk_legacy(uid: &str, rv: &str, installation: Option<&str>) -> Found {
        let mut labels = BTreeMap::new();
        if let Some(installation) = installation {
            labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
            labels.insert(labels::INSTALLATION.to_string(), installation.to_string());
        }
        Found {
            uid: uid.into(),
            resource_version: rv.into(),
            labels,
            owner_record: None,
            deleting: false,
        }
    }

    fn mk_version(uid: &str, rv: &str) -> Expectation {
        Expectation::Version {
            uid: uid.into(),
            resource_version: rv.into(),
        }
    }

    #[test]
    fn must_not_exist_holds_only_when_absent() {
        assert_eq!(
            verdict(Action::Update, &Expectation::MustNotExist, None, &inst()),
            Ok(())
        );
        let ours = mk_found("u", "1", Some("inst"));
        assert!(matches!(
            verdict(
                Action::Update,
                &Expectation::MustNotExist,
                Some(&ours),
                &inst()
            ),
            Err(Refusal::Stale(_))
        ));
    }

    #[test]
    fn an_unlabelled_object_in_the_way_is_not_owned() {
        let foreign = mk_found("u", "1", None);
        let refusal = verdict(
            Action::Update,
            &Expectation::MustNotExist,
            Some(&foreign),
            &inst(),
        )
        .unwrap_err();
        assert!(
            matches!(&refusal, Refusal::NotOwned(detail) if detail.contains("without the labels"))
        );
        assert!(matches!(
            verdict(
                Action::Update,
                &mk_version("u", "1"),
                Some(&foreign),
                &inst()
            ),
            Err(Refusal::NotOwned(_))
        ));
    }

    #[test]
    fn another_installations_object_is_not_owned() {
        let theirs = mk_found("u", "1", Some("other"));
        assert!(matches!(
            verdict(Action::Update, &mk_version("u", "1"), Some(&theirs), &inst()),
            Err(Refusal::NotOwned(detail)) if detail.contains("acme/c1/other/ConfigMap/cm")
        ));
        let legacy = mk_legacy("u", "1", Some("other"));
        assert_eq!(
            verdict(
                Action::Update,
                &mk_version("u", "1"),
                Some(&legacy),
                &inst()
            ),
            Err(Refusal::NotOwned(
                "belongs to installation \"other\"".into()
            ))
        );
    }

    #[test]
    fn another_tenants_or_a_copied_record_is_not_owned() {
        let mut theirs = mk_found("u", "1", Some("inst"));
        theirs.owner_record = Some("b/c1/inst/ConfigMap/cm".into());
        let mut copied = mk_found("u", "1", Some("inst"));
        copied.owner_record = Some("acme/c1/inst/ConfigMap/generated".into());
        for found in [theirs, copied] {
            for action in [Action::Update, Action::Delete, Action::Scale, Action::Noop] {
                assert!(
                    matches!(
                        verdict(action, &mk_version("u", "1"), Some(&found), &inst()),
                        Err(Refusal::NotOwned(_))
                    ),
                    "{action:?} {found:?}"
                );
            }
        }
    }

    #[test]
    fn an_object_from_before_owner_records_is_only_adopted_by_an_update() {
        let legacy = mk_legacy("u", "1", Some("inst"));
        assert_eq!(
            verdict(
                Action::Update,
                &mk_version("u", "1"),
                Some(&legacy),
                &inst()
            ),
            Ok(())
        );
        for action in [Action::Delete, Action::Scale, Action::Noop] {
            assert!(
                matches!(
                    verdict(action, &mk_version("u", "1"), Some(&legacy), &inst()),
                    Err(Refusal::NotOwned(detail)) if detail.contains("before owner records")
                ),
                "{action:?}"
            );
        }
    }

    #[test]
    fn expected_version_must_match_uid_and_resource_version() {
        let ours = mk_found("u1", "10", Some("inst"));
        assert_eq!(
            verdict(
                Action::Update,
                &mk_version("u1", "10"),
                Some(&ours),
                &inst()
            ),
            Ok(())
        );
        assert!(matches!(
            verdict(Action::Update, &mk_version("u1", "9"), Some(&ours), &inst()),
            Err(Refusal::Stale(detail)) if detail.contains("resourceVersion 10")
        ));
        assert!(matches!(
            verdict(Action::Update, &mk_version("u0", "10"), Some(&ours), &inst()),
            Err(Refusal::Stale(detail)) if detail.contains("replaced")
        ));
        assert!(matches!(
            verdict(Action::Update, &mk_version("u1", "10"), None, &inst()),
            Err(Refusal::Stale(detail)) if detail.contains("gone")
        ));
    }

    #[test]
    fn an_object_being_deleted_takes_only_a_delete() {
        let mut going = mk_found("u1", "10", Some("inst"));
        going.deleting = true;
        assert!(matches!(
            verdict(Action::Update, &mk_version("u1", "10"), Some(&going), &inst()),
            Err(Refusal::Stale(detail)) if detail.contains("being deleted")
        ));
        assert!(matches!(
            verdict(Action::Noop, &mk_version("u1", "10"), Some(&going), &inst()),
            Err(Refusal::Stale(_))
        ));
        assert_eq!(
            verdict(
                Action::Delete,
                &mk_version("u1", "10"),
                Some(&going),
                &inst()
            ),
            Ok(())
        );
    }

    #[test]
    fn unchecked_reads_nothing_and_holds() {
        assert_eq!(
            verdict(Action::Update, &Expectation::Unchecked, None, &inst()),
            Ok(())
        );
    }

    #[test]
    fn owner_needs_both_labels() {
        let mut labels = BTreeMap::new();
        labels.insert(labels::INSTALLATION.to_string(), "inst".to_string());
        assert_eq!(owner(&labels), None);
        labels.insert(labels::MANAGED_BY.to_string(), "helm".to_string());
        assert_eq!(owner(&labels), None);
        labels.insert(labels::MANAGED_BY.to_string(), labels::MANAGER.to_string());
        assert_eq!(owner(&labels), Some("inst"));
    }
}

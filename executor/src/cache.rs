//! The executor's watch-fed view of its namespace: what Observe answers and
//! what the preconditions are checked against, without an API call.
//!
//! One kube watcher per kind (ConfigMaps, Secrets, Services, StatefulSets,
//! Ingresses, claims, and the namespace's ResourceQuotas) lists once, in
//! pages ([`PAGE_SIZE`]), then follows a watch from the list's
//! resourceVersion; a watch that ends or fails resumes (or relists) with
//! kube's backoff. Every object of those kinds in the namespace is kept,
//! ours or not (an object in the way of a create must be seen), reduced at
//! once to the facts an [`ObservedComponent`] and a precondition need:
//!
//! - ConfigMaps, Secrets, Ingresses, claims: watched as metadata only
//!   (`PartialObjectMetadata`; a Secret's data never leaves the API
//!   server). Kept: name, uid, resourceVersion, the two ownership labels,
//!   the spec hash and owner record annotations, a deletion mark, the other
//!   field managers and the fields they own (values of fields under
//!   `metadata` only). `managedFields` themselves are not kept.
//! - StatefulSets and Services: watched whole (their immutable fields, and
//!   a StatefulSet's replicas and rollout status, are not metadata), reduced
//!   on arrival to the same facts plus the immutable fields, the values of
//!   every field another manager owns, and (StatefulSets) the generation,
//!   spec replicas and status the health check reads. The object itself is
//!   dropped.
//! - ResourceQuotas: kept whole (a namespace has a handful).
//!
//! Facts the cache does not keep, read from the API server when needed:
//! the full `managedFields` of an object another manager wrote, for an
//! UPDATE that may have to take fields over ([`crate::precondition`]: one
//! metadata read), and pods (the health wait's own watch).
//!
//! **Never stale after our own write.** Every persisted write's response
//! (the object as written, with its new resourceVersion) is put into the
//! cache before the plan goes on ([`Cache::written`], [`Cache::deleted`]),
//! and an event older than what the cache holds is ignored: resourceVersions
//! of one object increase, and are compared as numbers (etcd revisions)
//! when both parse, else the event wins. So an Observe after a plan sees at
//! least what the plan wrote, even before the watch delivers it.
//!
//! **Why a stale cache cannot lead to a wrong write.** The cache may lag
//! another writer by the watch's latency (milliseconds). Every UPDATE,
//! DELETE and SCALE still carries its precondition to the API server, which
//! enforces it atomically (the expected resourceVersion, and for a DELETE
//! the uid too): a plan computed from a lagging view of an object is refused
//! by the dry-run wave (nothing written) or, without it, by that write. A
//! CREATE (a server-side apply) has no server-side "must not exist": an
//! object created by someone else between the cache's view and the apply
//! would be taken over. That window existed before the cache too (between
//! the precondition read and the apply); the cache widens it by the watch's
//! latency. (The API server refuses an apply that carries a uid when the
//! object is absent, so the uid cannot close it.)

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use k8s_openapi::api::{
    apps::v1::{StatefulSet, StatefulSetSpec},
    core::v1::{ResourceQuota, Service},
};
use k8sworker_core::labels;
use k8sworker_proto::v1::ObservedComponent;
use kube::{
    Api, Client,
    api::{DynamicObject, ObjectMeta, PartialObjectMeta},
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::sync::watch;

use crate::{
    kinds::{self, Kind},
    observe,
    precondition::Found,
};

/// Objects per page of a watcher's initial list.
pub const PAGE_SIZE: u32 = 500;

/// What the cache knows of one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The object as Observe reports it.
    pub observed: ObservedComponent,
    /// What a precondition compares (uid, resourceVersion, ownership).
    pub found: Found,
    /// A StatefulSet's generation, spec replicas and status, for the
    /// health check of a plan that wrote nothing; `None` for other kinds.
    pub statefulset: Option<StatefulSet>,
}

/// Size and state of the cache, for a gauge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Objects held, all kinds together (ResourceQuotas included).
    pub objects: usize,
    /// Whether every kind has finished its initial list.
    pub synced: bool,
}

#[derive(Debug, Default)]
struct Store {
    synced: bool,
    objects: HashMap<String, Arc<Entry>>,
    /// The list being received after an `Init`; swapped in at `InitDone`.
    building: Option<HashMap<String, Arc<Entry>>>,
    /// Uids this executor deleted; their late events are ignored.
    deleted: Vec<String>,
}

#[derive(Debug, Default)]
struct Quotas {
    synced: bool,
    /// `None`: the executor may not list ResourceQuotas (a Role from before
    /// the quota check); the check is then left to the API server.
    items: Option<BTreeMap<String, ResourceQuota>>,
    building: Option<BTreeMap<String, ResourceQuota>>,
}

#[derive(Debug)]
struct State {
    kinds: Mutex<BTreeMap<Kind, Store>>,
    quotas: Mutex<Quotas>,
    /// Bumped on every change of sync state.
    changed: watch::Sender<u64>,
}

/// The cache; clones share it. [`Cache::start`] spawns its watchers.
#[derive(Clone, Debug)]
pub struct Cache {
    state: Arc<State>,
}

/// The kinds the cache watches, besides ResourceQuotas.
pub const WATCHED: [Kind; 6] = [
    Kind::ConfigMap,
    Kind::Secret,
    Kind::Service,
    Kind::StatefulSet,
    Kind::Ingress,
    Kind::PersistentVolumeClaim,
];

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether an object at resourceVersion `incoming` may replace one held at
/// `held`: when either is not a number, yes (the newest event wins).
fn newer_or_equal(incoming: &str, held: &str) -> bool {
    match (incoming.parse::<u64>(), held.parse::<u64>()) {
        (Ok(incoming), Ok(held)) => incoming >= held,
        _ => true,
    }
}

impl Cache {
    /// An empty cache that nothing feeds (tests of the pure parts).
    pub fn empty() -> Cache {
        Cache {
            state: Arc::new(State {
                kinds: Mutex::new(WATCHED.into_iter().map(|k| (k, Store::default())).collect()),
                quotas: Mutex::new(Quotas::default()),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// A cache of `namespace`, fed by watchers spawned now over `client`
    /// (which counts and rate-limits their calls). The watchers run for as
    /// long as the process.
    pub fn start(client: Client, namespace: &str) -> Cache {
        let cache = Cache::empty();
        for kind in WATCHED {
            let cache = cache.clone();
            let (client, namespace) = (client.clone(), namespace.to_owned());
            tokio::spawn(async move {
                let config = watcher::Config::default().page_size(PAGE_SIZE);
                match kind {
                    Kind::StatefulSet => {
                        let api: Api<StatefulSet> = Api::namespaced(client, &namespace);
                        cache
                            .feed(kind, watcher(api, config), reduce_statefulset)
                            .await;
                    }
                    Kind::Service => {
                        let api: Api<Service> = Api::namespaced(client, &namespace);
                        cache.feed(kind, watcher(api, config), reduce_service).await;
                    }
                    _ => {
                        // Metadata only: `Api<PartialObjectMeta<_>>` asks
                        // for `PartialObjectMetadata`.
                        let api: Api<PartialObjectMeta<DynamicObject>> =
                            Api::namespaced_with(client, &namespace, &kinds::api_resource(kind));
                        let stream = watcher(api, config);
                        cache
                            .feed(
                                kind,
                                stream,
                                move |meta: &PartialObjectMeta<DynamicObject>| {
                                    reduce_meta(kind, &meta.metadata)
                                },
                            )
                            .await;
                    }
                }
            });
        }
        let quotas = cache.clone();
        let api: Api<ResourceQuota> = Api::namespaced(client, namespace);
        tokio::spawn(async move { quotas.feed_quotas(api).await });
        cache
    }

    async fn feed<K, S>(&self, kind: Kind, stream: S, reduce: impl Fn(&K) -> Entry)
    where
        K: Clone + std::fmt::Debug + Send + 'static,
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
    {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => self.apply_event(kind, event, &reduce),
                Err(error) => {
                    tracing::warn!(kind = kind.as_str(), %error, "watch failed; retrying");
                }
            }
        }
    }

    fn apply_event<K>(&self, kind: Kind, event: watcher::Event<K>, reduce: impl Fn(&K) -> Entry) {
        let mut kinds = lock(&self.state.kinds);
        let store = kinds.entry(kind).or_default();
        match event {
            watcher::Event::Init => store.building = Some(HashMap::new()),
            watcher::Event::InitApply(object) => {
                let entry = reduce(&object);
                store
                    .building
                    .get_or_insert_with(HashMap::new)
                    .insert(name(&entry), Arc::new(entry));
            }
            watcher::Event::InitDone => {
                let mut listed = store.building.take().unwrap_or_default();
                // What this executor wrote after the list was taken stays.
                for (name, held) in &store.objects {
                    let keep = match listed.get(name) {
                        Some(fresh) => !newer_or_equal(
                            &fresh.found.resource_version,
                            &held.found.resource_version,
                        ),
                        None => false,
                    };
                    if keep {
                        listed.insert(name.clone(), held.clone());
                    }
                }
                store.objects = listed;
                store.deleted.clear();
                let first = !store.synced;
                store.synced = true;
                drop(kinds);
                if first {
                    tracing::info!(kind = kind.as_str(), "cache synced");
                }
                self.state.changed.send_modify(|n| *n += 1);
            }
            watcher::Event::Apply(object) => {
                let entry = reduce(&object);
                if store.deleted.contains(&entry.found.uid) && !entry.found.deleting {
                    return;
                }
                insert_newer(&mut store.objects, entry);
            }
            watcher::Event::Delete(object) => {
                let entry = reduce(&object);
                store.deleted.retain(|uid| *uid != entry.found.uid);
                let name = name(&entry);
                if store
                    .objects
                    .get(&name)
                    .is_some_and(|held| held.found.uid == entry.found.uid)
                {
                    store.objects.remove(&name);
                }
            }
        }
    }

    async fn feed_quotas(&self, api: Api<ResourceQuota>) {
        let config = watcher::Config::default().page_size(PAGE_SIZE);
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            let mut quotas = lock(&self.state.quotas);
            match event {
                Ok(watcher::Event::Init) => quotas.building = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(quota)) => {
                    let name = quota.metadata.name.clone().unwrap_or_default();
                    quotas.building.get_or_insert_default().insert(name, quota);
                }
                Ok(watcher::Event::InitDone) => {
                    quotas.items = Some(quotas.building.take().unwrap_or_default());
                    quotas.synced = true;
                    drop(quotas);
                    self.state.changed.send_modify(|n| *n += 1);
                }
                Ok(watcher::Event::Apply(quota)) => {
                    let name = quota.metadata.name.clone().unwrap_or_default();
                    quotas.items.get_or_insert_default().insert(name, quota);
                }
                Ok(watcher::Event::Delete(quota)) => {
                    if let (Some(items), Some(name)) = (quotas.items.as_mut(), &quota.metadata.name)
                    {
                        items.remove(name);
                    }
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if status.code == 403 && !quotas.synced =>
                {
                    tracing::warn!(error = %status.message, "cannot list ResourceQuotas; the quota check is left to the API server");
                    quotas.items = None;
                    quotas.synced = true;
                    drop(quotas);
                    self.state.changed.send_modify(|n| *n += 1);
                    return;
                }
                Err(error) => tracing::warn!(%error, "ResourceQuota watch failed; retrying"),
            }
        }
    }

    /// Size and sync state, for a gauge.
    pub fn stats(&self) -> CacheStats {
        let kinds = lock(&self.state.kinds);
        let quotas = lock(&self.state.quotas);
        CacheStats {
            objects: kinds.values().map(|s| s.objects.len()).sum::<usize>()
                + quotas.items.as_ref().map_or(0, BTreeMap::len),
            synced: kinds.values().all(|s| s.synced) && quotas.synced,
        }
    }

    /// Waits until every kind has finished its initial list, at most
    /// `timeout`; false when it has not.
    pub async fn synced(&self, timeout: Duration) -> bool {
        let mut changed = self.state.changed.subscribe();
        let wait = async {
            loop {
                if self.stats().synced {
                    return;
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && self.stats().synced
    }

    /// The object of `kind` named `name`, when the cache holds it.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Arc<Entry>> {
        lock(&self.state.kinds)
            .get(&kind)
            .and_then(|store| store.objects.get(name).cloned())
    }

    /// Every object of the managed kinds labelled as `installation`'s
    /// (the selector [`labels::selector`] names).
    pub fn installation(&self, installation: &str) -> Vec<Arc<Entry>> {
        let kinds = lock(&self.state.kinds);
        Kind::MANAGED
            .iter()
            .filter_map(|kind| kinds.get(kind))
            .flat_map(|store| store.objects.values())
            .filter(|entry| {
                let labels = &entry.found.labels;
                labels.get(labels::MANAGED_BY).map(String::as_str) == Some(labels::MANAGER)
                    && labels.get(labels::INSTALLATION).map(String::as_str) == Some(installation)
            })
            .cloned()
            .collect()
    }

    /// The namespace's ResourceQuotas; `None` when the executor may not
    /// list them.
    pub fn quotas(&self) -> Option<Vec<ResourceQuota>> {
        lock(&self.state.quotas)
            .items
            .as_ref()
            .map(|items| items.values().cloned().collect())
    }

    /// Records an object as this executor's write returned it (the
    /// response of an apply, or of a delete that left it terminating).
    pub(crate) fn written(&self, kind: Kind, object: &DynamicObject) {
        let entry = match kind {
            Kind::StatefulSet => serde_json::to_value(object)
                .ok()
                .and_then(|v| serde_json::from_value::<StatefulSet>(v).ok())
                .map(|sts| reduce_statefulset(&sts)),
            Kind::Service => serde_json::to_value(object)
                .ok()
                .and_then(|v| serde_json::from_value::<Service>(v).ok())
                .map(|service| reduce_service(&service)),
            _ => Some(reduce_meta(kind, &object.metadata)),
        };
        let Some(entry) = entry else { return };
        let mut kinds = lock(&self.state.kinds);
        let store = kinds.entry(kind).or_default();
        store.deleted.retain(|uid| *uid != entry.found.uid);
        insert_newer(&mut store.objects, entry);
    }

    /// Records that this executor deleted `name` (of uid `uid`) and it is
    /// gone: later events of that uid (older than the delete) are ignored.
    pub(crate) fn deleted(&self, kind: Kind, name: &str, uid: &str) {
        let mut kinds = lock(&self.state.kinds);
        let store = kinds.entry(kind).or_default();
        if store
            .objects
            .get(name)
            .is_some_and(|held| held.found.uid == uid)
        {
            store.objects.remove(name);
        }
        store.deleted.push(uid.to_owned());
    }

    /// Records a StatefulSet's new scale: its resourceVersion (the scale
    /// subresource shares the object's) and spec replicas.
    pub(crate) fn scaled(&self, name: &str, resource_version: &str, replicas: i32) {
        let mut kinds = lock(&self.state.kinds);
        let store = kinds.entry(Kind::StatefulSet).or_default();
        let Some(held) = store.objects.get(name) else {
            return;
        };
        if !newer_or_equal(resource_version, &held.found.resource_version) {
            return;
        }
        let mut entry = (**held).clone();
        entry.found.resource_version = resource_version.to_owned();
        entry.observed.resource_version = resource_version.to_owned();
        entry.observed.replicas = Some(replicas);
        if let Some(spec) = entry.statefulset.as_mut().and_then(|s| s.spec.as_mut()) {
            spec.replicas = Some(replicas);
        }
        store.objects.insert(name.to_owned(), Arc::new(entry));
    }
}

fn name(entry: &Entry) -> String {
    entry
        .observed
        .r#ref
        .as_ref()
        .map(|r| r.name.clone())
        .unwrap_or_default()
}

fn insert_newer(objects: &mut HashMap<String, Arc<Entry>>, entry: Entry) {
    let name = name(&entry);
    if let Some(held) = objects.get(&name)
        && held.found.uid == entry.found.uid
        && !newer_or_equal(&entry.found.resource_version, &held.found.resource_version)
    {
        return;
    }
    objects.insert(name, Arc::new(entry));
}

/// Only the labels ownership is decided by; the rest are not kept.
fn kept_labels(metadata: &ObjectMeta) -> ObjectMeta {
    let labels = metadata.labels.as_ref().map(|labels| {
        labels
            .iter()
            .filter(|(key, _)| {
                key.as_str() == labels::MANAGED_BY || key.as_str() == labels::INSTALLATION
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    });
    ObjectMeta {
        labels,
        ..metadata.clone()
    }
}

fn reduce_meta(kind: Kind, metadata: &ObjectMeta) -> Entry {
    Entry {
        observed: observe::from_meta(kind, metadata),
        found: Found::from_object_meta(&kept_labels(metadata)),
        statefulset: None,
    }
}

fn reduce_service(service: &Service) -> Entry {
    Entry {
        observed: observe::from_service(service),
        found: Found::from_object_meta(&kept_labels(&service.metadata)),
        statefulset: None,
    }
}

fn reduce_statefulset(statefulset: &StatefulSet) -> Entry {
    let spec = statefulset.spec.as_ref();
    let health = StatefulSet {
        metadata: ObjectMeta {
            name: statefulset.metadata.name.clone(),
            generation: statefulset.metadata.generation,
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: spec.and_then(|s| s.replicas),
            ..Default::default()
        }),
        status: statefulset.status.clone(),
    };
    Entry {
        observed: observe::from_statefulset(statefulset),
        found: Found::from_object_meta(&kept_labels(&statefulset.metadata)),
        statefulset: Some(health),
    }
}

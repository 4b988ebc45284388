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
//! - Pods labelled `k8sworker.io/installation`: reduced to name, labels,
//!   owner, deletion mark, and their status's phase, conditions and
//!   container states, so that a plan that writes nothing is answered
//!   healthy (or failing) without a watch of its own.
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
    core::v1::{Pod, PodStatus, ResourceQuota, Service},
};
use k8sworker_core::labels;
use k8sworker_proto::v1::ObservedComponent;
use kube::{
    Api,
    api::{DynamicObject, ObjectMeta, PartialObjectMeta},
    runtime::{WatchStreamExt as _, watcher},
};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::{
    calls::ApiCalls,
    client::KubeClients,
    kinds::{self, Kind},
    reduce::{self, Found},
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
    /// The API server's refusal of the last initial list (403: the Role
    /// does not allow it), until a list succeeds.
    refused: Option<Box<kube::core::Status>>,
    objects: HashMap<String, Arc<Entry>>,
    /// The list being received after an `Init`; swapped in at `InitDone`.
    building: Option<HashMap<String, Arc<Entry>>>,
    /// Uids this executor deleted; their late events are ignored.
    deleted: Vec<String>,
}

/// Objects kept whole (or reduced to a smaller object of their type).
#[derive(Debug)]
struct Kept<K> {
    synced: bool,
    /// `None`: the executor may not list them (a Role from before the
    /// quota check, for ResourceQuotas); what needs them does without.
    items: Option<BTreeMap<String, K>>,
    building: Option<BTreeMap<String, K>>,
}

impl<K> Default for Kept<K> {
    fn default() -> Self {
        Kept {
            synced: false,
            items: None,
            building: None,
        }
    }
}

#[derive(Debug)]
struct State {
    kinds: Mutex<BTreeMap<Kind, Store>>,
    quotas: Mutex<Kept<ResourceQuota>>,
    /// The installations' pods (label `k8sworker.io/installation`), reduced
    /// to what the health check reads.
    pods: Mutex<Kept<Pod>>,
    /// The calls the watchers made.
    calls: ApiCalls,
    /// Bumped on every change of sync state.
    changed: watch::Sender<u64>,
}

/// The cache; clones share it. [`Cache::start`] spawns its watchers.
#[derive(Clone, Debug)]
pub struct Cache {
    state: Arc<State>,
}

/// The kinds the cache watches as objects of an installation (besides
/// ResourceQuotas and pods): every kind an executor may touch.
pub const WATCHED: [Kind; 6] = Kind::ALL;

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
                quotas: Mutex::new(Kept::default()),
                pods: Mutex::new(Kept::default()),
                calls: ApiCalls::default(),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// A cache of `namespace`, fed by watchers spawned now over the
    /// clients `clients` hands out (counted, rate-limited). The watchers
    /// run for as long as the process.
    pub fn start(clients: &KubeClients, namespace: &str) -> Cache {
        let cache = Cache::empty();
        let client = clients.for_operation(&cache.state.calls);
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
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), namespace);
        tokio::spawn(async move {
            let config = watcher::Config::default().page_size(PAGE_SIZE);
            quotas
                .feed_kept(api, config, |state| &state.quotas, |quota| quota)
                .await
        });
        let pods = cache.clone();
        let api: Api<Pod> = Api::namespaced(client, namespace);
        tokio::spawn(async move {
            let config = watcher::Config::default()
                .page_size(PAGE_SIZE)
                .labels(labels::INSTALLATION);
            pods.feed_kept(api, config, |state| &state.pods, reduce_pod)
                .await
        });
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
                    if let watcher::Error::InitialListFailed(kube::Error::Api(status)) = error
                        && status.code == 403
                    {
                        lock(&self.state.kinds).entry(kind).or_default().refused = Some(status);
                        self.state.changed.send_modify(|n| *n += 1);
                    }
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
                store.refused = None;
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

    async fn feed_kept<K>(
        &self,
        api: Api<K>,
        config: watcher::Config,
        slot: fn(&State) -> &Mutex<Kept<K>>,
        reduce: fn(K) -> K,
    ) where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + std::fmt::Debug
            + DeserializeOwned
            + Send
            + 'static,
    {
        let kind = K::kind(&()).into_owned();
        let mut stream = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = stream.next().await {
            let mut kept = lock(slot(&self.state));
            let name = |object: &K| object.meta().name.clone().unwrap_or_default();
            match event {
                Ok(watcher::Event::Init) => kept.building = Some(BTreeMap::new()),
                Ok(watcher::Event::InitApply(object)) => {
                    let object = reduce(object);
                    kept.building
                        .get_or_insert_default()
                        .insert(name(&object), object);
                }
                Ok(watcher::Event::InitDone) => {
                    kept.items = Some(kept.building.take().unwrap_or_default());
                    kept.synced = true;
                    drop(kept);
                    self.state.changed.send_modify(|n| *n += 1);
                }
                Ok(watcher::Event::Apply(object)) => {
                    let object = reduce(object);
                    kept.items
                        .get_or_insert_default()
                        .insert(name(&object), object);
                }
                Ok(watcher::Event::Delete(object)) => {
                    if let Some(items) = kept.items.as_mut() {
                        items.remove(&name(&object));
                    }
                }
                Err(watcher::Error::InitialListFailed(kube::Error::Api(status)))
                    if status.code == 403 && !kept.synced =>
                {
                    tracing::warn!(%kind, error = %status.message, "cannot list them; doing without");
                    kept.items = None;
                    kept.synced = true;
                    drop(kept);
                    self.state.changed.send_modify(|n| *n += 1);
                    return;
                }
                Err(error) => tracing::warn!(%kind, %error, "watch failed; retrying"),
            }
        }
    }

    /// Size and sync state, for a gauge.
    pub fn stats(&self) -> CacheStats {
        let kinds = lock(&self.state.kinds);
        let quotas = lock(&self.state.quotas);
        let pods = lock(&self.state.pods);
        CacheStats {
            objects: kinds.values().map(|s| s.objects.len()).sum::<usize>()
                + quotas.items.as_ref().map_or(0, BTreeMap::len)
                + pods.items.as_ref().map_or(0, BTreeMap::len),
            synced: kinds.values().all(|s| s.synced) && quotas.synced && pods.synced,
        }
    }

    /// Whether every watcher has listed and then started its watch: from
    /// then on the cache makes no call until a watch ends (the API server
    /// closes one after a few minutes; it resumes from where it was).
    pub fn watching(&self) -> bool {
        self.stats().synced
            && self.state.calls.count(|call| call.verb == "watch") >= WATCHED.len() as u64 + 2
    }

    /// The pods of the installations whose labels include every
    /// `key=value` pair of `selector` (comma-separated, as
    /// [`crate::health`] builds it), reduced; `None` before the first list
    /// or when the executor may not list pods.
    pub fn pods(&self, selector: &str) -> Option<Vec<Pod>> {
        let wanted: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .collect();
        let pods = lock(&self.state.pods);
        if !pods.synced {
            return None;
        }
        Some(
            pods.items
                .as_ref()?
                .values()
                .filter(|pod| {
                    let labels = pod.metadata.labels.as_ref();
                    wanted.iter().all(|(key, value)| {
                        labels.and_then(|l| l.get(*key)).map(String::as_str) == Some(*value)
                    })
                })
                .cloned()
                .collect(),
        )
    }

    /// A kind whose initial list the API server refused (403), with its
    /// answer; the watcher keeps retrying.
    pub fn refused(&self) -> Option<(Kind, kube::core::Status)> {
        lock(&self.state.kinds)
            .iter()
            .find_map(|(kind, store)| Some((*kind, (**store.refused.as_ref()?).clone())))
    }

    /// Waits until every kind has finished its initial list, at most
    /// `timeout`; false when it has not, or at once when the API server
    /// refused a list ([`Cache::refused`]).
    pub async fn synced(&self, timeout: Duration) -> bool {
        let mut changed = self.state.changed.subscribe();
        let wait = async {
            loop {
                if self.stats().synced || self.refused().is_some() {
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
        observed: reduce::from_meta(kind, metadata),
        found: Found::from_object_meta(&kept_labels(metadata)),
        statefulset: None,
    }
}

fn reduce_service(service: &Service) -> Entry {
    Entry {
        observed: reduce::from_service(service),
        found: Found::from_object_meta(&kept_labels(&service.metadata)),
        statefulset: None,
    }
}

/// A pod as the health check reads it: name, labels, owner, deletion, and
/// its status's phase, conditions and container states; the spec and the
/// rest are dropped.
fn reduce_pod(pod: Pod) -> Pod {
    let status = pod.status.map(|status| PodStatus {
        phase: status.phase,
        conditions: status.conditions,
        container_statuses: status.container_statuses,
        init_container_statuses: status.init_container_statuses,
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: pod.metadata.name,
            namespace: pod.metadata.namespace,
            uid: pod.metadata.uid,
            resource_version: pod.metadata.resource_version,
            labels: pod.metadata.labels,
            owner_references: pod.metadata.owner_references,
            deletion_timestamp: pod.metadata.deletion_timestamp,
            ..Default::default()
        },
        spec: None,
        status,
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
        observed: reduce::from_statefulset(statefulset),
        found: Found::from_object_meta(&kept_labels(&statefulset.metadata)),
        statefulset: Some(health),
    }
}

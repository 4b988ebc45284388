//! The Kubernetes objects an installation consists of, as typed values:
//! [`Object`] is one of the managed [`Kind`]s, [`Component`] an object with
//! its spec hash, [`ComponentId`] its kind and name within a namespace.

use std::fmt;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub use crate::kind::Kind;

/// One object of an installation, identified within its namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ComponentId {
    /// The object's kind.
    pub kind: Kind,
    /// The object's `metadata.name`.
    pub name: String,
}

impl ComponentId {
    /// The id of the object of `kind` named `name`.
    pub fn new(kind: Kind, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// A typed Kubernetes object of one of the [`Kind`]s. Only the StatefulSet,
/// several times larger than the rest, is boxed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Object {
    /// A `v1` ConfigMap.
    ConfigMap(ConfigMap),
    /// A `v1` Secret.
    Secret(Secret),
    /// A `v1` Service.
    Service(Service),
    /// An `apps/v1` StatefulSet.
    StatefulSet(Box<StatefulSet>),
    /// A `networking.k8s.io/v1` Ingress.
    Ingress(Ingress),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::Service(_) => Kind::Service,
            Object::StatefulSet(_) => Kind::StatefulSet,
            Object::Ingress(_) => Kind::Ingress,
        }
    }

    /// The object's `metadata`.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::ConfigMap(o) => &o.metadata,
            Object::Secret(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
        }
    }

    /// The object's `metadata`, to change.
    pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::ConfigMap(o) => &mut o.metadata,
            Object::Secret(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::StatefulSet(o) => &mut o.metadata,
            Object::Ingress(o) => &mut o.metadata,
        }
    }

    /// The object's `metadata.name`; empty when unset.
    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }

    /// The object's kind and name.
    pub fn id(&self) -> ComponentId {
        ComponentId::new(self.kind(), self.name())
    }

    /// The object as Kubernetes JSON, with `apiVersion` and `kind`.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Secret(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::StatefulSet(o) => serde_json::to_value(o),
            Object::Ingress(o) => serde_json::to_value(o),
        };
        value.expect("Kubernetes objects always serialize")
    }

    /// The object as Kubernetes JSON for a preview (a rendering or a plan
    /// shown to a person, or logged): a Secret's `data` and `stringData`
    /// values are replaced by [`masked`] (their size only), and so is its
    /// spec-hash annotation (a hash over the values, with everything else
    /// known from the preview, would let candidates be tried), so a preview
    /// never carries a secret, plain, base64 or hashed. A StatefulSet's pod
    /// template carries the config-hash annotation, a hash over the spec
    /// hashes of the generated ConfigMaps and Secrets, and its own spec hash
    /// covers it: both are masked too when its pods use a Secret
    /// ([`Object::hashes_secrets`]). Every
    /// other kind is as [`Object::to_json`]. The result is not applicable: a
    /// masked value is not base64.
    pub fn to_preview_json(&self) -> serde_json::Value {
        let mut value = self.to_json();
        if self.hashes_secrets() {
            let hashes = [
                ("/metadata/annotations", crate::labels::SPEC_HASH),
                (
                    "/spec/template/metadata/annotations",
                    crate::labels::CONFIG_HASH,
                ),
            ];
            for (pointer, annotation) in hashes {
                if let Some(hash) = value
                    .pointer_mut(pointer)
                    .and_then(|annotations| annotations.get_mut(annotation))
                {
                    *hash = serde_json::Value::String(MASKED.into());
                }
            }
        }
        if let Object::Secret(secret) = self {
            let sizes = secret
                .data
                .iter()
                .flatten()
                .map(|(key, bytes)| ("data", key, bytes.0.len()))
                .chain(
                    secret
                        .string_data
                        .iter()
                        .flatten()
                        .map(|(key, text)| ("stringData", key, text.len())),
                );
            for (field, key, size) in sizes {
                value[field][key.as_str()] = serde_json::Value::String(masked(size));
            }
        }
        value
    }

    /// Whether the object's hashes (its spec hash, a pod template's config
    /// hash) may be computed over secret values, so that a preview masks
    /// them ([`Object::to_preview_json`]): a Secret's, over its data, and a
    /// StatefulSet's whose pods take anything from a Secret the render
    /// generates (a variable, an `envFrom`, a volume or projected volume
    /// source), since the config hash covers the generated Secrets. Knowing the rest of the preview,
    /// such a hash lets a guess of a secret value be tested. A StatefulSet
    /// that uses no Secret keeps its hashes, so its preview still compares
    /// with what a cluster holds.
    pub fn hashes_secrets(&self) -> bool {
        match self {
            Object::Secret(_) => true,
            Object::StatefulSet(set) => {
                // The Secrets the render generates: `vantiq-<name>-secret-<n>`
                // (`crate::names::secret`); an existing Secret is not hashed.
                let prefix = format!(
                    "vantiq-{}-secret-",
                    set.metadata.name.as_deref().unwrap_or_default()
                );
                let generated = |name: &str| {
                    name.strip_prefix(&prefix)
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                };
                set.spec
                    .as_ref()
                    .and_then(|spec| spec.template.spec.as_ref())
                    .is_some_and(|pod| {
                        let env = pod
                            .containers
                            .iter()
                            .chain(pod.init_containers.iter().flatten())
                            .any(|container| {
                                container.env.iter().flatten().any(|var| {
                                    var.value_from
                                        .as_ref()
                                        .and_then(|from| from.secret_key_ref.as_ref())
                                        .is_some_and(|key| generated(&key.name))
                                }) || container
                                    .env_from
                                    .iter()
                                    .flatten()
                                    .filter_map(|from| from.secret_ref.as_ref())
                                    .any(|secret| generated(&secret.name))
                            });
                        let volumes = pod.volumes.iter().flatten().any(|volume| {
                            volume
                                .secret
                                .as_ref()
                                .and_then(|secret| secret.secret_name.as_deref())
                                .is_some_and(generated)
                                || volume.projected.as_ref().is_some_and(|projected| {
                                    projected
                                        .sources
                                        .iter()
                                        .flatten()
                                        .filter_map(|source| source.secret.as_ref())
                                        .any(|secret| generated(&secret.name))
                                })
                        });
                        env || volumes
                    })
            }
            _ => false,
        }
    }

    /// The object as Kubernetes JSON bytes.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1024);
        self.write_json(&mut bytes);
        bytes
    }

    /// Writes the object as Kubernetes JSON.
    pub fn write_json(&self, writer: impl std::io::Write) {
        let written = match self {
            Object::ConfigMap(o) => serde_json::to_writer(writer, o),
            Object::Secret(o) => serde_json::to_writer(writer, o),
            Object::Service(o) => serde_json::to_writer(writer, o),
            Object::StatefulSet(o) => serde_json::to_writer(writer, o),
            Object::Ingress(o) => serde_json::to_writer(writer, o),
        };
        written.expect("Kubernetes objects always serialize to an infallible writer");
    }

    /// Reads an object of `kind` from Kubernetes JSON.
    ///
    /// # Errors
    /// The JSON error when `json` is not an object of `kind`, and always for
    /// [`Kind::PersistentVolumeClaim`], which is never a component.
    pub fn from_json(kind: Kind, json: &[u8]) -> Result<Object, serde_json::Error> {
        Ok(match kind {
            Kind::ConfigMap => Object::ConfigMap(serde_json::from_slice(json)?),
            Kind::Secret => Object::Secret(serde_json::from_slice(json)?),
            Kind::Service => Object::Service(serde_json::from_slice(json)?),
            Kind::StatefulSet => Object::StatefulSet(Box::new(serde_json::from_slice(json)?)),
            Kind::Ingress => Object::Ingress(serde_json::from_slice(json)?),
            Kind::PersistentVolumeClaim => {
                return Err(serde::de::Error::custom(
                    "a PersistentVolumeClaim is never a component of an installation",
                ));
            }
        })
    }
}

/// What a preview shows instead of a hash over secret values (a Secret's or
/// a StatefulSet's spec hash, a pod template's config hash).
pub const MASKED: &str = "<masked>";

/// What a preview shows instead of a secret value of `size` bytes:
/// `<masked: N bytes>`. The size only, no hash: a hash of a short value (a
/// password) can be reversed by trying candidates.
pub fn masked(size: usize) -> String {
    format!("<masked: {size} bytes>")
}

/// A rendered object with its spec hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    /// The object as rendered, its spec-hash annotation included.
    pub object: Object,
    /// SHA-256 (hex) of the object as rendered, before the hash annotation was added.
    pub spec_hash: String,
}

impl Component {
    /// The object's kind and name.
    pub fn id(&self) -> ComponentId {
        self.object.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn a_preview_masks_secret_values_with_their_size() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("s".into()),
                annotations: Some(
                    [(crate::labels::SPEC_HASH.to_string(), "ab12".to_string())].into(),
                ),
                ..Default::default()
            },
            data: Some([("token".to_string(), ByteString(b"hunter22".to_vec()))].into()),
            string_data: Some([("plain".to_string(), "p4ss".to_string())].into()),
            ..Default::default()
        };
        let preview = Object::Secret(secret).to_preview_json();
        assert_eq!(preview["data"]["token"], "<masked: 8 bytes>");
        assert_eq!(preview["stringData"]["plain"], "<masked: 4 bytes>");
        assert_eq!(preview["metadata"]["name"], "s");
        assert_eq!(
            preview["metadata"]["annotations"][crate::labels::SPEC_HASH],
            MASKED
        );
        let text = preview.to_string();
        assert!(!text.contains("hunter22") && !text.contains("aHVudGVyMjI="));
        assert!(!text.contains("p4ss"));
    }

    #[test]
    fn a_preview_masks_the_hashes_a_statefulset_carries_of_the_secrets() {
        use k8s_openapi::api::apps::v1::StatefulSetSpec;
        use k8s_openapi::api::core::v1::{
            Container, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec, SecretKeySelector,
        };
        let annotations = |key: &str| Some([(key.to_string(), "ab12".to_string())].into());
        let pod = |secret: bool| PodSpec {
            containers: vec![Container {
                name: "app".into(),
                env: Some(vec![EnvVar {
                    name: "PASSWORD".into(),
                    value_from: secret.then(|| EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "vantiq-app-secret-0".into(),
                            key: "PASSWORD".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    }),
                    value: (!secret).then(|| "plain".into()),
                }]),
                ..Default::default()
            }],
            ..Default::default()
        };
        let statefulset = |secret: bool| {
            Object::StatefulSet(Box::new(StatefulSet {
                metadata: ObjectMeta {
                    name: Some("app".into()),
                    annotations: annotations(crate::labels::SPEC_HASH),
                    ..Default::default()
                },
                spec: Some(StatefulSetSpec {
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            annotations: annotations(crate::labels::CONFIG_HASH),
                            ..Default::default()
                        }),
                        spec: Some(pod(secret)),
                    },
                    ..Default::default()
                }),
                ..Default::default()
            }))
        };
        // Its pods use no Secret: as rendered, comparable with a cluster's.
        let plain = statefulset(false);
        assert_eq!(plain.to_preview_json(), plain.to_json());
        let preview = statefulset(true).to_preview_json();
        assert_eq!(
            preview["metadata"]["annotations"][crate::labels::SPEC_HASH],
            MASKED
        );
        assert_eq!(
            preview["spec"]["template"]["metadata"]["annotations"][crate::labels::CONFIG_HASH],
            MASKED
        );
        assert!(!preview.to_string().contains("ab12"), "{preview}");
        assert_eq!(preview["metadata"]["name"], "app");
    }

    #[test]
    fn a_preview_of_another_kind_is_its_json() {
        let config_map = Object::ConfigMap(ConfigMap {
            data: Some([("k".to_string(), "v".to_string())].into()),
            ..Default::default()
        });
        assert_eq!(config_map.to_preview_json(), config_map.to_json());
    }
}

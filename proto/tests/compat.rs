//! Compatibility of `k8sworker.v1` across releases (`docs/upgrade.md`).
//!
//! Each release keeps, under `golden/<release>/`:
//! - `<Message>.bin`: realistic messages of every type that crosses a hop,
//!   as that release encoded them, each length-delimited (prost's
//!   `encode_length_delimited`). The values are in `compat/<release>.rs`.
//! - `descriptor.txt`: every message field (number, name, label, type), enum
//!   value and RPC of the package, one per line.
//!
//! The current code must decode every release's bytes back to exactly the
//! values that release encoded, and every line of every release's
//! `descriptor.txt` must still describe the current `.proto` files: fields and
//! values only ever added, nothing renumbered, renamed, retyped or removed.
//!
//! A release writes its files with
//! `K8SWORKER_WRITE_GOLDEN=1 cargo test -p k8sworker-proto --test compat`,
//! for the crate's version, after adding `compat/v<version>.rs` to
//! [`RELEASES`]. Files already there are never rewritten: a release's bytes
//! are history.

#[path = "compat/v0_1_0.rs"]
mod v0_1_0;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Debug,
    path::{Path, PathBuf},
};

use prost::Message;
use prost_types::{
    FileDescriptorSet,
    field_descriptor_proto::{Label, Type},
};

/// The samples of one release, one entry per message type.
type Release = fn() -> Vec<Box<dyn Samples>>;

/// Every release whose bytes are kept, oldest first, with its samples.
const RELEASES: &[(&str, Release)] = &[("v0.1.0", v0_1_0::all)];

/// The messages of one type a release encoded.
pub trait Samples {
    /// The file the messages are kept in, e.g. `ExecuteRequest.bin`.
    fn file(&self) -> String;
    /// The messages, each length-delimited.
    fn encode(&self) -> Vec<u8>;
    /// Decodes `bytes` with the current code and asserts they hold exactly
    /// these messages; `what` names the file in the failure.
    fn check(&self, bytes: &[u8], what: &str);
}

struct Of<M> {
    name: &'static str,
    messages: Vec<M>,
}

/// The samples of message type `name`.
pub fn samples<M>(name: &'static str, messages: Vec<M>) -> Box<dyn Samples>
where
    M: Message + Default + PartialEq + Debug + 'static,
{
    Box::new(Of { name, messages })
}

impl<M> Samples for Of<M>
where
    M: Message + Default + PartialEq + Debug,
{
    fn file(&self) -> String {
        format!("{}.bin", self.name)
    }

    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        for message in &self.messages {
            message
                .encode_length_delimited(&mut bytes)
                .expect("a Vec grows as needed");
        }
        bytes
    }

    fn check(&self, mut bytes: &[u8], what: &str) {
        let mut decoded = Vec::new();
        while !bytes.is_empty() {
            let message = M::decode_length_delimited(&mut bytes).unwrap_or_else(|error| {
                panic!(
                    "{what}: message {} no longer decodes: {error}",
                    decoded.len()
                )
            });
            decoded.push(message);
        }
        assert_eq!(
            decoded.len(),
            self.messages.len(),
            "{what}: number of messages"
        );
        for (index, (decoded, expected)) in decoded.iter().zip(&self.messages).enumerate() {
            pretty_assertions::assert_eq!(
                decoded,
                expected,
                "{what}: message {index} decodes to other values than the release encoded"
            );
        }
    }
}

fn golden_dir(release: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(release)
}

fn writing() -> bool {
    std::env::var("K8SWORKER_WRITE_GOLDEN").is_ok_and(|value| value == "1")
}

/// Under `K8SWORKER_WRITE_GOLDEN=1`: writes the current release's files that
/// are missing, and refuses to change one that is there.
fn write_current_release() {
    let current = format!("v{}", env!("CARGO_PKG_VERSION"));
    let Some((_, samples)) = RELEASES.iter().find(|(release, _)| *release == current) else {
        panic!(
            "K8SWORKER_WRITE_GOLDEN=1 writes release {current}: add compat/{}.rs to RELEASES first",
            current.replace('.', "_")
        );
    };
    let dir = golden_dir(&current);
    std::fs::create_dir_all(&dir).unwrap();
    for sample in samples() {
        let path = dir.join(sample.file());
        match std::fs::read(&path) {
            // Maps encode in no fixed order, so the content is compared, not the bytes.
            Ok(bytes) => sample.check(&bytes, &format!("{} (kept as it is)", path.display())),
            Err(_) => std::fs::write(&path, sample.encode()).unwrap(),
        }
    }
    let path = dir.join("descriptor.txt");
    let described = describe(&current_descriptors()).join("\n") + "\n";
    match std::fs::read_to_string(&path) {
        Ok(kept) => assert_eq!(kept, described, "{} is kept as it is", path.display()),
        Err(_) => std::fs::write(&path, described).unwrap(),
    }
}

#[test]
fn every_release_decodes_with_the_current_code() {
    if writing() {
        write_current_release();
    }
    for (release, samples) in RELEASES {
        let dir = golden_dir(release);
        for sample in samples() {
            let path = dir.join(sample.file());
            let bytes = std::fs::read(&path).unwrap_or_else(|error| {
                panic!(
                    "{}: {error}; a release writes its files with K8SWORKER_WRITE_GOLDEN=1",
                    path.display()
                )
            });
            sample.check(&bytes, &format!("{release}/{}", sample.file()));
        }
    }
}

#[test]
fn every_kept_file_is_checked() {
    for (release, samples) in RELEASES {
        let mut expected: BTreeSet<String> = samples().iter().map(|s| s.file()).collect();
        expected.insert("descriptor.txt".into());
        let Ok(entries) = std::fs::read_dir(golden_dir(release)) else {
            assert!(writing(), "golden/{release} is missing");
            continue;
        };
        let kept: BTreeSet<String> = entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if !writing() {
            assert_eq!(
                kept, expected,
                "golden/{release}: files kept and files checked"
            );
        }
    }
    let releases: Vec<&str> = RELEASES.iter().map(|(release, _)| *release).collect();
    let mut kept: Vec<String> = std::fs::read_dir(golden_dir(""))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, releases, "every release directory is in RELEASES");
}

#[test]
fn no_released_field_value_or_rpc_changed() {
    let current = describe(&current_descriptors());
    let by_key: BTreeMap<&str, &str> = current
        .iter()
        .map(|line| (key(line), line.as_str()))
        .collect();
    let mut broken = Vec::new();
    for (release, _) in RELEASES {
        let path = golden_dir(release).join("descriptor.txt");
        let Ok(kept) = std::fs::read_to_string(&path) else {
            assert!(writing(), "{} is missing", path.display());
            continue;
        };
        for line in kept.lines().filter(|line| !line.is_empty()) {
            match by_key.get(key(line)) {
                Some(now) if *now == line => {}
                Some(now) => broken.push(format!("{release}: `{line}` is now `{now}`")),
                None => broken.push(format!("{release}: `{line}` is gone")),
            }
        }
    }
    assert!(
        broken.is_empty(),
        "k8sworker.v1 changed incompatibly (docs/upgrade.md):\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_description_names_what_a_change_would_break() {
    let described = describe(&current_descriptors());
    for line in [
        "field k8sworker.v1.ExecuteRequest 1 workitem_id: string",
        "field k8sworker.v1.ConfigEntry 1 image: k8sworker.v1.ImageEntry oneof entry",
        "field k8sworker.v1.ObserveRequest 3 names: repeated k8sworker.v1.ComponentRef",
        "field k8sworker.v1.FetchLogsRequest 3 pod_name: optional string",
        "field k8sworker.v1.ProbeEntry.HeadersEntry 2 value: string",
        "field k8sworker.v1.Step 1 action: k8sworker.v1.Action",
        "value k8sworker.v1.Action 5 ACTION_NOOP",
        "field k8sworker.v1.ExecuteRequest 7 tenant: k8sworker.v1.Tenant",
        "field k8sworker.v1.Plan 8 tenant: k8sworker.v1.Tenant",
        "field k8sworker.v1.ObservedComponent 9 owner_record: optional string",
        "field k8sworker.v1.Tenant 1 vantiq_namespace: string",
        "value k8sworker.v1.ErrorCode 14 ERROR_CODE_TENANT_NOT_ALLOWED",
        "rpc k8sworker.v1.Executor.Apply(k8sworker.v1.ApplyRequest) returns (stream k8sworker.v1.ApplyEvent)",
    ] {
        assert!(
            described.iter().any(|l| l == line),
            "{line} not in\n{}",
            described.join("\n")
        );
    }
    // A line is found again by message (or enum) and number; a rename, a
    // new label or type under that number is a change, not a new line.
    assert_eq!(
        key("field k8sworker.v1.Step 1 action: k8sworker.v1.Action"),
        "field k8sworker.v1.Step 1"
    );
    assert_eq!(
        key("value k8sworker.v1.Action 5 ACTION_NOOP"),
        "value k8sworker.v1.Action 5"
    );
    assert_eq!(
        key(
            "rpc k8sworker.v1.Executor.Apply(k8sworker.v1.ApplyRequest) returns (stream k8sworker.v1.ApplyEvent)"
        ),
        "rpc k8sworker.v1.Executor.Apply"
    );
    let ordered: Vec<&str> = described
        .iter()
        .filter(|line| line.starts_with("field k8sworker.v1.ConfigEntry "))
        .map(|line| line.split(' ').nth(2).unwrap())
        .collect();
    assert_eq!(
        ordered,
        [
            "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"
        ]
    );
}

#[test]
fn every_release_sets_every_field_it_had_somewhere() {
    for (release, samples) in RELEASES {
        let dir = golden_dir(release);
        let Ok(described) = std::fs::read_to_string(dir.join("descriptor.txt")) else {
            assert!(writing(), "golden/{release}/descriptor.txt is missing");
            continue;
        };
        let schema = Schema::parse(&described);
        let mut seen = BTreeSet::new();
        let mut roots = Vec::new();
        for sample in samples() {
            let message = format!("k8sworker.v1.{}", sample.file().trim_end_matches(".bin"));
            let Ok(bytes) = std::fs::read(dir.join(sample.file())) else {
                assert!(writing(), "golden/{release}/{} is missing", sample.file());
                continue;
            };
            let mut bytes = bytes.as_slice();
            while !bytes.is_empty() {
                let length = varint(&mut bytes) as usize;
                let (one, rest) = bytes.split_at(length);
                schema.walk(&message, one, &mut seen);
                bytes = rest;
            }
            roots.push(message);
        }
        let unset: Vec<String> = schema
            .reachable(&roots)
            .into_iter()
            .flat_map(|message| {
                let numbers = schema.fields.get(&message).cloned().unwrap_or_default();
                numbers
                    .into_keys()
                    .filter(|number| !seen.contains(&(message.clone(), *number)))
                    .map(|number| format!("{message} {number}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(
            unset.is_empty(),
            "golden/{release}: fields no sample sets, so no old bytes test them:\n{}",
            unset.join("\n")
        );
    }
}

/// Field numbers of each message of a `descriptor.txt`, with the message type
/// of the message-typed ones.
struct Schema {
    fields: BTreeMap<String, BTreeMap<u64, Option<String>>>,
}

impl Schema {
    fn parse(described: &str) -> Schema {
        let enums: BTreeSet<&str> = described
            .lines()
            .filter_map(|line| line.strip_prefix("value "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let mut fields: BTreeMap<String, BTreeMap<u64, Option<String>>> = BTreeMap::new();
        for line in described.lines().filter(|line| line.starts_with("field ")) {
            let mut words = line.split(' ').skip(1);
            let owner = words.next().unwrap().to_string();
            let number: u64 = words.next().unwrap().parse().unwrap();
            let (_, ty) = line.split_once(": ").unwrap();
            let ty = ty
                .trim_start_matches("repeated ")
                .trim_start_matches("optional ")
                .split(' ')
                .next()
                .unwrap();
            let message = (ty.contains('.') && !enums.contains(ty)).then(|| ty.to_string());
            fields.entry(owner).or_default().insert(number, message);
        }
        Schema { fields }
    }

    /// Notes each (message, field number) present in `bytes`, a `message`.
    fn walk(&self, message: &str, mut bytes: &[u8], seen: &mut BTreeSet<(String, u64)>) {
        while !bytes.is_empty() {
            let key = varint(&mut bytes);
            let number = key >> 3;
            seen.insert((message.to_string(), number));
            match key & 7 {
                0 => {
                    varint(&mut bytes);
                }
                1 => bytes = &bytes[8..],
                5 => bytes = &bytes[4..],
                2 => {
                    let length = varint(&mut bytes) as usize;
                    let (inner, rest) = bytes.split_at(length);
                    let nested = self.fields.get(message).and_then(|f| f.get(&number));
                    if let Some(Some(nested)) = nested {
                        self.walk(nested, inner, seen);
                    }
                    bytes = rest;
                }
                other => panic!("{message} field {number}: wire type {other}"),
            }
        }
    }

    /// `roots` and every message type their fields lead to.
    fn reachable(&self, roots: &[String]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut todo: Vec<String> = roots.to_vec();
        while let Some(message) = todo.pop() {
            if found.insert(message.clone()) {
                let nested = self
                    .fields
                    .get(&message)
                    .into_iter()
                    .flat_map(|f| f.values());
                todo.extend(nested.flatten().cloned());
            }
        }
        found
    }
}

/// Reads one base-128 varint off the front of `bytes`.
fn varint(bytes: &mut &[u8]) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().expect("a varint");
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("a varint longer than 10 bytes")
}

fn current_descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(k8sworker_proto::FILE_DESCRIPTOR_SET)
        .expect("the crate's descriptors")
}

/// What identifies a line: `field <message> <number>`,
/// `value <enum> <number>`, or `rpc <service>.<method>`. The rest of the line
/// (name, label, type) must stay as it is under that key.
fn key(line: &str) -> &str {
    if line.starts_with("rpc ") {
        return line.split_once('(').map_or(line, |(key, _)| key);
    }
    let end = line
        .match_indices(' ')
        .nth(2)
        .map_or(line.len(), |(end, _)| end);
    &line[..end]
}

/// Orders lines by kind, owner and number.
fn order(line: &str) -> (&str, &str, i64, &str) {
    let mut words = line.split(' ');
    let kind = words.next().unwrap_or_default();
    let owner = words.next().unwrap_or_default();
    let number = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (kind, owner, number, line)
}

/// One sorted line per field, enum value and RPC of `k8sworker.v1`.
fn describe(set: &FileDescriptorSet) -> Vec<String> {
    let mut lines = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "k8sworker.v1") {
        let package = file.package();
        for message in &file.message_type {
            describe_message(package, message, &mut lines);
        }
        for enumeration in &file.enum_type {
            describe_enum(package, enumeration, &mut lines);
        }
        for service in &file.service {
            for method in &service.method {
                let stream = |streaming: bool| if streaming { "stream " } else { "" };
                lines.push(format!(
                    "rpc {package}.{}.{}({}{}) returns ({}{})",
                    service.name(),
                    method.name(),
                    stream(method.client_streaming()),
                    type_name(method.input_type()),
                    stream(method.server_streaming()),
                    type_name(method.output_type()),
                ));
            }
        }
    }
    lines.sort_by(|a, b| order(a).cmp(&order(b)));
    lines
}

fn type_name(name: &str) -> &str {
    name.trim_start_matches('.')
}

fn describe_message(scope: &str, message: &prost_types::DescriptorProto, lines: &mut Vec<String>) {
    let name = format!("{scope}.{}", message.name());
    for field in &message.field {
        let label = match field.label() {
            Label::Repeated => "repeated ",
            Label::Required => "required ",
            Label::Optional if field.proto3_optional() => "optional ",
            Label::Optional => "",
        };
        let ty = match field.r#type() {
            Type::Message | Type::Enum | Type::Group => type_name(field.type_name()).to_string(),
            scalar => scalar
                .as_str_name()
                .trim_start_matches("TYPE_")
                .to_lowercase(),
        };
        let oneof = match field.oneof_index {
            Some(index) if !field.proto3_optional() => {
                format!(" oneof {}", message.oneof_decl[index as usize].name())
            }
            _ => String::new(),
        };
        lines.push(format!(
            "field {name} {} {}: {label}{ty}{oneof}",
            field.number(),
            field.name()
        ));
    }
    for nested in &message.nested_type {
        describe_message(&name, nested, lines);
    }
    for enumeration in &message.enum_type {
        describe_enum(&name, enumeration, lines);
    }
}

fn describe_enum(
    scope: &str,
    enumeration: &prost_types::EnumDescriptorProto,
    lines: &mut Vec<String>,
) {
    for value in &enumeration.value {
        lines.push(format!(
            "value {scope}.{} {} {}",
            enumeration.name(),
            value.number(),
            value.name()
        ));
    }
}

//! The deploy dialog: every `config` entry type of a deploy with Vantiq's
//! field names and choices ([`ENTRY_TYPES`], after
//! `k8sworker_core::model::ConfigEntry`), errors next to the field they
//! concern, a preview of the rendered objects, and redeploy filled from an
//! installation's `configSpec`.
//!
//! The form names its inputs by their path in the deploy request (`name`,
//! `k8sNamespace`, `config[2].hostIP`), the paths validation errors name,
//! so an error finds its field. Entry 0 is always the `image` entry (the
//! dialog's image, pull secret and service account). Adding and removing
//! entries, preview and submit are plain form posts; the script only
//! validates as you type (`POST …/deploy/validate`).

use std::collections::{BTreeMap, BTreeSet};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::pages::{layout, text};
use super::session::{
    ConsoleError, ConsoleState, FormPairs, Session, checked_form, field, page, redirect_with,
    segment,
};
use crate::auth::Action;

/// How an entry property is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A line of text.
    Text,
    /// An integer (sent as a number when it reads as one).
    Number,
    /// Several lines of text, sent as they are.
    Area,
    /// A checkbox, sent as `true` when checked.
    Check,
    /// One of the listed values (the first, empty, means "not set").
    Choice(&'static [&'static str]),
    /// One value per line, sent as a list.
    Lines,
    /// `Name: value` per line, sent as an object.
    Headers,
}

/// One property of an entry type.
#[derive(Debug, Clone, Copy)]
pub struct Prop {
    /// Its name in the request (Vantiq's).
    pub name: &'static str,
    /// Its label in the dialog.
    pub label: &'static str,
    /// How it is entered.
    pub kind: Kind,
}

const fn prop(name: &'static str, label: &'static str, kind: Kind) -> Prop {
    Prop { name, label, kind }
}

/// One `config` entry type.
#[derive(Debug)]
pub struct EntryType {
    /// Its `type`.
    pub name: &'static str,
    /// Its name in the dialog.
    pub label: &'static str,
    /// Its properties.
    pub props: &'static [Prop],
}

const TARGETS: &[&str] = &[
    "",
    "configMap",
    "ingress",
    "pod",
    "secret",
    "service",
    "statefulSet",
];
const RESOURCES: &[Prop] = &[
    prop("cpu", "CPU", Kind::Text),
    prop("memory", "Memory", Kind::Text),
    prop("nvidia.com/gpu", "nvidia.com/gpu", Kind::Text),
    prop("amd.com/gpu", "amd.com/gpu", Kind::Text),
];

/// Every entry type of a deploy's `config` and its properties.
pub const ENTRY_TYPES: &[EntryType] = &[
    EntryType {
        name: "image",
        label: "Image",
        props: &[
            prop("name", "Image", Kind::Text),
            prop("imagePullSecret", "Image pull secret", Kind::Text),
            prop("serviceAccount", "Service account", Kind::Text),
            prop("replicaCount", "Replicas", Kind::Number),
            prop(
                "pullPolicy",
                "Pull policy",
                Kind::Choice(&["", "Always", "IfNotPresent", "Never"]),
            ),
        ],
    },
    EntryType {
        name: "hostAlias",
        label: "Host alias",
        props: &[
            prop("name", "Host name", Kind::Text),
            prop("hostIP", "IP address", Kind::Text),
        ],
    },
    EntryType {
        name: "file",
        label: "File",
        props: &[
            prop("path", "Mount path", Kind::Text),
            prop("filename", "File name", Kind::Text),
            prop(
                "dataSource",
                "Data Source",
                Kind::Choice(&["", "configMap", "secret"]),
            ),
            prop("content", "Content", Kind::Area),
            prop("name", "Existing ConfigMap or Secret", Kind::Text),
            prop("key", "Key", Kind::Text),
            prop(
                "resourceType",
                "Mount Vantiq Resource",
                Kind::Choice(&["", "documents", "images", "videos"]),
            ),
            prop("resourceName", "Resource name", Kind::Text),
            prop("treatAsText", "Treat as text", Kind::Check),
        ],
    },
    EntryType {
        name: "inboundPort",
        label: "Inbound port",
        props: &[
            prop("port", "Port", Kind::Number),
            prop("protocol", "Protocol", Kind::Choice(&["TCP", "UDP"])),
            prop("portName", "Port name", Kind::Text),
            prop("host", "Host (Ingress)", Kind::Text),
            prop(
                "serviceType",
                "Service type",
                Kind::Choice(&["", "NodePort", "ClusterIP", "LoadBalancer"]),
            ),
            prop("serviceName", "Service name", Kind::Text),
            prop("clusterIP", "Cluster IP", Kind::Text),
        ],
    },
    EntryType {
        name: "environmentVariable",
        label: "Environment variable",
        props: &[
            prop("name", "Name", Kind::Text),
            prop("value", "Value", Kind::Text),
            prop("secretName", "From Secret", Kind::Text),
            prop("key", "Key", Kind::Text),
            prop("asSecret", "Keep in a Secret", Kind::Check),
        ],
    },
    EntryType {
        name: "persistentVolumeRef",
        label: "Persistent volume",
        props: &[
            prop("name", "PersistentVolumeClaim", Kind::Text),
            prop("path", "Mount path", Kind::Text),
        ],
    },
    EntryType {
        name: "annotation",
        label: "Annotation",
        props: &[
            prop("name", "Name", Kind::Text),
            prop("value", "Value", Kind::Text),
            prop("targetResource", "Target resource", Kind::Choice(TARGETS)),
        ],
    },
    EntryType {
        name: "label",
        label: "Label",
        props: &[
            prop("name", "Name", Kind::Text),
            prop("value", "Value", Kind::Text),
            prop("targetResource", "Target resource", Kind::Choice(TARGETS)),
            prop("controlsRouting", "Controls routing", Kind::Check),
        ],
    },
    EntryType {
        name: "probe",
        label: "Probe",
        props: &[
            prop(
                "probeType",
                "Probe type",
                Kind::Choice(&["startup", "readiness", "liveness"]),
            ),
            prop(
                "requestType",
                "Request type",
                Kind::Choice(&["command", "tcp", "http"]),
            ),
            prop("commands", "Commands (one per line)", Kind::Lines),
            prop("port", "Port (number or name)", Kind::Text),
            prop("path", "HTTP path", Kind::Text),
            prop(
                "headers",
                "HTTP headers (Name: value per line)",
                Kind::Headers,
            ),
            prop("initialDelaySeconds", "Initial delay (s)", Kind::Number),
            prop("periodSeconds", "Period (s)", Kind::Number),
            prop("timeoutSeconds", "Timeout (s)", Kind::Number),
            prop("successThreshold", "Success threshold", Kind::Number),
            prop("failureThreshold", "Failure threshold", Kind::Number),
        ],
    },
    EntryType {
        name: "resourceRequest",
        label: "Resource request",
        props: RESOURCES,
    },
    EntryType {
        name: "resourceLimit",
        label: "Resource limit",
        props: RESOURCES,
    },
    EntryType {
        name: "hardAffinity",
        label: "Hard affinity",
        props: &[
            prop("key", "Node label key", Kind::Text),
            prop("values", "Values (one per line)", Kind::Lines),
        ],
    },
];

fn entry_type(name: &str) -> Option<&'static EntryType> {
    ENTRY_TYPES.iter().find(|entry| entry.name == name)
}

/// One entry as entered: its `type` and the text of each property.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The entry's `type`.
    pub kind: String,
    /// Property name → text as entered.
    pub values: BTreeMap<String, String>,
}

/// The dialog's content.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployForm {
    /// The installation name.
    pub name: String,
    /// The Kubernetes namespace.
    pub namespace: String,
    /// The `config` entries; entry 0 is the image.
    pub entries: Vec<Entry>,
}

impl Default for DeployForm {
    fn default() -> Self {
        DeployForm {
            name: String::new(),
            namespace: String::new(),
            entries: vec![Entry {
                kind: "image".into(),
                values: BTreeMap::new(),
            }],
        }
    }
}

/// `config[3].hostIP` → `(3, "hostIP")`.
fn entry_path(key: &str) -> Option<(usize, &str)> {
    let rest = key.strip_prefix("config[")?;
    let (index, prop) = rest.split_once("].")?;
    Some((index.parse().ok()?, prop))
}

impl DeployForm {
    /// Reads the posted form (inputs named by request path).
    pub fn from_pairs(pairs: &[(String, String)]) -> DeployForm {
        let mut form = DeployForm {
            name: field(pairs, "name").unwrap_or_default().trim().to_owned(),
            namespace: field(pairs, "k8sNamespace")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            entries: Vec::new(),
        };
        let mut entries: BTreeMap<usize, Entry> = BTreeMap::new();
        for (key, value) in pairs {
            let Some((index, prop)) = entry_path(key) else {
                continue;
            };
            if index >= 1000 {
                continue;
            }
            let entry = entries.entry(index).or_default();
            if prop == "type" {
                entry.kind = value.clone();
            } else {
                entry.values.insert(prop.to_owned(), value.clone());
            }
        }
        form.entries = entries.into_values().collect();
        if form
            .entries
            .first()
            .is_none_or(|entry| entry.kind != "image")
        {
            form.entries.insert(
                0,
                Entry {
                    kind: "image".into(),
                    values: BTreeMap::new(),
                },
            );
        }
        form
    }

    /// The dialog filled from an installation's `name`, `k8sNamespace` and
    /// `configSpec`, the image entry first.
    pub fn from_installation(record: &Value) -> DeployForm {
        let mut entries: Vec<Entry> = record
            .get("configSpec")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(entry_from_json)
            .collect();
        match entries.iter().position(|entry| entry.kind == "image") {
            Some(0) => {}
            Some(at) => {
                let image = entries.remove(at);
                entries.insert(0, image);
            }
            None => entries.insert(
                0,
                Entry {
                    kind: "image".into(),
                    values: BTreeMap::new(),
                },
            ),
        }
        DeployForm {
            name: text(record, "name"),
            namespace: text(record, "k8sNamespace"),
            entries,
        }
    }

    /// The deploy request's `data`.
    pub fn to_json(&self) -> Value {
        let config: Vec<Value> = self.entries.iter().map(entry_to_json).collect();
        json!({"name": self.name, "k8sNamespace": self.namespace, "config": config})
    }
}

fn entry_from_json(value: &Value) -> Entry {
    let kind = text(value, "type");
    let mut values = BTreeMap::new();
    if let Some(map) = value.as_object() {
        for (key, value) in map {
            if key == "type" {
                continue;
            }
            let shown = match value {
                Value::String(text) => text.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map_or_else(|| item.to_string(), str::to_owned)
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                Value::Object(map) => map
                    .iter()
                    .map(|(name, value)| {
                        format!(
                            "{name}: {}",
                            value
                                .as_str()
                                .map_or_else(|| value.to_string(), str::to_owned)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            };
            values.insert(key.clone(), shown);
        }
    }
    Entry { kind, values }
}

fn entry_to_json(entry: &Entry) -> Value {
    let mut out = Map::new();
    out.insert("type".into(), json!(entry.kind));
    let props = entry_type(&entry.kind).map_or(&[][..], |t| t.props);
    for (name, raw) in &entry.values {
        let kind = props
            .iter()
            .find(|prop| prop.name == name)
            .map_or(Kind::Text, |prop| prop.kind);
        // A variable's, label's or annotation's `value` is data: sent as
        // typed, an empty one included (as a REST client sends `""`, which
        // Kubernetes takes), unless the entry names a Secret instead.
        if name == "value" && matches!(kind, Kind::Text) {
            let from_secret = entry
                .values
                .get("secretName")
                .is_some_and(|secret| !secret.trim().is_empty());
            if !(from_secret && raw.is_empty()) {
                out.insert(name.clone(), json!(raw));
            }
            continue;
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            continue;
        }
        let value = match kind {
            Kind::Number => trimmed
                .parse::<i64>()
                .map_or_else(|_| json!(trimmed), |number| json!(number)),
            // An unchecked box is not sent (false is every flag's default).
            Kind::Check if matches!(trimmed, "true" | "on") => json!(true),
            Kind::Check => continue,
            Kind::Lines => json!(
                trimmed
                    .lines()
                    .map(str::trim)
                    .filter(|line| !line.is_empty())
                    .collect::<Vec<_>>()
            ),
            Kind::Headers => {
                let mut headers = Map::new();
                for line in trimmed.lines().filter(|line| !line.trim().is_empty()) {
                    let (name, value) = line.split_once(':').unwrap_or((line, ""));
                    headers.insert(name.trim().to_owned(), json!(value.trim()));
                }
                Value::Object(headers)
            }
            // A probe's port is a number or a name.
            Kind::Text if name == "port" => trimmed
                .parse::<i64>()
                .map_or_else(|_| json!(trimmed), |number| json!(number)),
            Kind::Area => json!(raw),
            _ => json!(trimmed),
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

/// One validation problem: the request path it concerns and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// `name`, `k8sNamespace`, `config[i].<property>`, `config[i]` for a
    /// whole entry, or empty for the request.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// The problems of a deploy `data`: the server's validation endpoint when
/// it has one, else the same rules run here
/// (`k8sworker_core::validate::parse_and_validate`).
async fn problems(
    state: &ConsoleState,
    session: &Session,
    data: &Value,
) -> Result<Vec<Problem>, ConsoleError> {
    match state
        .call(
            session,
            Method::POST,
            "/api/v1/resources/k8sinstallations/validate",
            Some(data),
        )
        .await
    {
        Ok(answer) => Ok(answer
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|error| Problem {
                field: text(error, "field"),
                message: text(error, "message"),
            })
            .collect()),
        Err(ConsoleError::Api(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, _)) => {
            Ok(local_problems(data))
        }
        Err(other) => Err(other),
    }
}

/// [`problems`] without the server's endpoint.
pub fn local_problems(data: &Value) -> Vec<Problem> {
    match k8sworker_core::validate::parse_and_validate(data) {
        Ok(_) => Vec::new(),
        Err(errors) => errors
            .errors
            .into_iter()
            .map(|error| {
                let field = match (error.entry, error.field.is_empty()) {
                    (Some(index), true) => format!("config[{index}]"),
                    (Some(index), false) => format!("config[{index}].{}", error.field),
                    (None, _) => error.field,
                };
                Problem {
                    field,
                    message: error.message,
                }
            })
            .collect(),
    }
}

/// Where an error is shown: its path, else the nearest enclosing path the
/// form has a place for, else the form's own place (`""`).
fn slot(path: &str, slots: &BTreeSet<String>) -> String {
    let mut path = path.to_owned();
    loop {
        if slots.contains(&path) || path.is_empty() {
            return path;
        }
        let cut = path.rfind(['.', '[']).unwrap_or(0);
        path.truncate(cut);
    }
}

/// What the dialog shows besides the form.
#[derive(Debug, Default)]
struct Outcome {
    problems: Vec<Problem>,
    general: Vec<String>,
    preview: Option<Markup>,
}

fn render(session: &Session, cluster: &str, form: &DeployForm, outcome: &Outcome) -> Markup {
    let mut slots: BTreeSet<String> = ["name".to_owned(), "k8sNamespace".to_owned()].into();
    for (index, entry) in form.entries.iter().enumerate() {
        slots.insert(format!("config[{index}]"));
        for prop in entry_type(&entry.kind).map_or(&[][..], |t| t.props) {
            slots.insert(format!("config[{index}].{}", prop.name));
        }
    }
    let mut errors: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for problem in &outcome.problems {
        errors
            .entry(slot(&problem.field, &slots))
            .or_default()
            .push(&problem.message);
    }
    let error_of = |path: &str| errors.get(path).map(|messages| messages.join(" "));
    let input = |path: &str, label: &str, value: &str, kind: Kind| -> Markup {
        let id = format!("f-{path}");
        let error_id = format!("e-{path}");
        let error = error_of(path);
        html! {
            div class={ "field" @if kind == Kind::Check { " check" } } {
                @match kind {
                    Kind::Check => {
                        input id=(id) name=(path) type="checkbox" value="true" checked[value == "true"] aria-describedby=(error_id) aria-invalid=[error.as_ref().map(|_| "true")];
                        label for=(id) { (label) }
                    }
                    Kind::Area | Kind::Lines | Kind::Headers => {
                        label for=(id) { (label) }
                        textarea id=(id) name=(path) aria-describedby=(error_id) aria-invalid=[error.as_ref().map(|_| "true")] { (value) }
                    }
                    Kind::Choice(choices) => {
                        label for=(id) { (label) }
                        select id=(id) name=(path) aria-describedby=(error_id) aria-invalid=[error.as_ref().map(|_| "true")] {
                            @for choice in choices {
                                option value=(choice) selected[*choice == value] { @if choice.is_empty() { "(not set)" } @else { (choice) } }
                            }
                            @if !value.is_empty() && !choices.contains(&value) {
                                option value=(value) selected { (value) }
                            }
                        }
                    }
                    Kind::Number => {
                        label for=(id) { (label) }
                        input id=(id) name=(path) type="text" inputmode="numeric" value=(value) aria-describedby=(error_id) aria-invalid=[error.as_ref().map(|_| "true")];
                    }
                    Kind::Text => {
                        label for=(id) { (label) }
                        input id=(id) name=(path) type="text" value=(value) aria-describedby=(error_id) aria-invalid=[error.as_ref().map(|_| "true")];
                    }
                }
                p.error id=(error_id) data-error-for=(path) aria-live="polite" { @if let Some(error) = &error { (error) } }
            }
        }
    };
    let general: Vec<String> = outcome
        .general
        .iter()
        .cloned()
        .chain(error_of(""))
        .collect();
    let body = html! {
        form #deploy-form method="post" action={ "/ui/clusters/" (cluster) "/deploy" } data-validate={ "/ui/clusters/" (cluster) "/deploy/validate" } novalidate {
            input type="hidden" name="csrf" value=(session.csrf);
            p.problems #deploy-errors data-error-for="" role="alert" { (general.join(" ")) }
            fieldset {
                legend { "Installation" }
                div.fields {
                    (input("name", "Installation name", &form.name, Kind::Text))
                    (input("k8sNamespace", "Kubernetes namespace", &form.namespace, Kind::Text))
                }
                input type="hidden" name="config[0].type" value="image";
                p.error data-error-for="config[0]" { @if let Some(error) = error_of("config[0]") { (error) } }
                div.fields {
                    @for prop in entry_type("image").map_or(&[][..], |t| t.props) {
                        @let path = format!("config[0].{}", prop.name);
                        (input(&path, prop.label, form.entries[0].values.get(prop.name).map_or("", String::as_str), prop.kind))
                    }
                }
            }
            h2 { "Configuration Options" }
            @for (index, entry) in form.entries.iter().enumerate().skip(1) {
                @let label = entry_type(&entry.kind).map_or(entry.kind.as_str(), |t| t.label);
                fieldset #{ "entry-" (index) } {
                    legend { (label) " (entry " (index) ")" }
                    input type="hidden" name={ "config[" (index) "].type" } value=(entry.kind);
                    p.error data-error-for={ "config[" (index) "]" } { @if let Some(error) = error_of(&format!("config[{index}]")) { (error) } }
                    div.fields {
                        @for prop in entry_type(&entry.kind).map_or(&[][..], |t| t.props) {
                            @let path = format!("config[{index}].{}", prop.name);
                            (input(&path, prop.label, entry.values.get(prop.name).map_or("", String::as_str), prop.kind))
                        }
                    }
                    button.secondary type="submit" name="remove" value=(index) aria-label={ "Remove " (label) " entry " (index) } { "Remove" }
                }
            }
            div.actions {
                div.field {
                    label for="add-type" { "Option type" }
                    select #add-type name="addType" {
                        @for entry in ENTRY_TYPES.iter().skip(1) {
                            option value=(entry.name) { (entry.label) }
                        }
                    }
                }
                button.secondary #add-entry type="submit" name="action" value="add" { "Add" }
            }
            p.muted data-validation-status aria-live="polite" {}
            div.actions {
                button.secondary #preview type="submit" name="action" value="preview" { "Preview" }
                button #submit-deploy type="submit" name="action" value="deploy" { "Deploy" }
                a href={ "/ui/clusters/" (cluster) } { "Cancel" }
            }
        }
        @if let Some(preview) = &outcome.preview {
            section #preview-objects aria-label="Preview" {
                h2 { "Preview" }
                (preview)
            }
        }
    };
    layout(session, &format!("Deploy to {cluster}"), body)
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct FromQuery {
    from: Option<String>,
}

/// `GET /ui/clusters/{cluster}/deploy[?from=<installation>]`.
pub(super) async fn form_page(
    State(state): State<ConsoleState>,
    session: Session,
    Path(cluster): Path<String>,
    Query(query): Query<FromQuery>,
) -> Result<Response, ConsoleError> {
    if !session.may(Action::RequestOperation) {
        return Err(ConsoleError::Api(
            StatusCode::FORBIDDEN,
            format!("{} may not deploy.", session.username()),
        ));
    }
    let form = match query.from {
        Some(name) => {
            let record = state
                .get(
                    &session,
                    &format!("/api/v1/resources/k8sinstallations/{}", segment(&name)),
                )
                .await?;
            DeployForm::from_installation(&record)
        }
        None => DeployForm::default(),
    };
    Ok(page(
        &session,
        render(&session, &cluster, &form, &Outcome::default()),
    ))
}

/// `POST /ui/clusters/{cluster}/deploy`: `action` `add` (with `addType`),
/// `remove` (an entry's index), `preview`, or `deploy`, which validates
/// first and submits nothing while there are problems.
pub(super) async fn submit(
    State(state): State<ConsoleState>,
    session: Session,
    Path(cluster): Path<String>,
    axum::Form(pairs): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &pairs)?;
    let mut form = DeployForm::from_pairs(&pairs);
    let mut outcome = Outcome::default();
    let mut status = StatusCode::OK;
    if let Some(index) = field(&pairs, "remove").and_then(|index| index.parse::<usize>().ok()) {
        if index > 0 && index < form.entries.len() {
            form.entries.remove(index);
        }
    } else {
        match field(&pairs, "action").unwrap_or("deploy") {
            "add" => {
                let kind = field(&pairs, "addType").unwrap_or_default();
                if entry_type(kind).is_some() && kind != "image" {
                    form.entries.push(Entry {
                        kind: kind.to_owned(),
                        values: BTreeMap::new(),
                    });
                }
            }
            "preview" => {
                let data = form.to_json();
                outcome.problems = problems(&state, &session, &data).await?;
                if outcome.problems.is_empty() {
                    outcome.preview = Some(preview(&state, &session, &cluster, &data).await?);
                } else {
                    status = StatusCode::BAD_REQUEST;
                }
            }
            _ => {
                let data = form.to_json();
                outcome.problems = problems(&state, &session, &data).await?;
                if outcome.problems.is_empty() {
                    let answer = state
                        .call(
                            &session,
                            Method::POST,
                            &format!(
                                "/api/v1/resources/k8sclusters/{}/command",
                                segment(&cluster)
                            ),
                            Some(&json!({"op": "deploy", "data": data})),
                        )
                        .await;
                    match answer {
                        Ok(item) => {
                            return Ok(redirect_with(
                                &format!("/ui/clusters/{cluster}"),
                                &format!(
                                    "deploy of {} requested (workitem {}).",
                                    form.name,
                                    text(&item, "requestId")
                                ),
                                session.secure,
                            ));
                        }
                        Err(ConsoleError::Api(refused, message)) => {
                            status = refused;
                            outcome.general.push(format!("Not deployed: {message}"));
                        }
                        Err(other) => return Err(other),
                    }
                } else {
                    status = StatusCode::BAD_REQUEST;
                }
            }
        }
    }
    Ok((
        status,
        page(&session, render(&session, &cluster, &form, &outcome)),
    )
        .into_response())
}

/// The objects a deploy renders to on `cluster`, from the server's preview
/// endpoint.
async fn preview(
    state: &ConsoleState,
    session: &Session,
    cluster: &str,
    data: &Value,
) -> Result<Markup, ConsoleError> {
    let mut body = data.clone();
    body["clusterName"] = json!(cluster);
    let answer = state
        .call(
            session,
            Method::POST,
            "/api/v1/resources/k8sinstallations/preview",
            Some(&body),
        )
        .await;
    let objects = match answer {
        Ok(answer) => answer
            .get("objects")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        Err(ConsoleError::Api(StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED, _)) => {
            return Ok(html! {
                p.muted #preview-missing { "This server does not offer a preview of the rendered objects." }
            });
        }
        Err(ConsoleError::Api(_, message)) => {
            return Ok(html! { p.problems role="alert" { (message) } });
        }
        Err(other) => return Err(other),
    };
    Ok(html! {
        p { (objects.len()) " objects; secret values are masked." }
        @for object in &objects {
            @let manifest = match object.get("manifest") {
                Some(Value::String(text)) => text.clone(),
                Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
                None => String::new(),
            };
            details.object {
                summary { (text(object, "kind")) "/" (text(object, "name")) }
                pre { (manifest) }
            }
        }
    })
}

/// `POST /ui/clusters/{cluster}/deploy/validate`: the form's problems as
/// `{"valid": bool, "errors": [{"field", "message"}]}`, for the script.
pub(super) async fn validate(
    State(state): State<ConsoleState>,
    session: Session,
    axum::Form(pairs): FormPairs,
) -> Result<Response, ConsoleError> {
    checked_form(&session, &pairs)?;
    let data = DeployForm::from_pairs(&pairs).to_json();
    let problems = problems(&state, &session, &data).await?;
    Ok(Json(json!({"valid": problems.is_empty(), "errors": problems})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_reads_into_a_deploy_request() {
        let form = DeployForm::from_pairs(&pairs(&[
            ("name", "jdbc"),
            ("k8sNamespace", "default"),
            ("config[0].type", "image"),
            ("config[0].name", "quay.io/vantiq/jdbc:1"),
            ("config[0].replicaCount", "2"),
            ("config[0].pullPolicy", ""),
            ("config[1].type", "hostAlias"),
            ("config[1].name", "dbnode"),
            ("config[1].hostIP", "10.0.0.5"),
            ("config[2].type", "file"),
            ("config[2].path", "/opt/conf"),
            ("config[2].dataSource", "secret"),
            ("config[2].name", "jdbc-server-config"),
            ("config[2].key", "data"),
            ("config[3].type", "probe"),
            ("config[3].commands", "cat\n/tmp/ready\n"),
            ("config[3].headers", "X-A: 1\n"),
            ("config[3].port", "http"),
            ("config[3].periodSeconds", "ten"),
        ]));
        assert_eq!(
            form.to_json(),
            json!({"name": "jdbc", "k8sNamespace": "default", "config": [
                {"type": "image", "name": "quay.io/vantiq/jdbc:1", "replicaCount": 2},
                {"type": "hostAlias", "name": "dbnode", "hostIP": "10.0.0.5"},
                {"type": "file", "path": "/opt/conf", "dataSource": "secret", "name": "jdbc-server-config", "key": "data"},
                {"type": "probe", "commands": ["cat", "/tmp/ready"], "headers": {"X-A": "1"}, "port": "http", "periodSeconds": "ten"},
            ]})
        );
    }

    #[test]
    fn a_config_spec_fills_the_form_and_reads_back_the_same() {
        let record = json!({"name": "jdbc", "k8sNamespace": "ns", "configSpec": [
            {"type": "hostAlias", "name": "dbnode", "hostIP": "10.0.0.5"},
            {"type": "image", "name": "img:1", "replicaCount": 1},
            {"type": "hardAffinity", "key": "zone", "values": ["a", "b"]},
            {"type": "environmentVariable", "name": "K", "value": "v", "asSecret": true},
        ]});
        let form = DeployForm::from_installation(&record);
        assert_eq!(form.entries[0].kind, "image");
        assert_eq!(
            form.to_json()["config"],
            json!([
                {"type": "image", "name": "img:1", "replicaCount": 1},
                {"type": "hostAlias", "name": "dbnode", "hostIP": "10.0.0.5"},
                {"type": "hardAffinity", "key": "zone", "values": ["a", "b"]},
                {"type": "environmentVariable", "name": "K", "value": "v", "asSecret": true},
            ])
        );
    }

    #[test]
    fn a_value_is_sent_as_typed_like_a_rest_client_sends_it() {
        let form = DeployForm::from_pairs(&pairs(&[
            ("name", "jdbc"),
            ("k8sNamespace", "default"),
            ("config[0].type", "image"),
            ("config[0].name", "img:1"),
            ("config[1].type", "environmentVariable"),
            ("config[1].name", "EMPTY"),
            ("config[1].value", ""),
            ("config[2].type", "environmentVariable"),
            ("config[2].name", "PADDED"),
            ("config[2].value", " a b "),
            ("config[3].type", "environmentVariable"),
            ("config[3].name", "FROM_SECRET"),
            ("config[3].value", ""),
            ("config[3].secretName", "s"),
            ("config[3].key", "k"),
            ("config[4].type", "label"),
            ("config[4].name", "tier"),
            ("config[4].value", ""),
        ]));
        let rest = json!({"name": "jdbc", "k8sNamespace": "default", "config": [
            {"type": "image", "name": "img:1"},
            {"type": "environmentVariable", "name": "EMPTY", "value": ""},
            {"type": "environmentVariable", "name": "PADDED", "value": " a b "},
            {"type": "environmentVariable", "name": "FROM_SECRET", "secretName": "s", "key": "k"},
            {"type": "label", "name": "tier", "value": ""},
        ]});
        assert_eq!(form.to_json(), rest);
        assert_eq!(local_problems(&rest), Vec::new());
        // Redeploy keeps them too.
        let record =
            json!({"name": "jdbc", "k8sNamespace": "default", "configSpec": rest["config"]});
        assert_eq!(DeployForm::from_installation(&record).to_json(), rest);
    }

    #[test]
    fn problems_name_the_path_of_their_field() {
        let problems = local_problems(
            &json!({"name": "jdbc", "k8sNamespace": "default", "config": [
                {"type": "image", "name": "img:1"},
                {"type": "hostAlias", "name": "dbnode", "hostIP": "not-an-ip"},
            ]}),
        );
        assert!(
            problems.iter().any(|p| p.field == "config[1].hostIP"),
            "{problems:?}"
        );
        let slots: BTreeSet<String> = ["config[1]".to_owned(), "name".to_owned()].into();
        assert_eq!(slot("config[1].values[0]", &slots), "config[1]");
        assert_eq!(slot("config", &slots), "");
        assert_eq!(slot("name", &slots), "name");
    }

    #[test]
    fn every_entry_type_of_the_model_is_offered() {
        let offered: Vec<&str> = ENTRY_TYPES.iter().map(|t| t.name).collect();
        assert_eq!(offered.len(), k8sworker_core::model::ENTRY_TYPES.len());
        for entry in k8sworker_core::model::ENTRY_TYPES {
            assert!(offered.contains(entry), "{entry}");
        }
    }
}

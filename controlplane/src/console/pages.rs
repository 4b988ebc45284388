//! The console's pages (maud templates, checked at compile time; every
//! interpolated value is escaped).

use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::session::{Session, head};
use crate::auth::Action;

/// What the installation page's action buttons may ask for.
pub const INSTALLATION_OPERATIONS: &[&str] =
    &["shutdown", "restart", "undeploy", "fetchLogs", "verify"];

/// A property as text: strings as they are, numbers and booleans as JSON,
/// nothing for `null` or absent.
pub fn text(value: &Value, key: &str) -> String {
    match value.get(key) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// A page with the navigation of `session`.
pub fn layout(session: &Session, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "k8sworker" }
                    nav aria-label="Main" {
                        @if session.may(Action::ReadClusters) {
                            a href="/ui/clusters" { "Clusters" }
                        }
                        a href="/ui/installations" { "Installations" }
                    }
                    span #whoami {
                        (session.username()) " (" (session.profile()) ", namespace " (session.namespace()) ")"
                    }
                    form.inline method="post" action="/ui/logout" {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.secondary type="submit" { "Sign out" }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(flash) = &session.flash {
                        p.flash role="status" #flash { (flash) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The sign-in form; `nonce` is its CSRF token.
pub fn login(nonce: &str, notice: Option<&str>, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main #main .login {
                    h1 { "k8sworker: sign in" }
                    @if let Some(notice) = notice {
                        p.flash role="status" #notice { (notice) }
                    }
                    @if let Some(error) = error {
                        p.problems role="alert" #login-error { (error) }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(nonce);
                        div.field {
                            label for="username" { "User name" }
                            input #username name="username" type="text" autocomplete="username" required autofocus;
                        }
                        div.field {
                            label for="password" { "Password" }
                            input #password name="password" type="password" autocomplete="current-password" required;
                        }
                        button #sign-in type="submit" { "Sign in" }
                    }
                }
            }
        }
    }
}

fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

fn status(value: &str) -> Markup {
    html! { span class={ "status status-" (value) } { (value) } }
}

/// The workitems not yet done (every one the server still lists).
fn waiting(workitems: &[Value]) -> Vec<&Value> {
    workitems
        .iter()
        .filter(|item| {
            matches!(
                item.get("status").and_then(Value::as_str),
                Some("REQUESTED" | "PENDING" | "CANCELLED")
            )
        })
        .collect()
}

/// `GET /ui/clusters`.
pub fn clusters(
    session: &Session,
    clusters: &[Value],
    installations: &[Value],
    workitems: &[Value],
) -> Markup {
    let body = html! {
        section #clusters-live data-live aria-live="polite" {
            div.table-wrap {
                table.stack #clusters {
                    caption.muted { (clusters.len()) " K8s clusters" }
                    thead { tr {
                        th scope="col" { "Name" }
                        th scope="col" { "Ingress default node" }
                        th scope="col" { "Installations" }
                        th scope="col" { "Waiting workitems" }
                        th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for cluster in clusters {
                            @let name = text(cluster, "name");
                            @let own: Vec<String> = installations.iter().filter(|i| text(i, "clusterName") == name).map(|i| text(i, "name")).collect();
                            @let items: Vec<&Value> = waiting(workitems).into_iter().filter(|w| text(w, "clusterName") == name).collect();
                            @let delayed = items.iter().filter(|w| w.get("delayed") == Some(&Value::Bool(true))).count();
                            tr data-cluster=(name) {
                                td data-label="Name" { a href={ "/ui/clusters/" (name) } { (name) } }
                                td data-label="Ingress default node" { (text(cluster, "ingressDefaultNode")) }
                                td data-label="Installations" { (own.len()) @if !own.is_empty() { " (" (own.join(", ")) ")" } }
                                td data-label="Waiting workitems" {
                                    (items.len())
                                    @if delayed > 0 { " " span.badge { (delayed) " delayed" } }
                                }
                                td data-label="Actions" {
                                    div.actions {
                                        a.button.secondary href={ "/ui/clusters/" (name) "/templates" } download { "Worker templates" }
                                        @if session.may(Action::WriteClusters) {
                                            form.inline method="post" action={ "/ui/clusters/" (name) "/delete" } {
                                                (csrf(session))
                                                button.danger type="submit" aria-label={ "Delete cluster " (name) } { "Delete" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if session.may(Action::WriteClusters) {
            h2 { "New cluster" }
            form #new-cluster method="post" action="/ui/clusters" {
                (csrf(session))
                div.fields {
                    div.field {
                        label for="cluster-name" { "Name" }
                        input #cluster-name name="name" type="text" required;
                    }
                    div.field {
                        label for="cluster-node" { "Ingress default node (optional)" }
                        input #cluster-node name="ingressDefaultNode" type="text";
                    }
                }
                button #create-cluster type="submit" { "New cluster" }
            }
        }
    };
    layout(session, "K8s clusters", body)
}

fn installations_table(installations: &[Value]) -> Markup {
    html! {
        @if installations.is_empty() {
            p.muted #no-installations { "No installations." }
        }
        div.table-wrap {
            table.stack #installations {
                thead { tr {
                    th scope="col" { "Name" }
                    th scope="col" { "Cluster" }
                    th scope="col" { "Namespace" }
                    th scope="col" { "installationStatus" }
                    th scope="col" { "k8sState" }
                    th scope="col" { "Replicas" }
                } }
                tbody {
                    @for installation in installations {
                        @let name = text(installation, "name");
                        tr data-installation=(name) {
                            td data-label="Name" { a href={ "/ui/installations/" (name) } { (name) } }
                            td data-label="Cluster" { (text(installation, "clusterName")) }
                            td data-label="Namespace" { (text(installation, "k8sNamespace")) }
                            td data-label="installationStatus" { (status(&text(installation, "installationStatus"))) }
                            td data-label="k8sState" { (text(installation, "k8sState")) }
                            td data-label="Replicas" { (text(installation, "replicaCount")) }
                        }
                    }
                }
            }
        }
    }
}

fn workitems_section(session: &Session, workitems: &[Value], back: &str) -> Markup {
    let items = waiting(workitems);
    html! {
        @if items.is_empty() {
            p.muted #queue-message { "No workitems are waiting for the K8s worker." }
        } @else {
            p.flash #queue-message role="status" {
                (items.len()) " workitem(s) are in the queue for the K8s worker."
                @let delayed = items.iter().filter(|w| w.get("delayed") == Some(&Value::Bool(true))).count();
                @if delayed > 0 { " " span.badge { (delayed) " delayed: no worker has taken them in time" } }
            }
            div.table-wrap {
                table.stack #workitems {
                    thead { tr {
                        th scope="col" { "Operation" }
                        th scope="col" { "Installation" }
                        th scope="col" { "Status" }
                        th scope="col" { "Requested by" }
                        th scope="col" { "Created" }
                        th scope="col" { "Message" }
                        th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for item in &items {
                            @let id = text(item, "requestId");
                            tr data-workitem=(id) {
                                td data-label="Operation" { (text(item, "operation")) }
                                td data-label="Installation" { (text(item, "installationName")) }
                                td data-label="Status" {
                                    (status(&text(item, "status")))
                                    @if item.get("delayed") == Some(&Value::Bool(true)) { " " span.badge { "delayed" } }
                                }
                                td data-label="Requested by" { (text(item, "requestedBy")) }
                                td data-label="Created" { (text(item, "createdAt")) }
                                td data-label="Message" { (text(item, "message")) }
                                td data-label="Actions" {
                                    @if session.may(Action::CancelWorkitems) && text(item, "status") == "REQUESTED" {
                                        form.inline method="post" action={ "/ui/workitems/" (id) "/cancel" } {
                                            (csrf(session))
                                            input type="hidden" name="back" value=(back);
                                            button.danger type="submit" aria-label={ "Cancel workitem " (id) } { "Cancel" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn trace_link(trace_ui: Option<&str>, trace_id: &str) -> Markup {
    html! {
        @if let Some(template) = trace_ui.filter(|_| !trace_id.is_empty()) {
            a href=(template.replace("{traceId}", trace_id)) target="_blank" rel="noopener noreferrer" { "trace" }
        } @else {
            span.muted { (trace_id) }
        }
    }
}

fn steps(operation: &Value) -> Markup {
    html! {
        @if let Some(steps) = operation.get("steps").and_then(Value::as_array).filter(|s| !s.is_empty()) {
            ol.steps {
                @for step in steps {
                    li { (text(step, "action")) " " (text(step, "kind")) "/" (text(step, "name")) @let reason = text(step, "reason"); @if !reason.is_empty() { " — " (reason) } }
                }
            }
        }
    }
}

fn history_section(history: Option<&[Value]>, trace_ui: Option<&str>) -> Markup {
    html! {
        @match history {
            None => p.muted #history-missing { "This server keeps no operation history." },
            Some([]) => p.muted { "No operations recorded yet." },
            Some(operations) => div.table-wrap {
                table.stack #history {
                    thead { tr {
                        th scope="col" { "Operation" }
                        th scope="col" { "Installation" }
                        th scope="col" { "Requested by" }
                        th scope="col" { "Requested" }
                        th scope="col" { "Started" }
                        th scope="col" { "Finished" }
                        th scope="col" { "Outcome" }
                        th scope="col" { "Steps" }
                        th scope="col" { "Trace" }
                    } }
                    tbody {
                        @for operation in operations {
                            tr data-operation=(text(operation, "id")) {
                                td data-label="Operation" { (text(operation, "op")) }
                                td data-label="Installation" { (text(operation, "installationName")) }
                                td data-label="Requested by" { (text(operation, "requestedBy")) }
                                td data-label="Requested" { (text(operation, "requestedAt")) }
                                td data-label="Started" { (text(operation, "startedAt")) }
                                td data-label="Finished" { (text(operation, "finishedAt")) }
                                td data-label="Outcome" {
                                    (status(&text(operation, "outcome")))
                                    @let error = text(operation, "error");
                                    @if !error.is_empty() { div.error { (error) } }
                                }
                                td data-label="Steps" { (steps(operation)) }
                                td data-label="Trace" { (trace_link(trace_ui, &text(operation, "traceId"))) }
                            }
                        }
                    }
                }
            },
        }
    }
}

/// `GET /ui/clusters/{name}`: the cluster panel.
pub fn cluster(
    session: &Session,
    record: &Value,
    installations: &[Value],
    workitems: &[Value],
    history: Option<&[Value]>,
    trace_ui: Option<&str>,
) -> Markup {
    let name = text(record, "name");
    let back = format!("/ui/clusters/{name}");
    let body = html! {
        dl.props {
            dt { "Ingress default node" } dd { (text(record, "ingressDefaultNode")) }
        }
        div.actions {
            @if session.may(Action::RequestOperation) {
                a.button #deploy href={ "/ui/clusters/" (name) "/deploy" } { "Deploy" }
            }
            a.button.secondary href={ "/ui/clusters/" (name) "/templates" } download { "Worker templates" }
        }
        section #cluster-live data-live aria-live="polite" {
            h2 { "Installations" }
            (installations_table(installations))
            h2 { "Work in the queue" }
            (workitems_section(session, workitems, &back))
            @if session.profile() == "admin" {
                h2 { "Operation history" }
                (history_section(history, trace_ui))
            }
        }
    };
    layout(session, &format!("Cluster {name}"), body)
}

/// `GET /ui/installations`.
pub fn installations(session: &Session, installations: &[Value]) -> Markup {
    let body = html! {
        section #installations-live data-live aria-live="polite" {
            (installations_table(installations))
        }
    };
    layout(session, "K8s installations", body)
}

fn names(record: &Value, key: &str) -> String {
    record
        .get(key)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    item.as_str()
                        .map_or_else(|| item.to_string(), str::to_owned)
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// `GET /ui/installations/{name}`: the installation page.
pub fn installation(
    session: &Session,
    record: &Value,
    workitems: &[Value],
    documents: &[Value],
    history: Option<&[Value]>,
    trace_ui: Option<&str>,
) -> Markup {
    let name = text(record, "name");
    let cluster = text(record, "clusterName");
    let state = text(record, "installationStatus");
    let associated: Vec<&String> = record
        .as_object()
        .map(|map| {
            map.keys()
                .filter(|key| key.starts_with("k8sAssociated"))
                .collect()
        })
        .unwrap_or_default();
    let drift: Vec<(&String, &Value)> = record
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(key, _)| key.to_ascii_lowercase().contains("drift"))
                .collect()
        })
        .unwrap_or_default();
    let last = history.and_then(|operations| {
        operations
            .iter()
            .find(|operation| operation.get("steps").and_then(Value::as_array).is_some())
    });
    let admin = session.may(Action::RequestOperation);
    let body = html! {
        div.actions #installation-actions {
            @if admin {
                a.button #redeploy href={ "/ui/clusters/" (cluster) "/deploy?from=" (name) } { "Redeploy" }
                @for op in ["shutdown", "restart", "undeploy"] {
                    form.inline method="post" action={ "/ui/installations/" (name) "/command" } {
                        (csrf(session))
                        input type="hidden" name="op" value=(op);
                        button class=(if op == "undeploy" { "danger" } else { "" }) type="submit" #{ "op-" (op) } { (op) }
                    }
                }
                form.inline method="post" action={ "/ui/installations/" (name) "/command" } {
                    (csrf(session))
                    input type="hidden" name="op" value="fetchLogs";
                    div.field {
                        label for="pod-name" { "Pod (optional)" }
                        input #pod-name name="podName" type="text";
                    }
                    button type="submit" #op-fetchLogs { "fetchLogs" }
                }
            }
            @if session.may(Action::VerifyInstallation) {
                form.inline method="post" action={ "/ui/installations/" (name) "/command" } {
                    (csrf(session))
                    input type="hidden" name="op" value="verify";
                    button.secondary type="submit" #op-verify { "verify" }
                }
            }
        }
        section #installation-live data-live aria-live="polite" {
            dl.props #installation-props {
                dt { "installationStatus" } dd #installation-status { (status(&state)) }
                dt { "k8sState" } dd #k8s-state { (text(record, "k8sState")) }
                dt { "Cluster" } dd { a href={ "/ui/clusters/" (cluster) } { (cluster) } }
                dt { "Namespace" } dd { (text(record, "k8sNamespace")) }
                dt { "Replicas" } dd { (text(record, "replicaCount")) }
                dt { "Type" } dd { (text(record, "k8sInstallationType")) }
                dt { "Installed by" } dd { (text(record, "installedBy")) }
                dt { "Installed" } dd { (text(record, "installationDate")) }
                dt { "Last verified" } dd { (text(record, "lastVerifiedAt")) }
                @for key in &associated {
                    dt { (key) } dd { (names(record, key)) }
                }
            }
            @if state == "DAMAGED" {
                h2 { "Drift" }
                div.problems #drift {
                    p { (text(record, "k8sState")) }
                    @for (key, value) in &drift {
                        p { (key) ": " (value.as_str().map_or_else(|| value.to_string(), str::to_owned)) }
                    }
                }
            }
            @if session.may(Action::ReadWorkitems) {
                h2 { "Work in the queue" }
                (workitems_section(session, workitems, &format!("/ui/installations/{name}")))
            }
            @if let Some(operation) = last {
                h2 { "Last plan" }
                p.muted { (text(operation, "op")) " requested by " (text(operation, "requestedBy")) " at " (text(operation, "requestedAt")) ": " (text(operation, "outcome")) }
                div #last-plan { (steps(operation)) }
            }
            @if session.may(Action::ReadDocuments) {
                h2 { "Fetched logs" }
                @if documents.is_empty() {
                    p.muted #no-logs { "No fetched logs." }
                } @else {
                    ul #logs {
                        @for document in documents {
                            @let doc = text(document, "name");
                            li { a href={ "/ui/documents/" (super::session::document_path(&doc)) } { (doc) } }
                        }
                    }
                }
            }
            @if session.profile() == "admin" {
                h2 { "Operation history" }
                (history_section(history, trace_ui))
            }
        }
    };
    layout(session, &format!("Installation {name}"), body)
}

/// `GET /ui/documents/{name}`: a fetched log.
pub fn document(session: &Session, name: &str, content: &str, truncated: bool) -> Markup {
    let body = html! {
        @if truncated { p.flash { "Only the first MiB is shown." } }
        pre #document tabindex="0" { (content) }
    };
    layout(session, name, body)
}

//! A fuzz campaign over every route: each method × path of the router, with
//! generated JSON bodies (random, and shaped like each route's own bodies
//! with hostile numbers and strings), generated query parameters, and every
//! kind of caller (admin, user, worker token, a bad token, no token).
//!
//! The server runs in-process on loopback. The campaign asserts no request
//! panics (a panic hook counts them, even ones the server would catch), no
//! answer is a 5xx, every request is answered, and storage still serves
//! afterwards.
//!
//! Bounded by default (`K8SWORKER_FUZZ_CASES`, default 10 000 cases, and
//! `K8SWORKER_FUZZ_SECONDS`, default 60 s, whichever ends first); the cases
//! come from `K8SWORKER_FUZZ_SEED` (default fixed), so a failure replays.
//! The case count, seed and status counts are printed.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Client, TestServer};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Map, Value, json};

/// A small deterministic generator (SplitMix64), so a seed replays a campaign.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True with `percent` % probability.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Every route of the router: method and path template. `{name}` is one
/// generated path segment, `{*name}` one or more.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/api/v1/version"),
    ("GET", "/authenticate"),
    ("POST", "/authenticate/refresh"),
    ("GET", "/api/v1/resources/tokens"),
    ("POST", "/api/v1/resources/tokens"),
    ("DELETE", "/api/v1/resources/tokens/{name}"),
    ("GET", "/api/v1/resources/users"),
    ("POST", "/api/v1/resources/users"),
    ("GET", "/api/v1/resources/namespaces"),
    ("POST", "/api/v1/resources/namespaces"),
    ("GET", "/api/v1/resources/namespaces/{name}"),
    ("PUT", "/api/v1/resources/namespaces/{name}"),
    ("GET", "/api/v1/resources/k8sclusters"),
    ("POST", "/api/v1/resources/k8sclusters"),
    ("DELETE", "/api/v1/resources/k8sclusters"),
    ("POST", "/api/v1/resources/k8sclusters/select"),
    ("GET", "/api/v1/resources/k8sclusters/{name}"),
    ("PUT", "/api/v1/resources/k8sclusters/{name}"),
    ("DELETE", "/api/v1/resources/k8sclusters/{name}"),
    ("POST", "/api/v1/resources/k8sclusters/{name}/command"),
    (
        "GET",
        "/api/v1/resources/k8sclusters/{name}/workerTemplates",
    ),
    ("GET", "/api/v1/resources/k8sinstallations"),
    ("POST", "/api/v1/resources/k8sinstallations"),
    ("DELETE", "/api/v1/resources/k8sinstallations"),
    ("POST", "/api/v1/resources/k8sinstallations/select"),
    ("GET", "/api/v1/resources/k8sinstallations/{name}"),
    ("PUT", "/api/v1/resources/k8sinstallations/{name}"),
    ("PATCH", "/api/v1/resources/k8sinstallations/{name}"),
    ("DELETE", "/api/v1/resources/k8sinstallations/{name}"),
    ("POST", "/api/v1/resources/k8sinstallations/{name}/command"),
    ("POST", "/api/v1/resources/k8sinstallations/validate"),
    ("POST", "/api/v1/resources/k8sinstallations/preview"),
    ("GET", "/api/v1/resources/k8soperations"),
    ("POST", "/api/v1/resources/k8soperations/select"),
    ("GET", "/api/v1/resources/k8soperations/{name}"),
    ("GET", "/api/v1/resources/k8sworkitems"),
    ("DELETE", "/api/v1/resources/k8sworkitems"),
    ("POST", "/api/v1/resources/k8sworkitems"),
    ("POST", "/api/v1/resources/k8sworkitems/select"),
    ("GET", "/api/v1/resources/k8sworkitems/{name}"),
    ("DELETE", "/api/v1/resources/k8sworkitems/{name}"),
    ("PUT", "/api/v1/resources/k8sworkitems/{name}"),
    ("PATCH", "/api/v1/resources/k8sworkitems/{name}"),
    ("GET", "/api/v1/resources/documents"),
    ("POST", "/api/v1/resources/documents"),
    ("POST", "/api/v1/resources/documents/select"),
    ("GET", "/api/v1/resources/documents/{*name}"),
    ("DELETE", "/api/v1/resources/documents/{*name}"),
    ("GET", "/docs/{*name}"),
    ("GET", "/api/v1/resources/secrets"),
    ("POST", "/api/v1/resources/secrets"),
    ("GET", "/api/v1/resources/secrets/{name}"),
    ("PUT", "/api/v1/resources/secrets/{name}"),
    ("DELETE", "/api/v1/resources/secrets/{name}"),
    ("POST", "/api/v1/resources/procedures/{name}"),
    // The fallback: unknown resources and routes.
    ("GET", "/api/v1/resources/{name}"),
    ("POST", "/api/v1/resources/custom/{name}/{name}"),
    ("GET", "/{*name}"),
];

const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

const PROCEDURES: &[&str] = &[
    "K8sManager.addK8sWorkerProfile",
    "K8sManager.claimWorkitem",
    "K8sManager.renewWorkitemLease",
    "K8sManager.completeWorkitem",
    "K8sManager.failWorkitem",
    "K8sManager.releaseWorkitem",
    "K8sManager.nothing",
];

const OPS: &[&str] = &[
    "deploy",
    "undeploy",
    "shutdown",
    "restart",
    "verify",
    "fetchLogs",
    "nothing",
];

const CONFIG_TYPES: &[&str] = &[
    "image",
    "file",
    "inboundPort",
    "environmentVariable",
    "environmentVariables",
    "persistentVolumeRef",
    "annotation",
    "label",
    "hostAlias",
    "probe",
    "resourceRequest",
    "resourceLimit",
    "hardAffinity",
    "nothing",
];

/// Property names the routes read, so generated objects reach the checks.
const KEYS: &[&str] = &[
    "name",
    "profiles",
    "profile",
    "expiresAt",
    "username",
    "password",
    "adminUsername",
    "adminPassword",
    "limits",
    "k8sResources",
    "vCPU",
    "memory",
    "gpuNvidia",
    "lifecycleOperationCount",
    "ingressDefaultNode",
    "op",
    "data",
    "config",
    "type",
    "value",
    "values",
    "k8sNamespace",
    "replicaCount",
    "clusterName",
    "workerId",
    "waitSeconds",
    "leaseSeconds",
    "requestId",
    "leaseId",
    "installation",
    "installationStatus",
    "status",
    "message",
    "targetNamespace",
    "token",
    "where",
    "props",
    "sort",
    "limit",
    "page",
    "count",
    "upsert",
    "port",
    "portName",
    "protocol",
    "cpu",
    "nvidiaGpu",
    "asSecret",
    "secretName",
    "content",
    "contentName",
    "filename",
    "path",
    "key",
    "host",
    "hostIP",
    "clusterIP",
    "serviceType",
    "probeType",
    "periodSeconds",
    "timeoutSeconds",
    "initialDelaySeconds",
    "failureThreshold",
    "successThreshold",
    "commands",
    "headers",
    "pullPolicy",
    "imagePullSecret",
    "serviceAccount",
    "_id",
    "ars_version",
    "ars_namespace",
];

/// Numbers at the edges of every range a request may carry.
fn number(rng: &mut Rng) -> Value {
    match rng.below(22) {
        0 => json!(0),
        1 => json!(1),
        2 => json!(-1),
        3 => json!(i64::MAX),
        4 => json!(i64::MIN),
        5 => json!(u64::MAX),
        6 => json!(1e308),
        7 => json!(-1e308),
        8 => json!(0.5),
        9 => json!(253_402_300_800_000_i64),
        10 => json!(253_402_300_799_999_i64),
        11 => json!(1_i64 << 53),
        12 => json!((1_i64 << 53) - 1),
        13 => json!(i64::MAX - 1),
        14 => json!(65_535),
        15 => json!(65_536),
        16 => json!(u32::MAX),
        17 => json!(i32::MAX as i64 + 1),
        18 => json!(1e-300),
        19 => json!(-0.0),
        20 => json!(rng.next() as i64),
        _ => json!(rng.below(100)),
    }
}

/// Strings a hostile caller would try: empty, huge, control characters,
/// paths, quantities and dates out of range, regular expressions.
fn string(rng: &mut Rng) -> String {
    match rng.below(30) {
        0 => String::new(),
        1 => "a".repeat(1 + rng.below(5000)),
        2 => "ü日本\u{1F600}".into(),
        3 => "../../etc/passwd".into(),
        4 => "\u{0}\u{7}\r\n".into(),
        5 => "99999999999999999999Ei".into(),
        6 => "1e400".into(),
        7 => "-1".into(),
        8 => "1.5Gi".into(),
        9 => "9999-12-31T23:59:59Z".into(),
        10 => "10000-01-01T00:00:00Z".into(),
        11 => "0001-01-01T00:00:00Z".into(),
        12 => "(a+)+$".into(),
        13 => "[".into(),
        14 => "admin".into(),
        15 => "k8sWorker__system".into(),
        16 => "self".into(),
        17 => "c1".into(),
        18 => "app".into(),
        19 => "user".into(),
        20 => "system".into(),
        21 => "%00%2F".into(),
        22 => "9223372036854775808".into(),
        23 => "nginx:1.27".into(),
        24 => "100m".into(),
        25 => "true".into(),
        26 => "{\"$regex\":\"a\"}".into(),
        27 => "x".repeat(254),
        28 => format!("n{}", rng.next() % 1000),
        _ => format!("{:x}", rng.next()),
    }
}

/// Any JSON value, objects biased to the property names the routes read.
fn value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth >= 4 { 4 } else { 7 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => number(rng),
        3 => json!(string(rng)),
        4 => Value::Array((0..rng.below(5)).map(|_| value(rng, depth + 1)).collect()),
        5 => config_entry(rng, depth + 1),
        _ => object(rng, depth + 1),
    }
}

/// Properties the server reads as numbers.
const NUMERIC_KEYS: &[&str] = &[
    "expiresAt",
    "lifecycleOperationCount",
    "replicaCount",
    "waitSeconds",
    "leaseSeconds",
    "limit",
    "page",
    "port",
    "periodSeconds",
    "timeoutSeconds",
    "initialDelaySeconds",
    "failureThreshold",
    "successThreshold",
    "ars_version",
];

/// A value for property `key`: mostly a number at an edge for a numeric
/// property, anything otherwise.
fn value_for(rng: &mut Rng, key: &str, depth: usize) -> Value {
    if NUMERIC_KEYS.contains(&key) && rng.chance(70) {
        number(rng)
    } else {
        value(rng, depth)
    }
}

fn object(rng: &mut Rng, depth: usize) -> Value {
    let mut map = Map::new();
    for _ in 0..rng.below(6) {
        let key = if rng.chance(80) {
            (*rng.pick(KEYS)).to_owned()
        } else {
            string(rng)
        };
        let value = value_for(rng, &key, depth + 1);
        map.insert(key, value);
    }
    Value::Object(map)
}

/// A name: mostly a fixture's or a plain one, sometimes anything.
fn name(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!(rng.pick(&["c1", "app", "s1", "t", "self"])),
        1 => json!(format!("n{}", rng.below(50))),
        2 => json!(string(rng)),
        _ => value(rng, 3),
    }
}

/// A Kubernetes quantity, valid or not.
fn quantity(rng: &mut Rng) -> Value {
    match rng.below(3) {
        0 => number(rng),
        1 => json!(rng.pick(&[
            "1",
            "100m",
            "1.5Gi",
            "99999999999999999999Ei",
            "1e400",
            "-1",
            "0.000000001",
            "9223372036854775807k",
            "0.0147573952589676412927Ei",
        ])),
        _ => json!(string(rng)),
    }
}

fn config_entry(rng: &mut Rng, depth: usize) -> Value {
    let mut entry = match object(rng, depth.max(3)) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let kind = *rng.pick(CONFIG_TYPES);
    entry.insert("type".into(), json!(kind));
    match kind {
        "resourceRequest" | "resourceLimit" => {
            for key in ["cpu", "memory", "nvidiaGpu"] {
                if rng.chance(60) {
                    entry.insert(key.into(), quantity(rng));
                }
            }
        }
        "inboundPort" => {
            entry.insert("port".into(), number(rng));
        }
        _ => {}
    }
    if rng.chance(60) {
        entry.insert("name".into(), json!(string(rng)));
    }
    Value::Object(entry)
}

/// A deploy's `data`, shaped enough to reach validation, quotas and storage.
fn deploy_data(rng: &mut Rng) -> Value {
    let mut data = json!({
        "name": if rng.chance(70) { "app".to_owned() } else { string(rng) },
        "k8sNamespace": if rng.chance(70) { "apps".to_owned() } else { string(rng) },
        "config": (0..rng.below(5)).map(|_| config_entry(rng, 2)).collect::<Vec<_>>(),
    });
    if rng.chance(50) {
        data["replicaCount"] = number(rng);
    }
    if rng.chance(30) {
        let key = *rng.pick(KEYS);
        data[key] = value_for(rng, key, 2);
    }
    data
}

/// A `where` clause: property conditions with Vantiq's operators.
fn where_clause(rng: &mut Rng, depth: usize) -> Value {
    let operators = [
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$in",
        "$nin",
        "$all",
        "$size",
        "$exists",
        "$regex",
        "$options",
        "$elemMatch",
        "$not",
        "$and",
        "$or",
        "$nor",
        "$bogus",
    ];
    let mut clause = Map::new();
    for _ in 0..1 + rng.below(3) {
        let op = *rng.pick(&operators);
        let operand = match op {
            "$and" | "$or" | "$nor" if depth < 3 => {
                json!(
                    (0..rng.below(3))
                        .map(|_| where_clause(rng, depth + 1))
                        .collect::<Vec<_>>()
                )
            }
            "$not" | "$elemMatch" if depth < 3 => where_clause(rng, depth + 1),
            _ => value(rng, 3),
        };
        if op.starts_with("$and") || op.starts_with("$or") || op.starts_with("$nor") {
            clause.insert(op.into(), operand);
        } else {
            let key = if rng.chance(80) {
                (*rng.pick(KEYS)).to_owned()
            } else {
                string(rng)
            };
            clause.insert(key, json!({ op: operand }));
        }
    }
    Value::Object(clause)
}

/// The body a route expects, with hostile values inside.
fn shaped_body(rng: &mut Rng, path: &str) -> Value {
    if path.ends_with("/command") {
        let mut body = json!({"op": rng.pick(OPS), "data": deploy_data(rng)});
        if rng.chance(10) {
            body[*rng.pick(KEYS)] = value(rng, 2);
        }
        return body;
    }
    if path.ends_with("/validate") || path.ends_with("/preview") {
        let mut body = deploy_data(rng);
        if rng.chance(60) {
            body["clusterName"] = if rng.chance(70) {
                json!("c1")
            } else {
                value(rng, 2)
            };
        }
        return body;
    }
    if path.ends_with("/select") {
        let mut body = Map::new();
        for key in ["where", "props", "sort", "limit", "page", "count"] {
            if rng.chance(50) {
                let v = match key {
                    "where" => where_clause(rng, 0),
                    "limit" | "page" => number(rng),
                    _ => value(rng, 2),
                };
                body.insert(key.into(), v);
            }
        }
        return Value::Object(body);
    }
    if path.contains("/procedures/") {
        let mut params = json!({
            "clusterName": if rng.chance(70) { json!("c1") } else { value(rng, 3) },
            "waitSeconds": number(rng),
            "leaseSeconds": number(rng),
            "requestId": value(rng, 3),
            "leaseId": value(rng, 3),
        });
        if rng.chance(50) {
            params["installation"] = deploy_data(rng);
        }
        if rng.chance(30) {
            params["steps"] = if rng.chance(60) {
                json!([{"action": value(rng, 1), "kind": "StatefulSet", "name": value(rng, 1), "reason": value(rng, 1)}])
            } else {
                value(rng, 3)
            };
        }
        if rng.chance(30) {
            params["traceId"] = value(rng, 1);
        }
        if rng.chance(30) {
            let key = *rng.pick(KEYS);
            params[key] = value_for(rng, key, 2);
        }
        return params;
    }
    let resource = path
        .trim_start_matches("/api/v1/resources/")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut body = match resource {
        "tokens" => json!({
            "name": name(rng),
            "profiles": match rng.below(4) {
                0 => json!(["admin"]),
                1 => json!(["user"]),
                2 => json!(["k8sWorker__system"]),
                _ => value(rng, 3),
            },
            "expiresAt": value_for(rng, "expiresAt", 3),
        }),
        "users" => json!({
            "username": name(rng),
            "password": if rng.chance(50) { json!("a-password") } else { value(rng, 3) },
            "profiles": if rng.chance(50) { json!(["user"]) } else { value(rng, 3) },
        }),
        "namespaces" => json!({
            "name": name(rng),
            "adminUsername": name(rng),
            "adminPassword": if rng.chance(50) { json!("a-password") } else { value(rng, 3) },
            "limits": {"k8sResources": {
                "vCPU": quantity(rng),
                "memory": quantity(rng),
                "gpuNvidia": quantity(rng),
            }},
        }),
        "k8sclusters" => json!({
            "name": name(rng),
            "lifecycleOperationCount": value_for(rng, "lifecycleOperationCount", 3),
            "ingressDefaultNode": if rng.chance(50) { json!("node") } else { value(rng, 3) },
        }),
        "secrets" => json!({
            "name": name(rng),
            "secret": value(rng, 3),
            "description": value(rng, 3),
        }),
        _ => object(rng, 1),
    };
    // Drop or add a property now and then.
    if let Value::Object(map) = &mut body {
        if rng.chance(20) && !map.is_empty() {
            let key = map
                .keys()
                .nth(rng.below(map.len()))
                .cloned()
                .unwrap_or_default();
            map.remove(&key);
        }
        if rng.chance(20) {
            let key = (*rng.pick(KEYS)).to_owned();
            let value = value_for(rng, &key, 2);
            map.insert(key, value);
        }
    }
    body
}

/// Percent-encodes everything but RFC 3986's unreserved characters (and
/// `/` when `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) || (keep_slash && byte == b'/') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Names of the fixtures, so generated paths hit existing instances too.
struct Fixtures {
    names: Vec<String>,
}

fn segment(rng: &mut Rng, fixtures: &Fixtures) -> String {
    if rng.chance(50) {
        rng.pick(&fixtures.names).clone()
    } else if rng.chance(50) {
        rng.pick(PROCEDURES).to_string()
    } else {
        string(rng)
    }
}

fn path_for(rng: &mut Rng, template: &str, fixtures: &Fixtures) -> String {
    let mut path = String::new();
    for part in template.split('/').skip(1) {
        path.push('/');
        match part {
            "{name}" => {
                let name = segment(rng, fixtures);
                path.push_str(&encode(&name, false));
            }
            "{*name}" => {
                let mut name = segment(rng, fixtures);
                if rng.chance(30) {
                    name = format!("{name}/{}", segment(rng, fixtures));
                }
                path.push_str(&encode(&name, true));
            }
            literal => path.push_str(literal),
        }
    }
    path
}

fn query_for(rng: &mut Rng, tokens: &[String]) -> String {
    if rng.chance(50) {
        return String::new();
    }
    let mut pairs = Vec::new();
    for _ in 0..1 + rng.below(4) {
        let key = *rng.pick(&[
            "where", "props", "sort", "limit", "page", "count", "upsert", "token", "url", "x",
        ]);
        let value = match key {
            "where" => where_clause(rng, 0).to_string(),
            "props" | "sort" => value(rng, 2).to_string(),
            "limit" | "page" => rng
                .pick(&[
                    "0",
                    "-1",
                    "1",
                    "3",
                    "18446744073709551616",
                    "9223372036854775807",
                    "abc",
                    "",
                ])
                .to_string(),
            "count" | "upsert" => rng.pick(&["true", "false", "yes", ""]).to_string(),
            "url" if rng.chance(50) => rng
                .pick(&[
                    "https://cp.example:8080",
                    "http://a b",
                    "ftp://x",
                    "https://x/#y",
                ])
                .to_string(),
            "token" if rng.chance(50) => rng.pick(tokens).clone(),
            _ => string(rng),
        };
        pairs.push(format!("{key}={}", encode(&value, false)));
    }
    format!("?{}", pairs.join("&"))
}

/// The body bytes and content type of a case.
fn body_for(rng: &mut Rng, method: &str, path: &str) -> Option<(Vec<u8>, &'static str)> {
    if method == "GET" && rng.chance(80) {
        return None;
    }
    if path == "/api/v1/resources/documents" && rng.chance(60) {
        let boundary = "fuzzboundary";
        let name = string(rng);
        let content = string(rng);
        let field = rng.pick(&["file", "name", "x"]);
        let body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\nContent-Type: {}\r\n\r\n{content}\r\n--{boundary}--\r\n",
            rng.pick(&["text/plain", "application/json", "text/html", ""])
        );
        return Some((
            body.into_bytes(),
            "multipart/form-data; boundary=fuzzboundary",
        ));
    }
    match rng.below(20) {
        0 => Some((b"{not json".to_vec(), "application/json")),
        1 => Some((Vec::new(), "application/json")),
        2 => Some((vec![b'['; 300 * 1024], "application/json")),
        3 => Some((b"{\"name\":\"x\"}".to_vec(), "text/plain")),
        4..=8 => Some((value(rng, 0).to_string().into_bytes(), "application/json")),
        _ => Some((
            shaped_body(rng, path).to_string().into_bytes(),
            "application/json",
        )),
    }
}

/// Who sends a case.
#[derive(Clone, Copy, Debug)]
enum Caller {
    Admin,
    User,
    Worker,
    BadToken,
    Anonymous,
    Basic,
}

struct Case {
    method: Method,
    path: String,
    caller: Caller,
    body: Option<(Vec<u8>, &'static str)>,
    basic: (String, String),
}

fn generate(rng: &mut Rng, index: usize, fixtures: &Fixtures, tokens: &[String]) -> Case {
    let (route_method, template) = ROUTES[index % ROUTES.len()];
    let method = if rng.chance(90) {
        route_method
    } else {
        *rng.pick(METHODS)
    };
    let path = format!(
        "{}{}",
        path_for(rng, template, fixtures),
        query_for(rng, tokens)
    );
    let caller = *rng.pick(&[
        Caller::Admin,
        Caller::Admin,
        Caller::User,
        Caller::Worker,
        Caller::Worker,
        Caller::BadToken,
        Caller::Anonymous,
        Caller::Basic,
    ]);
    let body = body_for(rng, method, &path);
    let basic = (
        rng.pick(&["admin", "nobody", "", "user"]).to_string(),
        string(rng),
    );
    Case {
        method: Method::from_bytes(method.as_bytes()).unwrap(),
        path,
        caller,
        body,
        basic,
    }
}

struct Callers {
    admin: Client,
    user: Client,
    worker: Client,
    base: String,
    http: reqwest::Client,
}

/// Sends a case; the status and how many times it was resent, or why no
/// answer came.
///
/// A connection the server closed after answering an earlier request
/// without reading its body (a 401 or 413 before a large body, as HTTP
/// allows) can fail the next request sent on it in the client's pool, or a
/// body still being written; such a transport error is resent, up to twice,
/// on a fresh connection. A case that still gets no answer fails.
async fn send(callers: &Callers, case: &Case) -> Result<(u16, usize), String> {
    let mut last = String::new();
    for attempt in 0..3 {
        match send_once(callers, case).await {
            Ok(status) => return Ok((status, attempt)),
            Err(error) => last = error,
        }
    }
    Err(last)
}

async fn send_once(callers: &Callers, case: &Case) -> Result<u16, String> {
    let url = format!("{}{}", callers.base, case.path);
    let mut request = callers.http.request(case.method.clone(), &url);
    request = match case.caller {
        Caller::Admin => request.bearer_auth(&callers.admin.token),
        Caller::User => request.bearer_auth(&callers.user.token),
        Caller::Worker => request.bearer_auth(&callers.worker.token),
        Caller::BadToken => request.bearer_auth("not-a-token"),
        Caller::Anonymous => request,
        Caller::Basic => request.basic_auth(&case.basic.0, Some(&case.basic.1)),
    };
    if let Some((bytes, content_type)) = &case.body {
        request = request
            .header(reqwest::header::CONTENT_TYPE, *content_type)
            .body(bytes.clone());
    }
    let response = request.send().await.map_err(|error| chain(&error))?;
    let status = response.status().as_u16();
    response.bytes().await.map_err(|error| chain(&error))?;
    Ok(status)
}

/// An error and its sources, on one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_on_any_route_panics_or_answers_5xx() {
    // Count every panic in the process, caught or not.
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&panics);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));

    let cases = env_number("K8SWORKER_FUZZ_CASES", 10_000) as usize;
    let budget = Duration::from_secs(env_number("K8SWORKER_FUZZ_SECONDS", 60));
    let seed = env_number("K8SWORKER_FUZZ_SEED", 0x6b38_7377_6f72_6b72);

    let t = TestServer::start_with(|config| {
        // Claims wait briefly, so a long poll never holds the campaign.
        config.max_claim_wait = Duration::from_millis(100);
    })
    .await;
    // Fixtures: a cluster with an installation and a pending workitem, a
    // document, a secret, a user and a worker.
    t.admin.create_cluster("c1").await;
    let workitem = t.admin.deploy("c1", "app").await;
    let request_id = workitem["requestId"].as_str().unwrap().to_owned();
    let (status, body) = t
        .admin
        .post(
            "/api/v1/resources/secrets",
            json!({"name": "s1", "secret": "v"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::text("hello").file_name("doc.txt"),
    );
    let (status, _, body) = t
        .admin
        .send(
            t.admin
                .request(Method::POST, "/api/v1/resources/documents")
                .multipart(form),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let user = t.user().await;
    let worker = t.worker().await;
    let fixtures = Fixtures {
        names: vec![
            "c1".into(),
            "app".into(),
            "self".into(),
            "s1".into(),
            "doc.txt".into(),
            "system".into(),
            request_id,
        ],
    };
    let tokens = vec![
        t.admin.token.clone(),
        user.token.clone(),
        worker.token.clone(),
    ];
    let callers = Callers {
        admin: t.admin.clone(),
        user,
        worker,
        base: t.base.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };

    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut sent = 0;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut resends = 0;
    while sent < cases && started.elapsed() < budget {
        let batch: Vec<Case> = (sent..cases.min(sent + 64))
            .map(|index| generate(&mut rng, index, &fixtures, &tokens))
            .collect();
        sent += batch.len();
        let answers: Vec<_> = futures::stream::iter(batch.iter())
            .map(|case| {
                let callers = &callers;
                async move { (case, send(callers, case).await) }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        for (case, answer) in answers {
            match answer {
                Ok((status, resent)) => {
                    resends += resent;
                    *statuses.entry(status).or_default() += 1;
                    if status >= 500 {
                        failures.push(format!(
                            "{status} for {:?} {} {} as {:?}",
                            case.method,
                            case.path.chars().take(300).collect::<String>(),
                            case.body
                                .as_ref()
                                .map(|(bytes, _)| String::from_utf8_lossy(
                                    &bytes[..bytes.len().min(500)]
                                )
                                .into_owned())
                                .unwrap_or_default(),
                            case.caller
                        ));
                    }
                }
                Err(error) => failures.push(format!(
                    "no answer for {:?} {} as {:?}: {error}",
                    case.method,
                    case.path.chars().take(300).collect::<String>(),
                    case.caller
                )),
            }
        }
    }
    let panicked = panics.load(Ordering::SeqCst);
    println!(
        "fuzz campaign: {sent} cases over {} routes in {:.1} s, seed {seed}, statuses {statuses:?}, {resends} resent after a closed connection, {} failures, {panicked} panics",
        ROUTES.len(),
        started.elapsed().as_secs_f64(),
        failures.len(),
    );
    assert!(
        sent >= ROUTES.len(),
        "the budget ended before every route got a case"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(panicked, 0, "requests panicked; see the log above");

    // Storage still serves: readiness, a write and a read.
    let http = common::http();
    let response = http.get(format!("{}/readyz", t.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    t.admin.create_cluster("after-fuzz").await;
    let (status, body) = t
        .admin
        .get("/api/v1/resources/k8sclusters/after-fuzz")
        .await;
    assert_eq!(status, 200, "{body}");
    t.stop().await;
}

//! Every Kubernetes API request the executor makes passes through here.
//!
//! Two tower layers sit on the kube client: [`CountLayer`] classifies each
//! request the way RBAC and audit logs name it (verb + resource), adds it to
//! the operation's [`ApiCalls`] and the process-wide one, and opens one span
//! per call; [`RateLimitLayer`] makes it wait for a token of a shared
//! [`TokenBucket`] (QPS with a burst), so a burst of plans cannot flood the
//! API server. The counts are what tests assert on ("a no-op re-deploy makes
//! zero writes") and what the executor logs after each operation.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use http::{Method, Request, Response, Uri};
use tower::{Layer, Service, ServiceExt as _};
use tracing::Instrument as _;

/// One kind of API request: `get configmaps`, `patch statefulsets/scale`, …
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApiCall {
    /// The Kubernetes verb: get, list, watch, create, update, patch, delete,
    /// deletecollection.
    pub verb: &'static str,
    /// The resource, with `/subresource` when there is one.
    pub resource: String,
}

impl ApiCall {
    /// Whether the request changes state on the server.
    pub fn is_write(&self) -> bool {
        !matches!(self.verb, "get" | "list" | "watch")
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Classifies a request by method and path, e.g.
/// `PATCH /apis/apps/v1/namespaces/a/statefulsets/web/scale` →
/// `patch statefulsets/scale`.
pub fn classify(method: &Method, uri: &Uri) -> (ApiCall, Option<String>) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        other => {
            let verb = if method == Method::GET {
                "get"
            } else {
                "other"
            };
            return (
                ApiCall {
                    verb,
                    resource: format!("/{}", other.join("/")),
                },
                None,
            );
        }
    };
    let rest = match rest {
        ["namespaces", _namespace, resource, tail @ ..] => {
            let mut within = vec![*resource];
            within.extend_from_slice(tail);
            within
        }
        other => other.to_vec(),
    };
    let resource = rest.first().copied().unwrap_or_default();
    let name = rest.get(1).map(|name| name.to_string());
    let resource = match rest.get(2) {
        Some(subresource) => format!("{resource}/{subresource}"),
        None => resource.to_string(),
    };
    let watching = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if name.is_some() => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (ApiCall { verb, resource }, name)
}

/// A tally of API calls; clones share it.
#[derive(Clone, Debug, Default)]
pub struct ApiCalls {
    counts: Arc<Mutex<BTreeMap<ApiCall, u64>>>,
}

impl ApiCalls {
    pub fn record(&self, call: &ApiCall) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry(call.clone()).or_default() += 1;
    }

    /// The calls so far, by kind.
    pub fn snapshot(&self) -> BTreeMap<ApiCall, u64> {
        self.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Calls that change state on the server.
    pub fn writes(&self) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(call, _)| call.is_write())
            .map(|(_, n)| n)
            .sum()
    }

    /// `get configmaps=3 patch statefulsets=1`, for a log line.
    pub fn summary(&self) -> String {
        self.snapshot()
            .iter()
            .map(|(call, n)| format!("{} {}={n}", call.verb, call.resource))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Counts requests into every tally it holds and opens one span per call.
#[derive(Clone, Debug)]
pub struct CountLayer {
    tallies: Vec<ApiCalls>,
}

impl CountLayer {
    pub fn new(tallies: Vec<ApiCalls>) -> Self {
        CountLayer { tallies }
    }
}

impl<S> Layer<S> for CountLayer {
    type Service = Count<S>;
    fn layer(&self, inner: S) -> Count<S> {
        Count {
            inner,
            tallies: self.tallies.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Count<S> {
    inner: S,
    tallies: Vec<ApiCalls>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> Service<Request<B>> for Count<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (call, name) = classify(request.method(), request.uri());
        for tally in &self.tallies {
            tally.record(&call);
        }
        let span = tracing::info_span!(
            "kube",
            otel.name = %call,
            otel.kind = "client",
            k8s.verb = call.verb,
            k8s.resource = %call.resource,
            k8s.name = name.as_deref().unwrap_or(""),
            http.status_code = tracing::field::Empty,
        );
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let response = response.await;
                if let Ok(response) = &response {
                    tracing::Span::current().record("http.status_code", response.status().as_u16());
                }
                response
            }
            .instrument(span),
        )
    }
}

/// A token bucket: `qps` tokens per second, at most `burst` saved up.
/// Waiters reserve tokens ahead, so they are served in arrival order.
#[derive(Debug)]
pub struct TokenBucket {
    qps: f64,
    burst: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    tokens: f64,
    updated: tokio::time::Instant,
}

impl TokenBucket {
    /// A bucket that starts full. `qps` must be positive; `burst` is at least 1.
    pub fn new(qps: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            qps: qps.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new(BucketState {
                tokens: burst,
                updated: tokio::time::Instant::now(),
            }),
        }
    }

    /// Takes one token, waiting for it when the bucket is empty.
    pub async fn acquire(&self) {
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let refill = now.duration_since(state.updated).as_secs_f64() * self.qps;
            state.tokens = (state.tokens + refill).min(self.burst) - 1.0;
            state.updated = now;
            (state.tokens < 0.0).then(|| Duration::from_secs_f64(-state.tokens / self.qps))
        };
        if let Some(wait) = wait {
            tracing::debug!(wait_ms = wait.as_millis() as u64, "client-side rate limit");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Makes every request wait for a token of a shared [`TokenBucket`].
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    bucket: Arc<TokenBucket>,
}

impl RateLimitLayer {
    pub fn new(bucket: Arc<TokenBucket>) -> Self {
        RateLimitLayer { bucket }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            bucket: self.bucket.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    bucket: Arc<TokenBucket>,
}

impl<S, Req> Service<Req> for RateLimit<S>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    Req: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is awaited after the token, on a clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let bucket = self.bucket.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            bucket.acquire().await;
            inner.oneshot(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_call(method: Method, uri: &str) -> (String, Option<String>) {
        let (call, name) = classify(&method, &uri.parse().unwrap());
        (call.to_string(), name)
    }

    #[test]
    fn classifies_like_rbac_names_requests() {
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps/c",
                "get configmaps",
                Some("c"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/configmaps?labelSelector=x",
                "list configmaps",
                None,
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/statefulsets?fieldSelector=metadata.name%3Dweb&watch=true&resourceVersion=5",
                "watch statefulsets",
                None,
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/statefulsets/web?fieldManager=k8sworker&force=true",
                "patch statefulsets",
                Some("web"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/statefulsets/web/scale",
                "patch statefulsets/scale",
                Some("web"),
            ),
            (
                Method::DELETE,
                "/apis/networking.k8s.io/v1/namespaces/a/ingresses/i",
                "delete ingresses",
                Some("i"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/pods",
                "deletecollection pods",
                None,
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/events",
                "create events",
                None,
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/web-0/log?limitBytes=10",
                "get pods/log",
                Some("web-0"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a",
                "get namespaces",
                Some("a"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/configmaps/c",
                "update configmaps",
                Some("c"),
            ),
            (Method::GET, "/version", "get /version", None),
        ];
        for (method, uri, expected, name) in cases {
            assert_eq!(
                mk_call(method, uri),
                (expected.to_string(), name.map(String::from)),
                "{uri}"
            );
        }
    }

    #[test]
    fn writes_are_everything_but_reads() {
        let calls = ApiCalls::default();
        for (verb, resource) in [
            ("get", "configmaps"),
            ("list", "secrets"),
            ("watch", "pods"),
            ("patch", "statefulsets"),
            ("delete", "services"),
            ("get", "configmaps"),
        ] {
            calls.record(&ApiCall {
                verb,
                resource: resource.into(),
            });
        }
        assert_eq!(calls.total(), 6);
        assert_eq!(calls.writes(), 2);
        assert_eq!(
            calls.summary(),
            "delete services=1 get configmaps=2 list secrets=1 patch statefulsets=1 watch pods=1"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_paces_at_qps() {
        let bucket = TokenBucket::new(10.0, 3);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst costs no wait");
        for _ in 0..5 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.49..0.52).contains(&elapsed),
            "5 more tokens at 10 qps: {elapsed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_service_counts_and_waits() {
        let calls = ApiCalls::default();
        let bucket = Arc::new(TokenBucket::new(1.0, 1));
        let service = tower::service_fn(|_request: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let mut stack = tower::ServiceBuilder::new()
            .layer(CountLayer::new(vec![calls.clone()]))
            .layer(RateLimitLayer::new(bucket))
            .service(service);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            let request = Request::get("/api/v1/namespaces/a/configmaps/c")
                .body(())
                .unwrap();
            stack.ready().await.unwrap().call(request).await.unwrap();
        }
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(calls.summary(), "get configmaps=3");
    }
}

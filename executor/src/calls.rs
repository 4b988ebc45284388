//! Every Kubernetes API request the executor makes passes through here.
//!
//! Two tower layers sit on the kube client: [`CountLayer`] classifies each
//! request the way RBAC and audit logs name it (verb + resource), adds it to
//! the operation's [`ApiCalls`] and the process-wide one, and opens one span
//! per call, and counts how it ended in the executor's metrics
//! ([`crate::metrics`]); [`RateLimitLayer`] makes it wait until a shared
//! [`ApiRateLimiter`] (governor; QPS with a burst) admits it, so a burst of
//! plans cannot flood the API server. The counts are what tests assert on
//! ("a no-op re-deploy makes zero writes") and what the executor logs after
//! each operation. A write sent as a server-side dry run (`dryRun=All`) is
//! counted apart: it persists nothing, so it is neither a read nor a write.

use std::{
    collections::BTreeMap,
    fmt,
    future::Future,
    num::NonZeroU32,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use governor::{
    Quota, RateLimiter,
    clock::Clock,
    middleware::NoOpMiddleware,
    state::{InMemoryState, NotKeyed},
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
    /// A server-side dry run (`dryRun=All`): the API server checks the
    /// write (validation, admission, quota) and persists nothing.
    pub dry_run: bool,
}

impl ApiCall {
    /// Whether the request changes state on the server: a verb other than
    /// get, list or watch, not as a dry run.
    pub fn is_write(&self) -> bool {
        !self.is_read() && !self.dry_run
    }

    /// Whether the request only reads (get, list, watch).
    pub fn is_read(&self) -> bool {
        matches!(self.verb, "get" | "list" | "watch")
    }

    /// Whether the request is a write sent as a server-side dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run && !self.is_read()
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if self.dry_run {
            f.write_str(" (dry run)")?;
        }
        Ok(())
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
                    dry_run: false,
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
    let pairs = || uri.query().into_iter().flat_map(|query| query.split('&'));
    let watching = pairs().any(|pair| pair == "watch=true" || pair == "watch=1");
    let dry_run = pairs().any(|pair| pair == "dryRun=All");
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
    (
        ApiCall {
            verb,
            resource,
            dry_run,
        },
        name,
    )
}

/// A tally of API calls; clones share it.
#[derive(Clone, Debug, Default)]
pub struct ApiCalls {
    counts: Arc<Mutex<BTreeMap<ApiCall, u64>>>,
}

impl ApiCalls {
    /// Adds one `call`.
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

    /// Every call so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Calls that change state on the server.
    pub fn writes(&self) -> u64 {
        self.count(ApiCall::is_write)
    }

    /// Writes sent as server-side dry runs (nothing persisted).
    pub fn dry_runs(&self) -> u64 {
        self.count(ApiCall::is_dry_run)
    }

    /// Calls that only read (get, list, watch).
    pub fn reads(&self) -> u64 {
        self.count(ApiCall::is_read)
    }

    /// The calls `which` selects.
    pub fn count(&self, which: impl Fn(&ApiCall) -> bool) -> u64 {
        self.snapshot()
            .iter()
            .filter(|(call, _)| which(call))
            .map(|(_, n)| n)
            .sum()
    }

    /// `get configmaps=3 patch statefulsets=1 patch ingresses (dry run)=1`,
    /// for a log line.
    pub fn summary(&self) -> String {
        self.snapshot()
            .iter()
            .map(|(call, n)| format!("{call}={n}"))
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
    /// A layer counting into each of `tallies`.
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

/// The service [`CountLayer`] makes: counts, spans, then calls the inner
/// service.
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
            k8s.dry_run = call.dry_run,
            http.response.status_code = tracing::field::Empty,
        );
        let response = span.in_scope(|| self.inner.call(request));
        // Counted however the request ends, dropped unanswered included (a
        // watch given up when health settled).
        let mut counted =
            crate::metrics::ApiRequest::start(call.verb, call.resource.clone(), call.dry_run);
        Box::pin(
            async move {
                let response = response.await;
                match &response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        tracing::Span::current().record("http.response.status_code", status);
                        counted.answered(status);
                    }
                    Err(_) => counted.failed(),
                }
                response
            }
            .instrument(span),
        )
    }
}

/// The client-side limit on API requests, as governor's GCRA limiter
/// (equivalent to a token bucket): `qps` requests per second sustained, up to
/// `burst` at once after a quiet period. Shared by every operation's client.
pub type ApiRateLimiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Builds the shared limiter: `qps` requests per second (positive; anything
/// else allows one request per year), bursts of at most `burst` (at least 1).
pub fn api_rate_limiter(qps: f64, burst: u32) -> ApiRateLimiter {
    RateLimiter::direct_with_clock(quota(qps, burst), TokioClock::default())
}

/// The governor quota for `qps` and `burst`: one request replenished every
/// `1/qps` seconds (clamped to one nanosecond … one year), `burst` at once.
pub fn quota(qps: f64, burst: u32) -> Quota {
    const YEAR: f64 = 365.0 * 24.0 * 3600.0;
    let period = if qps > 0.0 {
        (1.0 / qps).clamp(1e-9, YEAR)
    } else {
        YEAR
    };
    let period = Duration::from_secs_f64(period).max(Duration::from_nanos(1));
    Quota::with_period(period)
        .expect("the period is at least one nanosecond")
        .allow_burst(NonZeroU32::new(burst.max(1)).expect("burst is at least 1"))
}

/// Governor's view of tokio's clock: the time since the clock was made.
///
/// The limiter reads the same clock the executor sleeps on
/// (`tokio::time`), so a waiting request yields to the runtime's timer and
/// tests that pause tokio's time see the limiter's time stand still or jump
/// with it.
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// Waits until `limiter` admits one request; never fails.
///
/// Waiters re-check after the wait governor names, so when several wait at
/// once the first to re-check goes first; none is refused.
pub async fn until_ready(limiter: &ApiRateLimiter) {
    while let Err(not_until) = limiter.check() {
        let wait = not_until.wait_time_from(limiter.clock().now());
        tracing::debug!(wait_ms = wait.as_millis() as u64, "client-side rate limit");
        tokio::time::sleep(wait).await;
    }
}

/// Makes every request wait until the shared [`ApiRateLimiter`] admits it.
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<ApiRateLimiter>,
}

impl RateLimitLayer {
    /// A layer over `limiter`, which every service it wraps shares.
    pub fn new(limiter: Arc<ApiRateLimiter>) -> Self {
        RateLimitLayer { limiter }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes: waits for the limiter, then calls
/// the inner service.
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<ApiRateLimiter>,
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
        // Readiness is awaited after the limiter admits the request, on a
        // clone of the inner service.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let limiter = self.limiter.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            until_ready(&limiter).await;
            inner.oneshot(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::{clock::FakeRelativeClock, nanos::Nanos};

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
            (
                Method::PATCH,
                "/apis/networking.k8s.io/v1/namespaces/a/ingresses/i?dryRun=All&fieldManager=k8sworker&force=true",
                "patch ingresses (dry run)",
                Some("i"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/services/s?dryRun=All",
                "delete services (dry run)",
                Some("s"),
            ),
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
                dry_run: false,
            });
        }
        calls.record(&ApiCall {
            verb: "patch",
            resource: "statefulsets".into(),
            dry_run: true,
        });
        assert_eq!(calls.total(), 7);
        assert_eq!(calls.writes(), 2, "a dry run is not a write");
        assert_eq!(calls.dry_runs(), 1);
        assert_eq!(calls.reads(), 4);
        assert_eq!(
            calls.summary(),
            "delete services=1 get configmaps=2 list secrets=1 patch statefulsets=1 \
             patch statefulsets (dry run)=1 watch pods=1"
        );
    }

    /// Takes one request's worth from `limiter`, advancing the fake clock by
    /// exactly the wait governor names when it refuses, as a waiter would.
    fn take_waiting(
        limiter: &RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>,
        clock: &FakeRelativeClock,
    ) {
        while let Err(not_until) = limiter.check() {
            clock.advance(not_until.wait_time_from(clock.now()));
        }
    }

    #[test]
    fn quota_allows_a_burst_then_paces_at_qps() {
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(quota(10.0, 3), clock.clone());
        for _ in 0..3 {
            take_waiting(&limiter, &clock);
        }
        assert_eq!(
            Duration::from(clock.now()),
            Duration::ZERO,
            "the burst costs no wait"
        );
        for _ in 0..5 {
            take_waiting(&limiter, &clock);
        }
        let elapsed = Duration::from(clock.now()).as_secs_f64();
        assert!(
            (0.49..0.52).contains(&elapsed),
            "5 more requests at 10 qps: {elapsed}"
        );
    }

    #[test]
    fn quota_keeps_the_knobs_within_what_governor_accepts() {
        assert_eq!(quota(20.0, 40).burst_size().get(), 40);
        assert_eq!(
            quota(20.0, 40).replenish_interval(),
            Duration::from_millis(50)
        );
        assert_eq!(quota(4.0, 0).burst_size().get(), 1, "burst is at least 1");
        assert_eq!(
            quota(f64::INFINITY, 1).replenish_interval(),
            Duration::from_nanos(1)
        );
        for never in [0.0, -1.0, f64::NAN] {
            assert_eq!(
                quota(never, 1).replenish_interval(),
                Duration::from_secs(365 * 24 * 3600),
                "{never}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_waits_rather_than_fails() {
        let limiter = api_rate_limiter(10.0, 3);
        let start = tokio::time::Instant::now();
        for _ in 0..8 {
            until_ready(&limiter).await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.49..0.52).contains(&elapsed),
            "a burst of 3, then 5 more at 10 qps: {elapsed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_service_counts_and_waits() {
        let calls = ApiCalls::default();
        let limiter = Arc::new(api_rate_limiter(1.0, 1));
        let service = tower::service_fn(|_request: Request<()>| async {
            Ok::<_, std::convert::Infallible>(Response::new(()))
        });
        let mut stack = tower::ServiceBuilder::new()
            .layer(CountLayer::new(vec![calls.clone()]))
            .layer(RateLimitLayer::new(limiter))
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

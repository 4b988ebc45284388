//! The executor's Kubernetes client: one connection pool, one rate limit,
//! and a fresh tally of API calls per operation.
//!
//! ```text
//! per-operation kube::Client ─▶ CountLayer (operation + process tallies, one span per call)
//!                             ─▶ RateLimitLayer (shared governor rate limiter)
//!                             ─▶ Forward ─▶ shared kube::Client (auth, TLS, pooled connections)
//! ```
//!
//! Building a `kube::Client` per operation costs one spawned buffer task, not
//! a connection: every operation forwards to the same base client.

use std::{fmt, future::Future, pin::Pin, sync::Arc, task::Context, task::Poll};

use http::{Request, Response};
use kube::client::Body;
use tower::{Service, ServiceBuilder};

use crate::calls::{ApiCalls, ApiRateLimiter, CountLayer, RateLimitLayer, api_rate_limiter};

/// Client-side limit on API requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimits {
    /// Sustained requests per second; positive (see [`crate::calls::quota`]).
    pub qps: f64,
    /// Requests allowed at once after a quiet period; at least 1.
    pub burst: u32,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            qps: 20.0,
            burst: 40,
        }
    }
}

/// Hands out per-operation clients over one shared base client.
#[derive(Clone)]
pub struct KubeClients {
    base: kube::Client,
    limiter: Arc<ApiRateLimiter>,
    limits: RateLimits,
    calls: ApiCalls,
}

impl fmt::Debug for KubeClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeClients")
            .field("namespace", &self.base.default_namespace())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl KubeClients {
    /// Clients over `base` that share one rate limiter of `limits`.
    pub fn new(base: kube::Client, limits: RateLimits) -> Self {
        KubeClients {
            base,
            limiter: Arc::new(api_rate_limiter(limits.qps, limits.burst)),
            limits,
            calls: ApiCalls::default(),
        }
    }

    /// Every call made since start, by verb and resource.
    pub fn calls(&self) -> &ApiCalls {
        &self.calls
    }

    /// A client whose calls count into `operation` as well as the process tally.
    pub fn for_operation(&self, operation: &ApiCalls) -> kube::Client {
        let service = ServiceBuilder::new()
            .layer(CountLayer::new(vec![self.calls.clone(), operation.clone()]))
            .layer(RateLimitLayer::new(self.limiter.clone()))
            .service(Forward(self.base.clone()));
        kube::Client::new(service, self.base.default_namespace())
    }
}

/// Sends requests through a shared `kube::Client`.
#[derive(Clone)]
struct Forward(kube::Client);

impl Service<Request<Body>> for Forward {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, kube::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move { client.send(request).await })
    }
}

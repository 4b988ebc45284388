//! Logs of an installation's pods, bounded in size.
//!
//! Pods are found by the installation label (or named, and then checked to
//! carry it). Each container's log is streamed from its last `tail_lines`
//! lines and only its last `limit_bytes` are kept, so memory stays bounded
//! whatever the pod wrote; `truncated` says the start was cut. A total budget
//! keeps the response below the gRPC message limit. A container whose log
//! cannot be read gets a one-line note instead of failing the whole request.

use futures::AsyncReadExt as _;
use k8s_openapi::api::core::v1::Pod;
use k8sworker_core::labels;
use k8sworker_proto::v1::{ComponentRef, PodLog};
use kube::{
    Api, Client, ResourceExt as _,
    api::{ListParams, LogParams},
};

use crate::{Error, error::Problem};

/// How much log to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Kept per pod and container.
    pub limit_bytes: u64,
    /// Lines requested from the end of each log.
    pub tail_lines: i64,
    /// Kept over the whole response.
    pub total_bytes: u64,
}

/// Fetches the logs of `installation`'s pods, or of `pod` only.
pub async fn fetch(
    client: &Client,
    namespace: &str,
    installation: &str,
    pod: Option<&str>,
    limits: LogLimits,
) -> Result<Vec<PodLog>, Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = match pod {
        Some(name) => {
            let pod = api
                .get(name)
                .await
                .map_err(|source| Error::kube("read", format!("Pod {namespace}/{name}"), source))?;
            if pod.labels().get(labels::INSTALLATION).map(String::as_str) != Some(installation) {
                return Err(Error::NotOwned(vec![Problem {
                    component: ComponentRef {
                        api_version: "v1".into(),
                        kind: "Pod".into(),
                        namespace: namespace.into(),
                        name: name.into(),
                    },
                    detail: format!("is not a pod of installation {installation:?}"),
                }]));
            }
            vec![pod]
        }
        None => {
            let selector = format!("{}={installation}", labels::INSTALLATION);
            api.list(&ListParams::default().labels(&selector))
                .await
                .map_err(|source| Error::kube("list", format!("pods in {namespace}"), source))?
                .items
        }
    };

    let mut budget = limits.total_bytes;
    let mut logs = Vec::new();
    for pod in &pods {
        let containers: Vec<String> = match &pod.spec {
            Some(spec) => spec.containers.iter().map(|c| c.name.clone()).collect(),
            None => Vec::new(),
        };
        for container in containers {
            let cap = limits.limit_bytes.min(budget);
            let params = LogParams {
                container: Some(container.clone()),
                tail_lines: Some(limits.tail_lines),
                ..LogParams::default()
            };
            let (content, truncated) = match read_tail(&api, &pod.name_any(), &params, cap).await {
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(pod = %pod.name_any(), %container, %error, "log unavailable");
                    let note = format!("k8sworker: log unavailable: {error}\n").into_bytes();
                    let keep = note.len().min(cap as usize);
                    (note[..keep].to_vec(), false)
                }
            };
            budget = budget.saturating_sub(content.len() as u64);
            logs.push(PodLog {
                pod: pod.name_any(),
                container,
                content,
                truncated,
            });
        }
    }
    Ok(logs)
}

async fn read_tail(
    api: &Api<Pod>,
    pod: &str,
    params: &LogParams,
    cap: u64,
) -> Result<(Vec<u8>, bool), kube::Error> {
    let stream = api.log_stream(pod, params).await?;
    futures::pin_mut!(stream);
    let mut tail = Tail::new(cap as usize);
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(kube::Error::ReadEvents)?;
        if n == 0 {
            break;
        }
        tail.push(&chunk[..n]);
    }
    Ok(tail.finish())
}

/// The last `cap` bytes of a stream.
#[derive(Debug)]
struct Tail {
    cap: usize,
    kept: Vec<u8>,
    dropped: bool,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail {
            cap,
            kept: Vec::new(),
            dropped: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.kept.extend_from_slice(bytes);
        if self.kept.len() > self.cap {
            let excess = self.kept.len() - self.cap;
            self.kept.drain(..excess);
            self.dropped = true;
        }
    }

    fn finish(self) -> (Vec<u8>, bool) {
        (self.kept, self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_bytes_and_says_so() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.finish(), (b"cdefg".to_vec(), true));

        let mut short = Tail::new(5);
        short.push(b"abc");
        assert_eq!(short.finish(), (b"abc".to_vec(), false));
    }

    #[test]
    fn zero_cap_keeps_nothing() {
        let mut tail = Tail::new(0);
        tail.push(b"abc");
        assert_eq!(tail.finish(), (Vec::new(), true));
    }
}

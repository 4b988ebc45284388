//! fetchLogs: each pod's log becomes a control-plane document named as
//! Vantiq names them: `<cluster>/<installation>/<pod>-<timestamp>.txt`, or
//! `<documentGroup>/<pod>-<timestamp>.txt` when the request names a group.
//! The timestamp is UTC with `-` for `:` (`2021-07-14T12-13-14.000Z`), so a
//! name is also a valid path segment. Pure naming; the upload is the
//! control-plane client's.

use std::time::SystemTime;

use k8sworker_proto::v1 as pb;

/// One log document to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct LogDocument {
    /// The document's name, a relative path.
    pub name: String,
    /// The log's bytes (UTF-8 text as the container wrote it).
    pub content: Vec<u8>,
}

/// `2021-07-14T12-13-14.000Z`.
pub fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at)
        .to_string()
        .replace(':', "-")
}

/// The documents for `logs`, all stamped `at`. A pod with several
/// containers gets one document per container (`<pod>-<container>-<timestamp>.txt`).
pub fn documents(
    cluster: &str,
    installation: &str,
    document_group: Option<&str>,
    logs: &[pb::PodLog],
    at: SystemTime,
) -> Vec<LogDocument> {
    let stamp = timestamp(at);
    let prefix = match document_group.map(|g| g.trim_matches('/')) {
        Some(group) if !group.is_empty() => group.to_owned(),
        _ => format!("{cluster}/{installation}"),
    };
    logs.iter()
        .map(|log| {
            let containers = logs.iter().filter(|other| other.pod == log.pod).count();
            let stem = if containers > 1 && !log.container.is_empty() {
                format!("{}-{}", log.pod, log.container)
            } else {
                log.pod.clone()
            };
            let mut content = Vec::with_capacity(log.content.len() + 64);
            if log.truncated {
                content.extend_from_slice(
                    b"[k8sworker: the log was longer than the limit; its beginning was cut]\n",
                );
            }
            content.extend_from_slice(&log.content);
            LogDocument {
                name: format!("{prefix}/{stem}-{stamp}.txt"),
                content,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use std::time::{Duration, UNIX_EPOCH};

    fn log(pod: &str, container: &str, content: &str) -> pb::PodLog {
        pb::PodLog {
            pod: pod.into(),
            container: container.into(),
            content: content.as_bytes().to_vec(),
            truncated: false,
        }
    }

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_626_264_794_000)
    }

    #[test]
    fn documents_are_named_by_cluster_installation_pod_and_time() {
        let docs = documents(
            "c1",
            "jdbc",
            None,
            &[log("jdbc-0", "jdbc", "a\n"), log("jdbc-1", "jdbc", "b\n")],
            at(),
        );
        assert_eq!(
            docs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            [
                "c1/jdbc/jdbc-0-2021-07-14T12-13-14.000Z.txt",
                "c1/jdbc/jdbc-1-2021-07-14T12-13-14.000Z.txt"
            ]
        );
        assert_eq!(docs[1].content, b"b\n");
    }

    #[test]
    fn a_document_group_replaces_cluster_and_installation() {
        let docs = documents(
            "c1",
            "jdbc",
            Some("/support/case-7/"),
            &[log("jdbc-0", "jdbc", "a")],
            at(),
        );
        assert_eq!(
            docs[0].name,
            "support/case-7/jdbc-0-2021-07-14T12-13-14.000Z.txt"
        );
    }

    #[test]
    fn several_containers_of_one_pod_get_one_document_each_and_truncation_is_said() {
        let mut sidecar = log("jdbc-0", "proxy", "p");
        sidecar.truncated = true;
        let docs = documents(
            "c1",
            "jdbc",
            None,
            &[log("jdbc-0", "jdbc", "a"), sidecar],
            at(),
        );
        assert_eq!(
            docs[0].name,
            "c1/jdbc/jdbc-0-jdbc-2021-07-14T12-13-14.000Z.txt"
        );
        assert_eq!(
            docs[1].name,
            "c1/jdbc/jdbc-0-proxy-2021-07-14T12-13-14.000Z.txt"
        );
        assert!(
            docs[1]
                .content
                .starts_with(b"[k8sworker: the log was longer")
        );
    }
}

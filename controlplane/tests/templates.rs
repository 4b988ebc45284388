//! The worker templates download over HTTP against the real server: the
//! zip holds exactly the files of `deploy/` (its kustomization tree under
//! `kustomize/`, `plainText/`), each byte for byte the file with the
//! placeholders filled; admins only; and `kubectl kustomize` accepts the
//! unzipped worker overlay (a cluster test: the test cluster's kubectl).

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::{Client, TempDir, TestServer, assert_error};
use reqwest::{Method, StatusCode};

const URL: &str = "https://vantiq.example.test:8443";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The files the zip must hold, read from `deploy/` itself: `(entry name,
/// content)`.
fn expected_files() -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = format!("{prefix}/{}", path.file_name().unwrap().to_str().unwrap());
            if path.is_dir() {
                walk(&path, &name, out);
            } else {
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    for folder in [
        "base",
        "overlays",
        "executor",
        "rbac",
        "prerequisites",
        "cert-manager",
    ] {
        walk(
            &deploy_dir().join(folder),
            &format!("kustomize/{folder}"),
            &mut out,
        );
    }
    walk(&deploy_dir().join("plainText"), "plainText", &mut out);
    out
}

fn filled(content: &[u8], url: Option<&str>) -> Vec<u8> {
    let mut text = String::from_utf8(content.to_vec()).unwrap();
    text = text
        .replace("<CLUSTER_NAME>", "minikube")
        .replace("<VANTIQ_NAMESPACE>", "k8sworker");
    if let Some(url) = url {
        text = text.replace("<VANTIQ_URL>", url);
    }
    text.into_bytes()
}

async fn download(
    caller: &Client,
    cluster: &str,
    url: Option<&str>,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let path = format!("/api/v1/resources/k8sclusters/{cluster}/workerTemplates");
    let mut request = caller.request(Method::GET, &path);
    if let Some(url) = url {
        request = request.query(&[("url", url)]);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut out = BTreeMap::new();
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        assert!(
            out.insert(file.name().unwrap().into_owned(), content)
                .is_none(),
            "a duplicate entry"
        );
    }
    out
}

#[tokio::test]
async fn the_zip_is_deploy_with_the_placeholders_filled_and_nothing_else() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    for url in [Some(URL), None] {
        let (status, headers, body) = download(a, "minikube", url).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers["content-type"], "application/zip");
        assert_eq!(
            headers["content-disposition"],
            "attachment; filename=\"k8sworker-minikube.zip\""
        );
        let entries = unzip(&body);
        let expected = expected_files();
        assert_eq!(
            entries.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "the zip's entries are deploy/'s files"
        );
        for (name, content) in &expected {
            assert!(
                entries[name] == filled(content, url),
                "{name} differs from deploy/ after the fill"
            );
        }
        assert!(!entries.keys().any(|name| name.ends_with("check.sh")));
        let worker =
            String::from_utf8(entries["kustomize/overlays/worker/provideClusterName.yaml"].clone())
                .unwrap();
        assert!(worker.contains("CLUSTER_NAME: minikube"), "{worker}");
        assert!(worker.contains("VANTIQ_NAMESPACE: k8sworker"), "{worker}");
        let vantiq =
            String::from_utf8(entries["kustomize/overlays/worker/provideVantiqIP.yaml"].clone())
                .unwrap();
        match url {
            Some(url) => assert!(vantiq.contains(&format!("VANTIQ_URL: {url}")), "{vantiq}"),
            None => assert!(vantiq.contains("VANTIQ_URL: <VANTIQ_URL>"), "{vantiq}"),
        }
    }
    t.stop().await;
}

#[tokio::test]
async fn only_admins_download_and_only_for_their_clusters() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    let (status, _, body) = download(a, "nowhere", Some(URL)).await;
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_error(status, &body, 404, "io.vantiq.resource.not.found");
    for caller in [t.user().await, t.worker().await] {
        let (status, _, body) = download(&caller, "minikube", Some(URL)).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_error(status, &body, 403, "io.vantiq.authorization.denied");
    }
    for bad in ["ftp://x", "https://a b", "https://x/#y", "not a url"] {
        let (status, _, body) = download(a, "minikube", Some(bad)).await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"][0], "url", "{body}");
    }
    t.stop().await;
}

/// `kubectl kustomize` (the test cluster's) renders the unzipped worker
/// overlay, executor and prerequisites, with the filled values in them.
#[tokio::test]
#[ignore = "needs the test cluster's kubectl: source the test cluster's env file"]
async fn kubectl_kustomize_accepts_the_unzipped_overlay() {
    let bin = std::env::var("K8SWORKER_CLUSTER_BIN")
        .expect("K8SWORKER_CLUSTER_BIN: source the test cluster's env file");
    let t = TestServer::start().await;
    t.admin.create_cluster("minikube").await;
    let (status, _, body) = download(&t.admin, "minikube", Some(URL)).await;
    assert_eq!(status, StatusCode::OK);
    let dir = TempDir::new();
    for (name, content) in unzip(&body) {
        let path = dir.0.join(&name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    for overlay in [
        "kustomize/overlays/worker",
        "kustomize/overlays/cronjob",
        "kustomize/executor",
        "kustomize/prerequisites",
    ] {
        let output = std::process::Command::new(Path::new(&bin).join("kubectl"))
            .arg("kustomize")
            .arg(dir.0.join(overlay))
            .output()
            .unwrap();
        let rendered = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "kubectl kustomize {overlay}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(rendered.contains("kind:"), "{overlay}: {rendered}");
        if overlay.contains("overlays") {
            assert!(rendered.contains("CLUSTER_NAME: minikube"), "{rendered}");
            assert!(
                rendered.contains(&format!("VANTIQ_URL: {URL}")),
                "{rendered}"
            );
            assert!(!rendered.contains("<CLUSTER_NAME>"), "{rendered}");
        }
    }
    t.stop().await;
}

/// A URL that would end a YAML plain scalar as a key (`…/base:`) is not
/// filled: `VANTIQ_URL: https://host/base:` is not valid YAML, and a
/// template that does not load is no template. Refused with 400 naming
/// `url`, no zip sent; the same URL without the `:` is filled as given.
#[tokio::test]
async fn a_url_yaml_would_not_read_back_is_refused() {
    let t = TestServer::start().await;
    let a = &t.admin;
    a.create_cluster("minikube").await;
    for bad in [
        "https://vantiq.example.test/base:",
        "https://vantiq.example.test:8443/x?a=b:",
    ] {
        let (status, headers, body) = download(a, "minikube", Some(bad)).await;
        assert!(
            headers.get(reqwest::header::CONTENT_DISPOSITION).is_none(),
            "{bad}: a zip was sent"
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"][0], "url", "{bad}: {body}");
    }
    let good = "https://vantiq.example.test/base:8443";
    let (status, _, body) = download(a, "minikube", Some(good)).await;
    assert_eq!(status, StatusCode::OK);
    let files = unzip(&body);
    let worker = String::from_utf8(files["plainText/k8sworker.yaml"].clone()).unwrap();
    assert!(
        worker.contains(&format!("VANTIQ_URL: {good}\n")),
        "{worker}"
    );
    t.stop().await;
}

/// A cluster name kubectl's YAML reads as a number or a date (`0b101` is
/// 5, `1_0e3` is 10000, `2001-12-14` a timestamp: YAML 1.1's types) is
/// not filled: the worker's `CLUSTER_NAME` would not be the cluster's
/// name. Refused with 400 naming `name`, no zip sent.
#[tokio::test]
async fn a_cluster_name_yaml_reads_as_another_type_is_not_filled() {
    let t = TestServer::start().await;
    let a = &t.admin;
    for name in ["0b101", "1_0e3", "2001-12-14"] {
        let cluster = serde_json::json!({"name": name, "ingressDefaultNode": "node.example"});
        let (status, body) = a.post("/api/v1/resources/k8sclusters", cluster).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, headers, body) = download(a, name, Some(URL)).await;
        assert!(
            headers.get(reqwest::header::CONTENT_DISPOSITION).is_none(),
            "{name}: a zip was sent"
        );
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_error(status, &body, 400, "io.vantiq.argument.invalid");
        assert_eq!(body[0]["params"][0], "name", "{name}: {body}");
    }
    t.stop().await;
}

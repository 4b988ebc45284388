//! Documents: how one is uploaded (`POST /api/v1/resources/documents`,
//! multipart/form-data) and the metadata the control plane answers with.
//! A worker uploads `fetchLogs` output this way, named
//! `<cluster>/<installation>/<pod>-<timestamp>.txt`; uploading an existing
//! name replaces it. The bytes are read back from `GET /docs/<name>`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The upload's text field that names the document (a path such as
/// `c1/web/web-0-2021-07-14T12-13-14.000Z.txt`). Without it the file part's
/// file name is the document's name.
pub const PATH_FIELD: &str = "documentPath";
/// The upload's file part, holding the content.
pub const FILE_FIELD: &str = "file";

/// A document's metadata (`GET /documents`, `GET /documents/<name>`, the
/// answer of an upload).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    /// The document's name, a relative path.
    pub name: String,
    /// Its content type, e.g. `text/plain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    /// Its size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_size: Option<u64>,
    /// Where its bytes are served: `/docs/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The instance id.
    #[serde(rename = "_id", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The `ars_*` audit properties and anything else the server sends.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;
    use serde_json::json;

    #[test]
    fn document_metadata_reads_back_exactly() {
        let json = json!({
            "name": "c1/web/web-0-2021-07-14T12-13-14.000Z.txt",
            "_id": "a1b2c3",
            "fileType": "text/plain",
            "contentSize": 14,
            "content": "/docs/c1/web/web-0-2021-07-14T12-13-14.000Z.txt",
            "ars_namespace": "k8sworker",
            "ars_version": 1,
            "ars_createdAt": "2021-07-14T12:13:14.000Z",
            "ars_createdBy": "gw",
            "ars_modifiedAt": "2021-07-14T12:13:14.000Z",
            "ars_modifiedBy": "gw",
        });
        let document: Document = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(document.content_size, Some(14));
        assert_eq!(document.other["ars_createdBy"], "gw");
        assert_eq!(serde_json::to_value(&document).unwrap(), json);
    }
}

//! `GET k8sclusters/<name>/workerTemplates?url=<control plane URL>`
//! (*ours*): the worker's deployment templates for that cluster as a zip
//! attachment `k8sworker-<cluster>.zip` ([`crate::templates`]), the
//! cluster's name, the caller's namespace and the URL (when given) filled
//! in. Admins; 404 for an unknown cluster, 400 `io.vantiq.argument.invalid`
//! for a URL (or name) that cannot be filled in.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::extract::RawQuery;
use crate::auth::{Action, Caller};
use crate::state::AppState;
use crate::store::resources::{self, DocTable};
use crate::templates::{self, Fills, TemplatesError};

/// The download.
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(cluster): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Action::DownloadTemplates)?;
    let exists = {
        let (namespace, cluster) = (caller.namespace.clone(), cluster.clone());
        state
            .store
            .transaction(move |tx| {
                Ok::<_, ApiError>(
                    resources::get_doc(tx, DocTable::Clusters, &namespace, &cluster)?.is_some(),
                )
            })
            .await?
    };
    if !exists {
        return Err(ApiError::not_found("k8sclusters", "name", cluster));
    }
    let url = query.get("url").filter(|url| !url.is_empty());
    let unfillable = |error: TemplatesError| match error {
        TemplatesError::Unfillable { field, .. } => ApiError::invalid(field, error.to_string()),
        other => {
            tracing::error!(error = %other, "writing the worker templates zip failed");
            ApiError::Panicked
        }
    };
    let fills =
        Fills::new(&cluster, &caller.namespace, url.map(String::as_str)).map_err(unfillable)?;
    let zip = tokio::task::spawn_blocking(move || templates::zip(&fills))
        .await
        .map_err(ApiError::Task)?
        .map_err(unfillable)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/zip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"k8sworker-{cluster}.zip\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        ],
        zip,
    )
        .into_response())
}

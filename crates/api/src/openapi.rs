//! The OpenAPI document, generated from the handlers' annotations.

use axum::Json;
use utoipa::OpenApi;

use crate::{admin, live, uploads, videos};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "oxcast",
        description = "Self-hosted video platform: uploads, processing, playback."
    ),
    paths(
        uploads::create,
        uploads::status,
        uploads::complete,
        videos::list,
        videos::get,
        videos::delete,
        live::create,
        live::list,
        live::get,
        live::reset_key,
        live::delete,
        live::health,
        admin::jobs,
        admin::retry,
        admin::nodes,
        admin::stats
    ),
    components(schemas(
        uploads::CreateUpload,
        uploads::CreatedUpload,
        uploads::PartUrl,
        uploads::UploadStatus,
        uploads::StoredPart,
        uploads::CompleteUpload,
        uploads::CompletePart,
        live::CreateLiveStream,
        live::LiveStreamView,
        live::LiveStreamList,
        live::CurrentSession,
        live::SessionView,
        live::Health,
        live::HealthHistory,
        live::SampleView,
        live::AlertView,
        live::PublisherView,
        videos::VideoView,
        videos::ChunksView,
        videos::VideoList,
        videos::RenditionView,
        admin::AdminJobView,
        admin::AdminJobList,
        admin::NodeView,
        admin::NodeList,
        admin::HourView,
        admin::AdminStats
    ))
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client generators name methods after operation ids: each must exist and be unique.
    #[test]
    fn every_operation_has_a_unique_id() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut ids = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{method} {path} has no operationId"));
                ids.push(id.to_string());
            }
        }
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "duplicate operation ids: {ids:?}");
        assert!(n >= 13, "{n} operations");
    }
}

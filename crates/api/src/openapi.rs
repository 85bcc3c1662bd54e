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
        admin::jobs,
        admin::retry
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
        videos::VideoView,
        videos::VideoList,
        videos::RenditionView,
        admin::AdminJobView,
        admin::AdminJobList
    ))
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

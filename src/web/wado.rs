//! WADO-RS (PS3.18 10.4): retrieval of studies, series and instances as
//! `multipart/related; type="application/dicom"`, their metadata in DICOM JSON, frames, bulk
//! data, and rendered images and thumbnails.
//!
//! Instances are found in the SQLite index (never by walking the store) and served from their
//! files: a stored file the client accepts as it is streams from disk part by part, so a study
//! is never held in memory; only a transcoding (to Explicit VR Little Endian for a client that
//! names no transfer syntax, PS3.18's default) builds one instance at a time in memory.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio_util::io::ReaderStream;

use super::{BaseUrl, WebError, WebState, DICOM_JSON};
use crate::queue::StoredInstance;

mod frames;
mod metadata;
mod render;

use super::accept::{self, Delivery, FrameDelivery, EXPLICIT_VR_LE};
use frames::FrameError;
use render::{RenderError, RenderParams};

/// Bytes read from an instance file per body chunk.
const CHUNK: usize = 256 * 1024;
/// The viewport of a thumbnail when the request names none.
const THUMBNAIL_VIEWPORT: (u32, u32) = (128, 128);

pub(super) fn routes() -> Router<Arc<WebState>> {
    const INSTANCE: &str = "/studies/{study}/series/{series}/instances/{instance}";
    Router::new()
        .route("/studies/{study}", get(retrieve_study))
        .route("/studies/{study}/series/{series}", get(retrieve_series))
        .route(INSTANCE, get(retrieve_instance))
        .route("/studies/{study}/metadata", get(study_metadata))
        .route("/studies/{study}/series/{series}/metadata", get(series_metadata))
        .route(&format!("{INSTANCE}/metadata"), get(instance_metadata))
        .route(&format!("{INSTANCE}/frames/{{frames}}"), get(frames))
        .route(&format!("{INSTANCE}/bulkdata/{{tag}}"), get(bulkdata))
        .route(&format!("{INSTANCE}/rendered"), get(instance_rendered::<false>))
        .route(&format!("{INSTANCE}/thumbnail"), get(instance_rendered::<true>))
        .route(
            &format!("{INSTANCE}/frames/{{frames}}/rendered"),
            get(frame_rendered::<false>),
        )
        .route(
            &format!("{INSTANCE}/frames/{{frames}}/thumbnail"),
            get(frame_rendered::<true>),
        )
        .route(
            "/studies/{study}/series/{series}/thumbnail",
            get(series_thumbnail),
        )
        .route("/studies/{study}/thumbnail", get(study_thumbnail))
}

type Shared = State<Arc<WebState>>;

/// A UID from the path, checked before it reaches a query or a URL.
fn uid(value: &str, what: &str) -> Result<String, WebError> {
    if vcnode_scp::is_valid_uid(value) {
        Ok(value.to_string())
    } else {
        Err(WebError::bad_request(format!("{what} is not a valid UID")))
    }
}

fn lookup_failed(e: crate::queue::QueueError) -> WebError {
    WebError::internal(e)
}

async fn study_instances(st: &WebState, study: &str) -> Result<Vec<StoredInstance>, WebError> {
    let study = uid(study, "Study Instance UID")?;
    let found = st.queue.study_instances(&study).await.map_err(lookup_failed)?;
    if found.is_empty() {
        return Err(WebError::not_found("no such study"));
    }
    Ok(found)
}

async fn series_instances(st: &WebState, study: &str, series: &str) -> Result<Vec<StoredInstance>, WebError> {
    let (study, series) = (
        uid(study, "Study Instance UID")?,
        uid(series, "Series Instance UID")?,
    );
    let found = st
        .queue
        .series_instances(&study, &series)
        .await
        .map_err(lookup_failed)?;
    if found.is_empty() {
        return Err(WebError::not_found("no such series in this study"));
    }
    Ok(found)
}

async fn one_instance(
    st: &WebState,
    (study, series, instance): &(String, String, String),
) -> Result<StoredInstance, WebError> {
    let study = uid(study, "Study Instance UID")?;
    let series = uid(series, "Series Instance UID")?;
    let instance = uid(instance, "SOP Instance UID")?;
    st.queue
        .stored_instance(&study, &series, &instance)
        .await
        .map_err(lookup_failed)?
        .ok_or_else(|| WebError::not_found("no such instance in this series"))
}

fn file_of(st: &WebState, inst: &StoredInstance) -> PathBuf {
    st.store.root().join(&inst.path)
}

/// Runs blocking work (file parsing, decoding, encoding) off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, WebError> {
    tokio::task::spawn_blocking(f).await.map_err(WebError::internal)
}

// ---- multipart/related bodies ----

/// One part: its Content-Type and its bytes as a stream.
type Part = (String, BoxStream<'static, io::Result<Bytes>>);

fn new_boundary() -> String {
    format!("vcnode-{}", uuid::Uuid::new_v4().simple())
}

/// A `multipart/related` response of `parts`, produced one after another as the client reads.
fn multipart_response(
    part_type: &str,
    parts: BoxStream<'static, io::Result<Part>>,
) -> Result<Response, WebError> {
    let boundary = new_boundary();
    let content_type = format!("multipart/related; type=\"{part_type}\"; boundary={boundary}");
    let b = boundary.clone();
    let body = parts
        .map(move |p| match p {
            Ok((ct, data)) => {
                let head = Bytes::from(format!("--{b}\r\nContent-Type: {ct}\r\n\r\n"));
                stream::once(async move { Ok(head) })
                    .chain(data)
                    .chain(stream::once(async { Ok(Bytes::from_static(b"\r\n")) }))
                    .boxed()
            }
            Err(e) => {
                tracing::warn!(error = %e, "WADO-RS response ended early");
                stream::once(async move { Err(e) }).boxed()
            }
        })
        .flatten()
        .chain(stream::once(async move {
            Ok(Bytes::from(format!("--{boundary}--\r\n")))
        }));
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type).map_err(WebError::internal)?,
    );
    Ok(response)
}

fn bytes_part(content_type: String, data: Bytes) -> Part {
    (content_type, stream::once(async move { Ok(data) }).boxed())
}

// ---- retrieve ----

async fn retrieve_study(
    State(st): Shared,
    Path(study): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let found = study_instances(&st, &study).await?;
    retrieve(&st, found, &headers)
}

async fn retrieve_series(
    State(st): Shared,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let found = series_instances(&st, &study, &series).await?;
    retrieve(&st, found, &headers)
}

async fn retrieve_instance(
    State(st): Shared,
    Path(ids): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let found = one_instance(&st, &ids).await?;
    retrieve(&st, vec![found], &headers)
}

/// Instances as Part 10 files, each as stored or transcoded (see [`accept::deliver`]); 406
/// before anything is sent when one of them cannot be had in an accepted transfer syntax.
fn retrieve(
    st: &WebState,
    instances: Vec<StoredInstance>,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let requests = accept::dicom_requests(&accept::parse(headers)?)?;
    let mut plan = Vec::with_capacity(instances.len());
    for inst in instances {
        let delivery = accept::deliver(&requests, &inst.transfer_syntax).ok_or_else(|| {
            WebError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "an instance is stored in {} and cannot be sent in a transfer syntax the Accept header names",
                    inst.transfer_syntax
                ),
            )
        })?;
        plan.push((file_of(st, &inst), inst.transfer_syntax, delivery));
    }
    let parts = stream::iter(plan)
        .then(|(path, stored, delivery)| async move {
            match delivery {
                Delivery::Stored => {
                    let file = tokio::fs::File::open(&path).await?;
                    let data = ReaderStream::with_capacity(file, CHUNK).boxed();
                    Ok((format!("application/dicom; transfer-syntax={stored}"), data))
                }
                Delivery::Transcode(ts) => {
                    let bytes = tokio::task::spawn_blocking(move || frames::transcode_file(&path, ts))
                        .await
                        .map_err(io::Error::other)?
                        .map_err(io::Error::other)?;
                    Ok(bytes_part(
                        format!("application/dicom; transfer-syntax={ts}"),
                        Bytes::from(bytes),
                    ))
                }
            }
        })
        .boxed();
    multipart_response("application/dicom", parts)
}

// ---- metadata ----

async fn metadata_of(
    st: &WebState,
    instances: Vec<StoredInstance>,
    headers: &HeaderMap,
    BaseUrl(base): BaseUrl,
) -> Result<Response, WebError> {
    accept::accepts_dicom_json(&accept::parse(headers)?, "metadata")?;
    let root = st.store.root().to_path_buf();
    let all = blocking(move || {
        instances
            .iter()
            .map(|inst| metadata::instance_metadata(&root.join(&inst.path), inst, &base))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?
    .map_err(WebError::internal)?;
    let json = serde_json::to_vec(&all).map_err(WebError::internal)?;
    Ok(([(header::CONTENT_TYPE, DICOM_JSON)], json).into_response())
}

async fn study_metadata(
    State(st): Shared,
    Path(study): Path<String>,
    headers: HeaderMap,
    base: BaseUrl,
) -> Result<Response, WebError> {
    let found = study_instances(&st, &study).await?;
    metadata_of(&st, found, &headers, base).await
}

async fn series_metadata(
    State(st): Shared,
    Path((study, series)): Path<(String, String)>,
    headers: HeaderMap,
    base: BaseUrl,
) -> Result<Response, WebError> {
    let found = series_instances(&st, &study, &series).await?;
    metadata_of(&st, found, &headers, base).await
}

async fn instance_metadata(
    State(st): Shared,
    Path(ids): Path<(String, String, String)>,
    headers: HeaderMap,
    base: BaseUrl,
) -> Result<Response, WebError> {
    let found = one_instance(&st, &ids).await?;
    metadata_of(&st, vec![found], &headers, base).await
}

// ---- frames and bulk data ----

/// `1,3,5` → [1, 3, 5]; frame numbers are 1-based.
fn frame_list(list: &str) -> Result<Vec<u32>, WebError> {
    let bad = || {
        WebError::bad_request(format!(
            "frame list must be 1-based numbers separated by commas, not {list:?}"
        ))
    };
    let numbers: Vec<u32> = list
        .split(',')
        .map(|n| n.trim().parse::<u32>().ok().filter(|&n| n >= 1).ok_or_else(bad))
        .collect::<Result<_, _>>()?;
    if numbers.is_empty() || numbers.len() > 10_000 {
        return Err(bad());
    }
    Ok(numbers)
}

fn frame_error(e: FrameError) -> WebError {
    match e {
        FrameError::NoFrame(n) => WebError::not_found(format!("frame {n} does not exist")),
        FrameError::NoPixelData => WebError::not_found("the instance has no pixel data"),
        other => WebError::internal(other),
    }
}

/// Frames `wanted` (None: all) of an instance in the representation the Accept header picks.
async fn frames_of(
    st: &WebState,
    inst: StoredInstance,
    wanted: Option<Vec<u32>>,
    headers: &HeaderMap,
) -> Result<Response, WebError> {
    let encapsulated = frames::is_encapsulated(&inst.transfer_syntax);
    let delivery = accept::frame_delivery(&accept::parse(headers)?, &inst.transfer_syntax, encapsulated)?;
    let path = file_of(st, &inst);
    let d = delivery.clone();
    let data = blocking(move || {
        let obj = dicom_object::open_file(&path)?;
        let wanted = wanted.unwrap_or_else(|| (1..=frames::number_of_frames(&obj)).collect());
        match d {
            FrameDelivery::Uncompressed => frames::uncompressed_frames(&obj, &wanted),
            FrameDelivery::Stored { .. } => frames::stored_frames(&obj, &wanted),
        }
    })
    .await?
    .map_err(frame_error)?;
    let (part_type, content_type) = match &delivery {
        FrameDelivery::Uncompressed => (
            "application/octet-stream".to_string(),
            format!("application/octet-stream; transfer-syntax={EXPLICIT_VR_LE}"),
        ),
        FrameDelivery::Stored { part_type } => {
            // Native pixel bytes are little endian whatever the file's syntax.
            let ts = if encapsulated {
                inst.transfer_syntax.as_str()
            } else {
                EXPLICIT_VR_LE
            };
            (part_type.clone(), format!("{part_type}; transfer-syntax={ts}"))
        }
    };
    let parts = stream::iter(
        data.into_iter()
            .map(move |d| Ok(bytes_part(content_type.clone(), d))),
    )
    .boxed();
    multipart_response(&part_type, parts)
}

async fn frames(
    State(st): Shared,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let wanted = frame_list(&list)?;
    let inst = one_instance(&st, &(study, series, instance)).await?;
    frames_of(&st, inst, Some(wanted), &headers).await
}

/// Bulk data named in metadata: Pixel Data answers all frames, as the frames resource; any other
/// top-level binary attribute answers its value as one `application/octet-stream` part.
async fn bulkdata(
    State(st): Shared,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let parsed = (tag.len() == 8)
        .then(|| u32::from_str_radix(&tag, 16).ok())
        .flatten()
        .map(|t| dicom_core::Tag((t >> 16) as u16, t as u16))
        .ok_or_else(|| WebError::bad_request("bulk data is named by its tag, GGGGEEEE in hexadecimal"))?;
    let inst = one_instance(&st, &(study, series, instance)).await?;
    if parsed == dicom_dictionary_std::tags::PIXEL_DATA {
        return frames_of(&st, inst, None, &headers).await;
    }
    let ranges = accept::parse(&headers)?;
    if !ranges.iter().any(|r| {
        matches!(
            r.essence.as_str(),
            "*/*" | "multipart/*" | "application/octet-stream"
        ) || r.essence == "multipart/related"
            && matches!(
                r.param("type"),
                None | Some("application/octet-stream") | Some("*/*")
            )
    }) {
        return Err(WebError::new(
            StatusCode::NOT_ACCEPTABLE,
            "bulk data is served as multipart/related; type=\"application/octet-stream\"",
        ));
    }
    let path = file_of(&st, &inst);
    let value = blocking(move || -> Result<Option<Vec<u8>>, dicom_object::ReadError> {
        let mut options = dicom_object::OpenFileOptions::new();
        if parsed < dicom_dictionary_std::tags::PIXEL_DATA {
            options = options.read_until(dicom_dictionary_std::tags::PIXEL_DATA);
        }
        let obj = options.open_file(&path)?;
        Ok(obj
            .element(parsed)
            .ok()
            .and_then(|e| e.value().primitive().map(|p| p.to_bytes().into_owned())))
    })
    .await?
    .map_err(WebError::internal)?
    .ok_or_else(|| WebError::not_found("the instance has no such bulk data"))?;
    let parts = stream::iter([Ok(bytes_part(
        "application/octet-stream".to_string(),
        Bytes::from(value),
    ))])
    .boxed();
    multipart_response("application/octet-stream", parts)
}

// ---- rendered and thumbnail ----

async fn rendered(
    st: &WebState,
    inst: StoredInstance,
    frame: u32,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    thumbnail: bool,
) -> Result<Response, WebError> {
    let mut params = RenderParams::parse(query)?;
    if thumbnail && params.viewport.is_none() {
        params.viewport = Some(THUMBNAIL_VIEWPORT);
    }
    let media = accept::rendered_type(&accept::parse(headers)?)?;
    let path = file_of(st, &inst);
    let image = blocking(move || render::render_file(&path, frame - 1, &params, media))
        .await?
        .map_err(|e| match e {
            RenderError::NoFrame(n) => WebError::not_found(format!("frame {n} does not exist")),
            RenderError::Unsupported(what) => WebError::new(
                StatusCode::NOT_IMPLEMENTED,
                format!("rendering {what} is not supported"),
            ),
            other => WebError::internal(other),
        })?;
    Ok(([(header::CONTENT_TYPE, media.media_type())], image).into_response())
}

fn single_frame(list: &str) -> Result<u32, WebError> {
    match frame_list(list)?.as_slice() {
        [n] => Ok(*n),
        _ => Err(WebError::bad_request("a rendered frame is one frame number")),
    }
}

/// An instance's `rendered` resource, or its `thumbnail` (THUMBNAIL: a default viewport).
async fn instance_rendered<const THUMBNAIL: bool>(
    State(st): Shared,
    Path(ids): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let inst = one_instance(&st, &ids).await?;
    rendered(&st, inst, 1, &query, &headers, THUMBNAIL).await
}

/// A frame's `rendered` resource, or its `thumbnail`.
async fn frame_rendered<const THUMBNAIL: bool>(
    State(st): Shared,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let frame = single_frame(&list)?;
    let inst = one_instance(&st, &(study, series, instance)).await?;
    rendered(&st, inst, frame, &query, &headers, THUMBNAIL).await
}

/// A series' thumbnail: its first instance's.
async fn series_thumbnail(
    State(st): Shared,
    Path((study, series)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let first = series_instances(&st, &study, &series).await?.swap_remove(0);
    rendered(&st, first, 1, &query, &headers, true).await
}

/// A study's thumbnail: its first instance's.
async fn study_thumbnail(
    State(st): Shared,
    Path(study): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let first = study_instances(&st, &study).await?.swap_remove(0);
    rendered(&st, first, 1, &query, &headers, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node's own WADO-RS client (src/pull) parses parts with multer: our bodies must suit it.
    #[tokio::test]
    async fn multipart_bodies_parse_part_by_part() {
        let parts = stream::iter([
            Ok(bytes_part(
                "application/dicom; transfer-syntax=1.2.840.10008.1.2.1".into(),
                Bytes::from_static(b"first\r\n--not-a-boundary"),
            )),
            Ok(bytes_part(
                "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90".into(),
                Bytes::from_static(b"second"),
            )),
        ])
        .boxed();
        let response = multipart_response("application/dicom", parts).unwrap();
        let ct = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            ct.starts_with("multipart/related; type=\"application/dicom\"; boundary="),
            "{ct}"
        );
        let boundary = ct.rsplit_once("boundary=").unwrap().1.to_string();
        let body = response.into_body().into_data_stream();
        let mut multipart = multer::Multipart::new(body, boundary);
        let mut got = Vec::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let ct = field.content_type().unwrap().to_string();
            got.push((ct, field.bytes().await.unwrap()));
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "application/dicom; transfer-syntax=1.2.840.10008.1.2.1");
        assert_eq!(&got[0].1[..], b"first\r\n--not-a-boundary");
        assert_eq!(&got[1].1[..], b"second");
    }

    #[test]
    fn frame_lists_are_one_based() {
        assert_eq!(frame_list("1,3, 5").unwrap(), vec![1, 3, 5]);
        for bad in ["0", "", "1,,2", "a", "-1"] {
            assert_eq!(
                frame_list(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }
}

//! Media: `PUT /api/runs/{run}/media/{sha256}` stores an image's bytes (told by their
//! bytes, addressed by their hash, within the item, pixel and per-run limits),
//! `GET …/media/{sha256}` serves them so that no upload can run script in the
//! dashboard's origin, and [`check_ingest`] checks a batch's media events before they
//! are stored: text and histogram shapes, and each image's bytes held by the run (its
//! type and size filled in from them, whatever the trainer said).

use super::error::{check_run, ApiError};
use super::ingest::read_body;
use super::state::Data;
use crate::storage::media::{MediaRow, Put};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use sha2::{Digest, Sha256};
use stepwatch_events::media::{self, is_sha256};
use stepwatch_events::{Event, EventBody};

fn check_sha(sha: &str) -> Result<(), ApiError> {
    if is_sha256(sha) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "{:?} is not a lowercase hex SHA-256 (64 characters): media are addressed by \
             the SHA-256 of their bytes",
            sha.chars().take(80).collect::<String>()
        )))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn answer(row: &MediaRow) -> serde_json::Value {
    json!({
        "media": row.sha,
        "mime": row.mime,
        "width": row.width,
        "height": row.height,
        "size": row.size,
    })
}

/// `PUT /api/runs/{run}/media/{sha256}`.
pub async fn put(
    data: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let (run, sha) = path.into_inner();
    check_run(&run)?;
    check_sha(&sha)?;
    let limits = &data.limits;
    let body = read_body(
        &req,
        payload,
        limits.media_max_item,
        "images are capped per item (--media-max-item): send a smaller or more compressed one",
    )
    .await?;
    let got = hex(&Sha256::digest(&body));
    if got != sha {
        return Err(ApiError::bad_request(format!(
            "the bytes hash to {got}, not to {sha} named in the address: the upload was \
             damaged or misaddressed"
        )));
    }
    let kind = media::sniff(&body).map_err(ApiError::bad_request)?;
    let pixels = u64::from(kind.width) * u64::from(kind.height);
    if pixels > limits.media_max_pixels {
        return Err(ApiError::too_large(format!(
            "a {}×{} image has {pixels} pixels, over the limit of {} (--media-max-pixels)",
            kind.width, kind.height, limits.media_max_pixels
        ))
        .with("limit", limits.media_max_pixels));
    }
    let row = MediaRow {
        sha,
        mime: kind.mime.to_string(),
        width: kind.width,
        height: kind.height,
        size: body.len() as u64,
    };
    let store = data.store.clone();
    let (r, max_run) = (run.clone(), limits.media_max_run);
    let stored = row.clone();
    let put = web::block(move || store.media().put_media(&r, &stored, &body, max_run))
        .await
        .map_err(|e| ApiError::unavailable(format!("media worker failed: {e}")))??;
    match put {
        Put::Stored | Put::Held => Ok(HttpResponse::Ok().json(answer(&row))),
        Put::RunFull { used } => Err(ApiError::too_large(format!(
            "run {run} holds {used} bytes of media; {} more would pass the limit of {max_run} \
             per run (--media-max-run)",
            row.size
        ))
        .with("limit", max_run)),
    }
}

/// `GET /api/runs/{run}/media/{sha256}`: the bytes as stored, with their sniffed type,
/// never sniffed again by the browser, and sandboxed should one be opened on its own.
pub async fn get(data: Data, path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (run, sha) = path.into_inner();
    check_run(&run)?;
    check_sha(&sha)?;
    let store = data.store.clone();
    let (r, s) = (run.clone(), sha.clone());
    let found = web::block(move || store.media().media_bytes(&r, &s))
        .await
        .map_err(|e| ApiError::unavailable(format!("media worker failed: {e}")))??;
    let Some((row, bytes)) = found else {
        return Err(ApiError::not_found(format!(
            "run {run} holds no media {sha}"
        )));
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, row.mime))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; sandbox",
        ))
        .insert_header((header::CONTENT_DISPOSITION, "inline"))
        .insert_header((
            header::CACHE_CONTROL,
            "private, max-age=31536000, immutable",
        ))
        .body(bytes))
}

/// A batch's media events checked before anything is stored: shapes within the limits,
/// each image's bytes held by the run (its `mime`, `width`, `height` and `size` set from
/// them), and a `step` on every media event (the run's step where it falls in the
/// batch, as the reducer would count it), so each stored event says where it belongs.
pub(super) async fn check_ingest(
    data: &Data,
    run: &str,
    mut events: Vec<Event>,
) -> Result<Vec<Event>, ApiError> {
    if !events.iter().any(|e| media::media_of(&e.body).is_some()) {
        return Ok(events);
    }
    let bad = |index: usize, field: &str, what: String| {
        ApiError::bad_request(format!("event {index}: {field}: {what}"))
            .with("index", index)
            .with("field", field.to_string())
    };
    let mut step = data.store.state(run).map_or(0, |s| s.step);
    let mut wanted = Vec::new();
    for (index, e) in events.iter_mut().enumerate() {
        match &mut e.body {
            EventBody::BatchEnd(b) => step = b.step.unwrap_or(step + 1),
            EventBody::TextSample(t) => {
                t.step.get_or_insert(step);
            }
            EventBody::Histogram(h) => {
                h.step.get_or_insert(step);
            }
            EventBody::Image(i) => {
                i.step.get_or_insert(step);
            }
            _ => {}
        }
        if let Err(err) = media::check(&e.body) {
            return Err(bad(index, &err.field, err.message));
        }
        if let EventBody::Image(i) = &e.body {
            wanted.push((index, i.media.clone().unwrap_or_default()));
        }
    }
    if wanted.is_empty() {
        return Ok(events);
    }
    let store = data.store.clone();
    let r = run.to_string();
    let rows = web::block(move || {
        wanted
            .into_iter()
            .map(|(index, sha)| Ok((index, store.media().media_row(&r, &sha)?, sha)))
            .collect::<Result<Vec<_>, crate::storage::StoreError>>()
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("media worker failed: {e}")))??;
    for (index, row, sha) in rows {
        let Some(row) = row else {
            return Err(bad(
                index,
                "media",
                format!(
                    "run {run} holds no media {sha}: upload the bytes first \
                     (PUT /api/runs/{run}/media/{sha})"
                ),
            ));
        };
        if let EventBody::Image(i) = &mut events[index].body {
            i.mime = Some(row.mime);
            i.width = Some(row.width.into());
            i.height = Some(row.height.into());
            i.size = Some(row.size);
        }
    }
    Ok(events)
}

//! `GET /metrics`: the relay's counters and gauges in Prometheus text format.

use super::state::Data;
use actix_web::HttpResponse;
use std::sync::atomic::Ordering;

pub async fn metrics(data: Data) -> HttpResponse {
    let body = format!(
        "# HELP stepwatch_events_accepted_total Events stored since start.\n\
         # TYPE stepwatch_events_accepted_total counter\n\
         stepwatch_events_accepted_total {}\n\
         # HELP stepwatch_events_duplicate_total Retried events recognised by (src, seq) and not stored again.\n\
         # TYPE stepwatch_events_duplicate_total counter\n\
         stepwatch_events_duplicate_total {}\n\
         # HELP stepwatch_requests_rejected_total Ingest requests refused with a 4xx.\n\
         # TYPE stepwatch_requests_rejected_total counter\n\
         stepwatch_requests_rejected_total {}\n\
         # HELP stepwatch_events_stored Events in storage.\n\
         # TYPE stepwatch_events_stored gauge\n\
         stepwatch_events_stored {}\n\
         # HELP stepwatch_runs Runs in storage.\n\
         # TYPE stepwatch_runs gauge\n\
         stepwatch_runs {}\n\
         # HELP stepwatch_sse_streams Open SSE streams.\n\
         # TYPE stepwatch_sse_streams gauge\n\
         stepwatch_sse_streams {}\n\
         # HELP stepwatch_sse_cut_off_total Subscribers cut off for falling behind.\n\
         # TYPE stepwatch_sse_cut_off_total counter\n\
         stepwatch_sse_cut_off_total {}\n\
         # HELP stepwatch_storage_errors_total Ingest requests answered 503 because storage failed.\n\
         # TYPE stepwatch_storage_errors_total counter\n\
         stepwatch_storage_errors_total {}\n\
         # HELP stepwatch_stored_bytes Bytes the database takes on disk.\n\
         # TYPE stepwatch_stored_bytes gauge\n\
         stepwatch_stored_bytes {}\n{}",
        data.accepted.load(Ordering::Relaxed),
        data.duplicates.load(Ordering::Relaxed),
        data.rejected.load(Ordering::Relaxed),
        data.store.event_total(),
        data.store.runs().len(),
        data.hub.open_streams.load(Ordering::Relaxed),
        data.hub.cut_off.load(Ordering::Relaxed),
        data.storage_errors.load(Ordering::Relaxed),
        data.store.stored_bytes(),
        data.ingest_latency.render(
            "stepwatch_ingest_seconds",
            "Time from a batch's arrival to its durable commit."
        ),
    );
    let mut body = body;
    data.alerts.metrics.render(&mut body);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(body)
}

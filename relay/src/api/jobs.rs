//! The launch API (`docs/LAUNCH.md`): queues, templates, submissions, the job list and
//! stream, cancel and retry for users; heartbeat, claim and report for agents. Each
//! handler reads the body within a bound, hands the work to [`crate::launch::Launcher`]
//! off the async threads, and answers; a cancel of a job with a live trainer also sends
//! the run the `stop` command (`sender` `job-cancel:<who>`).

use super::access::identity;
use super::commands::issue;
use super::error::{check_run, ApiError};
use super::sse::{deliver, forward_live, open_ticket, sse_response, start, StreamGuard};
use super::state::Data;
use crate::auth::{Identity, Role};
use crate::launch::Launcher;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use stepwatch_events::jobs::{Entry, Heartbeat, JobView, Report};
use tokio::sync::mpsc;

/// Largest body of a launch request.
pub const MAX_JOB_BYTES: usize = 256 * 1024;

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, ApiError> {
    if body.len() > MAX_JOB_BYTES {
        return Err(ApiError::too_large(format!(
            "a {what} is at most {MAX_JOB_BYTES} bytes"
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{what}: {e}")))
}

/// What a non-admin sees of a job: environment values hidden (an admin's template may
/// hold a secret there), names kept.
fn redact(mut v: JobView, who: &Identity) -> JobView {
    if who.role == Role::Admin {
        return v;
    }
    let hide = |env: &mut std::collections::BTreeMap<String, String>| {
        for value in env.values_mut() {
            *value = HIDDEN.into();
        }
    };
    if let Some(l) = v.state.launch.as_mut() {
        hide(&mut l.env);
    }
    if let Some(Entry::Argv { env, .. }) = v.state.spec.as_mut().map(|s| &mut s.entry) {
        hide(env);
    }
    v
}

/// What a hidden value reads.
const HIDDEN: &str = "(hidden)";

/// Runs launcher work off the async threads.
async fn on_launcher<T: Send + 'static>(
    data: &Data,
    f: impl FnOnce(&Launcher) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let l: Arc<Launcher> = data.launch.clone();
    web::block(move || f(&l)).await?
}

/// Answers with the view of the job `f` finds or changes, as `who` may see it.
async fn answer_view(
    data: &Data,
    who: Identity,
    f: impl FnOnce(&Launcher) -> Result<crate::storage::jobs::JobRow, ApiError> + Send + 'static,
) -> Result<HttpResponse, ApiError> {
    let v = on_launcher(data, move |l| {
        let row = f(l)?;
        Ok(redact(l.view(&row, &l.context()), &who))
    })
    .await?;
    Ok(HttpResponse::Ok().json(v))
}

/// `GET /api/queues`.
pub async fn queues(data: Data, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let who = identity(&req);
    let q = on_launcher(&data, move |l| Ok(l.queues(&who))).await?;
    Ok(HttpResponse::Ok().json(q))
}

/// `GET /api/templates`.
pub async fn templates(data: Data, req: HttpRequest) -> HttpResponse {
    let admin = identity(&req).role == Role::Admin;
    let list: Vec<Value> = data
        .launch
        .config
        .templates
        .iter()
        .map(|t| {
            let mut t2 = t.template.clone();
            if !admin {
                for value in t2.env.values_mut() {
                    *value = HIDDEN.into();
                }
            }
            let mut v = serde_json::to_value(&t2).unwrap_or_default();
            v["queue"] = json!(t.queue);
            v
        })
        .collect();
    HttpResponse::Ok().json(list)
}

/// `POST /api/jobs/preview`.
pub async fn preview(data: Data, req: HttpRequest, body: Bytes) -> Result<HttpResponse, ApiError> {
    let spec: Value = parse(&body, "job")?;
    let who = identity(&req);
    let p = on_launcher(&data, move |l| l.preview(spec, &who)).await?;
    Ok(HttpResponse::Ok().json(p))
}

/// `POST /api/jobs`.
pub async fn submit(data: Data, req: HttpRequest, body: Bytes) -> Result<HttpResponse, ApiError> {
    let spec: Value = parse(&body, "job")?;
    let who = identity(&req);
    let s = on_launcher(&data, move |l| l.submit(spec, &who)).await?;
    Ok(HttpResponse::Created().json(s))
}

#[derive(Deserialize)]
pub struct ListQuery {
    queue: Option<String>,
    status: Option<String>,
    run: Option<String>,
    #[serde(default)]
    open: Option<u8>,
}

/// `GET /api/jobs`: queued jobs in queue order, then the others newest first.
pub async fn list(
    data: Data,
    req: HttpRequest,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = q.into_inner();
    let who = identity(&req);
    let views = on_launcher(&data, move |l| {
        let rows = l.rows()?;
        let mut views = l.views(&rows);
        views.retain(|v| {
            q.queue.as_ref().is_none_or(|x| &v.queue == x)
                && q.status
                    .as_ref()
                    .is_none_or(|x| v.state.status.as_str() == x)
                && q.run
                    .as_ref()
                    .is_none_or(|x| v.state.run.as_ref() == Some(x))
                && (q.open != Some(1) || !v.state.is_terminal())
        });
        views.sort_by(|a, b| match (a.position, b.position) {
            (Some(x), Some(y)) => a.queue.cmp(&b.queue).then(x.cmp(&y)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b
                .state
                .created_at
                .unwrap_or(0.0)
                .total_cmp(&a.state.created_at.unwrap_or(0.0)),
        });
        Ok(views
            .into_iter()
            .map(|v| redact(v, &who))
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(HttpResponse::Ok().json(views))
}

/// `GET /api/jobs/{id}`.
pub async fn get(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    answer_view(&data, identity(&req), move |l| l.row(&id)).await
}

/// `GET /api/runs/{run}/job`.
pub async fn of_run(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    answer_view(&data, identity(&req), move |l| {
        let id = l
            .job_of_run(&run)
            .ok_or_else(|| ApiError::not_found(format!("run {run:?} was not launched as a job")))?;
        l.row(&id)
    })
    .await
}

/// `POST /api/jobs/{id}/cancel`.
pub async fn cancel(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let who = identity(&req);
    let by = who.name.clone().unwrap_or_else(|| "dashboard".into());
    let (row, stop) = on_launcher(&data, move |l| l.cancel(&id, &who)).await?;
    let mut command = Value::Null;
    if let Some(run) = stop {
        if let Some(state) = data.store.state(&run) {
            let sent = issue(
                &data,
                &run,
                &state,
                "stop".into(),
                Map::new(),
                Some(format!("job-cancel:{by}")),
            )
            .await;
            match sent {
                Ok(answer) => command = answer,
                Err(e) => {
                    tracing::warn!(run = %run, "cancel: the stop command failed: {}", e.message)
                }
            }
        }
    }
    let who = identity(&req);
    let view = on_launcher(&data, move |l| Ok(redact(l.view(&row, &l.context()), &who))).await?;
    Ok(HttpResponse::Accepted().json(json!({ "job": view, "stop_command": command })))
}

#[derive(Deserialize)]
struct PriorityBody {
    priority: i32,
}

/// `POST /api/jobs/{id}/priority`: `{"priority": N}` moves a waiting job in its queue.
pub async fn priority(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let b: PriorityBody = parse(&body, "priority")?;
    let who = identity(&req);
    let who2 = who.clone();
    answer_view(&data, who, move |l| l.reprioritize(&id, b.priority, &who2)).await
}

/// `POST /api/jobs/{id}/retry`.
pub async fn retry(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let who = identity(&req);
    let s = on_launcher(&data, move |l| l.retry(&id, &who)).await?;
    Ok(HttpResponse::Created().json(s))
}

/// `POST /api/agents/heartbeat`.
pub async fn heartbeat(data: Data, body: Bytes) -> Result<HttpResponse, ApiError> {
    let hb: Heartbeat = parse(&body, "heartbeat")?;
    let a = on_launcher(&data, move |l| l.heartbeat(&hb)).await?;
    Ok(HttpResponse::Ok().json(a))
}

#[derive(Deserialize)]
struct ClaimBody {
    agent: String,
}

/// `POST /api/queues/{queue}/claim`: 200 with a launch, or 204.
pub async fn claim(
    data: Data,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let queue = path.into_inner();
    let b: ClaimBody = parse(&body, "claim")?;
    let got = on_launcher(&data, move |l| l.claim(&queue, &b.agent)).await?;
    Ok(match got {
        Some(launch) => HttpResponse::Ok().json(launch),
        None => HttpResponse::NoContent().finish(),
    })
}

/// `POST /api/jobs/{id}/report`.
pub async fn report(
    data: Data,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let r: Report = parse(&body, "report")?;
    let v = on_launcher(&data, move |l| l.report(&id, &r)).await?;
    Ok(HttpResponse::Ok().json(v))
}

#[derive(Deserialize)]
pub struct StreamQuery {
    queue: Option<String>,
}

fn job_message(json: &str) -> Bytes {
    Bytes::from(format!("event: job\ndata: {json}\n\n"))
}

/// `GET /api/jobs/stream?queue=`: every open job (and the recent finished ones) as it
/// stands, then each change live.
pub async fn stream(
    data: Data,
    req: HttpRequest,
    q: web::Query<StreamQuery>,
) -> Result<HttpResponse, ApiError> {
    let who = identity(&req);
    let ticket = open_ticket(&data, &who)?;
    let queue = q.into_inner().queue;
    let mut live = data.launch.subscribe();
    let q2 = queue.clone();
    let who2 = who.clone();
    let admin = who.role == Role::Admin;
    let now: Vec<String> = on_launcher(&data, move |l| {
        let rows = l.rows()?;
        Ok(l.views(&rows)
            .into_iter()
            .filter(|v| q2.as_ref().is_none_or(|x| &v.queue == x))
            .map(|v| redact(v, &who2))
            .filter_map(|v| serde_json::to_string(&v).ok())
            .collect())
    })
    .await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = StreamGuard::new(data.hub.clone());
    let who3 = who.clone();
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let _ticket = ticket;
        if start(&tx).await.is_err() {
            return;
        }
        for json in &now {
            if deliver(&tx, job_message(json)).await.is_err() {
                return;
            }
        }
        forward_live(&mut live, &tx, &_guard.0, |m| {
            let (q, json) = m.as_ref();
            if queue.as_ref().is_some_and(|x| x != q) {
                return None;
            }
            if admin {
                return Some(job_message(json));
            }
            let v: JobView = serde_json::from_str(json).ok()?;
            let v = redact(v, &who3);
            Some(job_message(&serde_json::to_string(&v).ok()?))
        })
        .await;
    });
    Ok(sse_response(rx, &who, &data.auth))
}

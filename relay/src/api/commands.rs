//! Control commands: a dashboard POSTs one, the relay records it as a `command` event in
//! the run's stream (so every open dashboard sees it), and delivers it to the trainer's
//! command stream until the trainer answers with `command_ack` events. The run state
//! (the shared reducer) says which commands are still open.

use super::access::identity;
use super::error::{check_run, ApiError};
use super::sse::{deliver, forward_live, open_ticket, sse_response, start, StreamGuard};
use super::state::Data;
use crate::clock::now;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use stepwatch_events::event::{Command, CommandAck};
use stepwatch_events::{Event, EventBody, RunState, COMMANDS};
use tokio::sync::mpsc;

/// Largest command body.
pub const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Checks a command against the run it is for; returns the command name and its args.
pub(crate) fn validate(
    state: &RunState,
    body: &Value,
) -> Result<(String, Map<String, Value>), ApiError> {
    let obj = body.as_object().ok_or_else(|| {
        ApiError::bad_request("a command is a JSON object: {\"command\": \"pause\", \"args\": {}}")
    })?;
    let command = match obj.get("command") {
        Some(Value::String(c)) => c.clone(),
        Some(_) => return Err(ApiError::bad_request("field \"command\" must be a string")),
        None => return Err(ApiError::bad_request("missing field \"command\"")),
    };
    if !COMMANDS.contains(&command.as_str()) {
        return Err(ApiError::bad_request(format!(
            "unknown command {command:?}: expected one of {}",
            COMMANDS.join(", ")
        )));
    }
    let args = match obj.get("args") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(ApiError::bad_request("field \"args\" must be an object")),
    };
    match command.as_str() {
        "load_checkpoint" => {
            let path = match args.get("path") {
                Some(Value::String(p)) if !p.is_empty() => p,
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "load_checkpoint: args.path must be a non-empty string",
                    ))
                }
                None => {
                    return Err(ApiError::bad_request(
                        "load_checkpoint needs args.path, the checkpoint to load",
                    ))
                }
            };
            if !state.checkpoints.iter().any(|c| &c.path == path) {
                return Err(ApiError::bad_request(format!(
                    "load_checkpoint: {path:?} is not a checkpoint this run reported (checkpoint_saved)"
                )));
            }
        }
        "ask" if args.get("input").is_none_or(Value::is_null) => {
            return Err(ApiError::bad_request(
                "ask needs args.input, the input for the model",
            ));
        }
        _ => {}
    }
    if !state.status.is_live() {
        return Err(ApiError::conflict(format!(
            "run {:?} has ended ({}): commands go to live runs only",
            state.run,
            state.status.as_str()
        )));
    }
    Ok((command, args))
}

fn new_id() -> String {
    format!("c-{:016x}", rand::random::<u64>())
}

/// Appends one relay-written event (a command, its cancellation, an alert rule or a
/// dismissal) to the run's stream; its event id.
pub(crate) async fn record(data: &Data, run: &str, body: EventBody) -> Result<u64, ApiError> {
    let store = data.store.clone();
    let hub = data.hub.clone();
    let run2 = run.to_string();
    let event = Event::new(body);
    let c = web::block(move || store.append(&run2, vec![event], now(), &|c| hub.publish(c)))
        .await?
        .map_err(|e| ApiError::from(e).with_suffix("; retry later"))?;
    data.accepted.fetch_add(1, Ordering::Relaxed);
    Ok(c.last_id)
}

/// `POST /api/runs/{run}/commands`.
pub async fn post_command(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    if body.len() > MAX_COMMAND_BYTES {
        return Err(ApiError::too_large(format!(
            "a command body is at most {MAX_COMMAND_BYTES} bytes"
        )));
    }
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    let (command, args) = validate(&state, &value)?;
    let answer = issue(&data, &run, &state, command, args, identity(&req).name).await?;
    Ok(HttpResponse::Accepted().json(answer))
}

/// Records a checked command for `run` (or finds the same one still open: a second
/// click returns the first); the answer's JSON.
pub(crate) async fn issue(
    data: &Data,
    run: &str,
    state: &RunState,
    command: String,
    args: Map<String, Value>,
    sender: Option<String>,
) -> Result<Value, ApiError> {
    if let Some(open) = state
        .open_commands()
        .find(|c| c.command == command && c.args == args)
    {
        return Ok(json!({
            "command_id": open.id, "duplicate": true, "status": open.status
        }));
    }
    let id = new_id();
    let body = EventBody::Command(Command {
        command_id: Some(id.clone()),
        command: Some(command),
        args: Some(args),
        sender,
        ..Default::default()
    });
    let event_id = record(data, run, body).await?;
    Ok(json!({ "command_id": id, "event_id": event_id }))
}

/// `POST /api/runs/{run}/commands/{id}/cancel`: withdraws a command nobody answered.
pub async fn cancel_command(
    data: Data,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (run, id) = path.into_inner();
    check_run(&run)?;
    let state = data
        .store
        .state(&run)
        .ok_or_else(|| ApiError::no_run(&run))?;
    let Some(cmd) = state.commands.iter().rev().find(|c| c.id == id) else {
        return Err(ApiError::not_found(format!(
            "run {run:?} has no command {id:?}"
        )));
    };
    if !cmd.is_open() {
        return Err(ApiError::conflict(format!(
            "command {id:?} is already {}",
            cmd.status
        )));
    }
    let body = EventBody::CommandAck(CommandAck {
        command_id: Some(id.clone()),
        status: Some("cancelled".into()),
        message: Some(match identity(&req).name {
            Some(who) => format!("cancelled by {who}"),
            None => "cancelled from the dashboard".into(),
        }),
        command: Some(cmd.command.clone()),
        ..Default::default()
    });
    record(&data, &run, body).await?;
    Ok(HttpResponse::Ok().json(json!({ "command_id": id, "status": "cancelled" })))
}

fn command_message(id: Option<u64>, json: &str) -> Bytes {
    match id {
        Some(id) => Bytes::from(format!("id: {id}\nevent: command\ndata: {json}\n\n")),
        None => Bytes::from(format!("event: command\ndata: {json}\n\n")),
    }
}

/// `GET /api/runs/{run}/commands/stream`: the trainer's feed — every open command, then
/// new ones live. The trainer drops ids it has already handled.
pub async fn command_stream(
    data: Data,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let run = path.into_inner();
    check_run(&run)?;
    let who = identity(&req);
    let ticket = open_ticket(&data, &who)?;
    let mut live = data.hub.subscribe_run(&run);
    // With their event ids: the ranks of a distributed run agree on them by number.
    let open: Vec<(Option<u64>, String)> = data
        .store
        .state(&run)
        .map(|s| {
            s.open_commands()
                .map(|c| {
                    let json = json!({"event": "command", "command_id": c.id, "command": c.command, "args": c.args, "time": c.sent_at});
                    (c.event_id, json.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let guard = StreamGuard::new(data.hub.clone());
    actix_web::rt::spawn(async move {
        let _guard = guard;
        let _ticket = ticket;
        if start(&tx).await.is_err() {
            return;
        }
        for (id, json) in &open {
            if deliver(&tx, command_message(*id, json)).await.is_err() {
                return;
            }
        }
        // A trainer that falls behind is cut off; it reconnects and gets every open command.
        forward_live(&mut live, &tx, &_guard.0, |piece| {
            let mut out = Vec::new();
            for e in piece.events.iter().filter(|e| &*e.name == "command") {
                out.extend_from_slice(&command_message(Some(e.id), &e.json));
            }
            (!out.is_empty()).then(|| Bytes::from(out))
        })
        .await;
    });
    Ok(sse_response(rx, &who, &data.auth))
}

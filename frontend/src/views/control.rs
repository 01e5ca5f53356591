//! Closing the loop: Pause / Resume / Stop in the run header, Load beside each
//! checkpoint, "Try the model", and the list of commands with the trainer's answers.
//! What the page shows comes from the trainer's acknowledgements in the run's stream,
//! never from the click.

use super::common::use_clock;
use super::login::can_command;
use crate::api;
use crate::i18n::{use_i18n, I18n, Key};
use crate::load::use_run;
use leptos::prelude::*;
use serde_json::{json, Value};
use stepwatch_events::{num, CommandState, RunStatus};

/// Seconds after which a command nobody answered shows as unanswered.
pub const UNANSWERED_AFTER_S: f64 = 10.0;

/// Where commands go: the relay base URL and the run.
#[derive(Clone)]
pub struct Target {
    pub base: String,
    pub run: String,
}

impl Target {
    /// The page's run, at the relay the page talks to (both from context).
    pub fn from_context() -> Target {
        Target {
            base: expect_context::<api::Base>().0,
            run: use_run().view.with_untracked(|v| v.state.run.clone()),
        }
    }
}

/// Sends a command; returns its id, or the relay's error message.
pub async fn send(target: &Target, command: &str, args: Value) -> Result<String, String> {
    let url = format!("{}/api/runs/{}/commands", target.base, target.run);
    let body = json!({ "command": command, "args": args }).to_string();
    let req = gloo_net::http::Request::post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .map_err(|e| e.to_string())?;
    let resp = req.send().await.map_err(|e| e.to_string())?;
    if resp.status() == 401 {
        api::probe_session();
    }
    let v: Value = resp.json().await.map_err(|e| e.to_string())?;
    if resp.ok() {
        Ok(v["command_id"].as_str().unwrap_or_default().to_string())
    } else {
        Err(v["error"].as_str().unwrap_or("error").to_string())
    }
}

async fn cancel(target: &Target, id: &str) -> Result<(), String> {
    let url = format!(
        "{}/api/runs/{}/commands/{id}/cancel",
        target.base, target.run
    );
    let resp = gloo_net::http::Request::post(&url)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if resp.ok() {
        Ok(())
    } else {
        Err(resp.status_text())
    }
}

fn status_key(status: &str) -> Key {
    match status {
        "accepted" => Key::CmdAccepted,
        "done" => Key::CmdDone,
        "rejected" => Key::CmdRejected,
        "failed" => Key::CmdFailed,
        "cancelled" => Key::CmdCancelled,
        _ => Key::CmdPending,
    }
}

/// A command's state as shown: its status, or unanswered when pending too long.
fn shown(c: &CommandState, now: f64) -> &'static str {
    if c.status == "pending" && c.sent_at.is_some_and(|t| now - t > UNANSWERED_AFTER_S) {
        "unanswered"
    } else {
        match c.status.as_str() {
            "accepted" => "accepted",
            "done" => "done",
            "rejected" => "rejected",
            "failed" => "failed",
            "cancelled" => "cancelled",
            _ => "pending",
        }
    }
}

fn label(i18n: I18n, c: &CommandState, now: f64) -> String {
    match shown(c, now) {
        "unanswered" => i18n.t(Key::Unanswered).to_string(),
        _ => i18n.t(status_key(&c.status)).to_string(),
    }
}

/// Pause / Resume / Stop for a live run.
#[component]
pub fn ControlBar() -> impl IntoView {
    let view_state = use_run().view;
    let target = Target::from_context();
    let i18n = use_i18n();
    let error = RwSignal::new(None::<String>);
    let confirm_stop = RwSignal::new(false);
    let status = move || view_state.with(|v| v.state.status);
    let open = move |cmd: &'static str| {
        view_state.with(|v| v.state.open_commands().any(|c| c.command == cmd))
    };
    let target = StoredValue::new(target);
    let fire = {
        move |cmd: &'static str| {
            let target = target.get_value();
            error.set(None);
            leptos::task::spawn_local(async move {
                if let Err(e) = send(&target, cmd, json!({})).await {
                    error.set(Some(e));
                }
            });
        }
    };
    let allowed = can_command();
    view! {
        {super::common::show(Signal::derive(move || status().is_live() && allowed.get()), move || view! { <div class="controls" data-testid="controls">
                {super::common::show(Signal::derive(move || status() != RunStatus::Paused), move || view! { <button class="btn" data-testid="pause" disabled=move || open("pause")
                        on:click=move |_| fire("pause")>
                        "❚❚ "{i18n.tr(Key::Pause)}{move || open("pause").then_some("…")}
                    </button> })}
                {super::common::show(Signal::derive(move || status() == RunStatus::Paused), move || view! { <button class="btn primary" data-testid="resume" disabled=move || open("resume")
                        on:click=move |_| fire("resume")>
                        "▶ "{i18n.tr(Key::Resume)}{move || open("resume").then_some("…")}
                    </button> })}
                <button class=move || if confirm_stop.get() { "btn danger on" } else { "btn danger" } data-testid="stop"
                    disabled=move || open("stop")
                    on:click=move |_| {
                        if confirm_stop.get_untracked() { confirm_stop.set(false); fire("stop") } else { confirm_stop.set(true) }
                    }
                    on:blur=move |_| confirm_stop.set(false)>
                    "■ "{move || if confirm_stop.get() { i18n.t(Key::ReallyStop) } else { i18n.t(Key::Stop) }}
                </button>
                {move || error.get().map(|e| view! { <span class="small alert" data-testid="control-error">{i18n.t(Key::SendFailed)}": "{e}</span> })}
            </div> })}
    }
}

/// The Load button of one checkpoint, with the state of its last load command.
#[component]
pub fn LoadButton(path: String) -> impl IntoView {
    let view_state = use_run().view;
    let target = Target::from_context();
    let i18n = use_i18n();
    let clock = use_clock();
    let error = RwSignal::new(None::<String>);
    let path = StoredValue::new(path);
    let target = StoredValue::new(target);
    let last = move || {
        let p = path.get_value();
        view_state.with(|v| {
            v.state
                .commands
                .iter()
                .rev()
                .find(|c| {
                    c.command == "load_checkpoint"
                        && c.args.get("path").and_then(Value::as_str) == Some(p.as_str())
                })
                .cloned()
        })
    };
    let live = move || view_state.with(|v| v.state.status.is_live());
    let click = move |_| {
        let target = target.get_value();
        let path = path.get_value();
        error.set(None);
        leptos::task::spawn_local(async move {
            if let Err(e) = send(&target, "load_checkpoint", json!({ "path": path })).await {
                error.set(Some(e));
            }
        });
    };
    let allowed = can_command();
    view! {
        {super::common::show(Signal::derive(move || live() && allowed.get()), move || view! { <button class="mini" data-testid="load" on:click=click
                disabled=move || last().is_some_and(|c| c.is_open())>{i18n.tr(Key::Load)}</button> })}
        {move || last().map(|c| {
            let st = shown(&c, clock.get());
            view! { <span class=format!("cmd-state {st}") data-testid="load-state" data-state=st title=c.message.clone().unwrap_or_default()>{label(i18n, &c, clock.get())}</span> }
        })}
        {move || error.get().map(|e| view! { <span class="small alert">{e}</span> })}
    }
}

/// "Try the model": sends `ask` and shows the trainer's answer with its latency.
#[component]
pub fn AskPanel() -> impl IntoView {
    let view_state = use_run().view;
    let target = Target::from_context();
    let i18n = use_i18n();
    let clock = use_clock();
    let input = RwSignal::new(String::new());
    let asked = RwSignal::new(None::<(String, f64)>);
    let error = RwSignal::new(None::<String>);
    let current = move || {
        asked.get().and_then(|(id, _)| {
            view_state.with(|v| v.state.commands.iter().rev().find(|c| c.id == id).cloned())
        })
    };
    let submit = move || {
        let text = input.get_untracked();
        if text.trim().is_empty() {
            return;
        }
        // JSON input travels as JSON (numbers for a classifier), anything else as text.
        let value = serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text));
        let target = target.clone();
        error.set(None);
        leptos::task::spawn_local(async move {
            match send(&target, "ask", json!({ "input": value })).await {
                Ok(id) => asked.set(Some((id, crate::api::now_s()))),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    let submit2 = submit.clone();
    let allowed = can_command();
    // A finished run takes no more commands (409): the panel goes, unless it shows an answer.
    let panel_shown = move || {
        allowed.get()
            && (view_state.with(|v| v.state.status.is_live()) || asked.with(Option::is_some))
    };
    view! {
        <section class="panel" data-testid="ask" style:display=move || if panel_shown() { "" } else { "none" }>
            <div class="panel-head"><h2>{i18n.tr(Key::TryModel)}</h2></div>
            <div class="ask-row">
                <textarea data-testid="ask-input" rows="2" placeholder=i18n.tr(Key::AskPlaceholder)
                    prop:value=move || input.get() on:input=move |ev| input.set(event_target_value(&ev))
                    on:keydown=move |ev: web_sys::KeyboardEvent| if ev.key() == "Enter" && (ev.ctrl_key() || ev.meta_key()) { submit2() }></textarea>
                <button class="btn primary" data-testid="ask-send" on:click=move |_| submit()>{i18n.tr(Key::Send)}</button>
            </div>
            {move || error.get().map(|e| view! { <p class="small alert" data-testid="ask-error">{e}</p> })}
            {move || current().map(|c| {
                let st = shown(&c, clock.get());
                let latency = match (c.status.as_str(), c.sent_at, c.updated_at) {
                    ("done", Some(a), Some(b)) => Some(format!("{} {:.0} ms", i18n.t(Key::Latency), (b - a).max(0.0) * 1000.0)),
                    _ => None,
                };
                view! {
                    <div class="ask-result" data-testid="ask-result" data-state=st>
                        <span class=format!("cmd-state {st}")>{label(i18n, &c, clock.get())}</span>
                        {latency.map(|l| view! { <span class="muted small" data-testid="ask-latency">" · "{l}</span> })}
                        {c.message.clone().filter(|_| c.status != "done").map(|m| view! { <p class="small" data-testid="ask-message">{m}</p> })}
                        {c.output.clone().map(output_view)}
                    </div>
                }
            })}
        </section>
    }
}

/// A model's output: text as text, numbers and objects as a table.
fn output_view(v: Value) -> AnyView {
    match v {
        Value::String(s) => view! { <pre class="ask-output" data-testid="ask-output">{s}</pre> }.into_any(),
        Value::Object(m) => view! {
            <table class="kv" data-testid="ask-output">
                {m.into_iter().map(|(k, v)| view! { <tr><th>{k}</th><td>{cell(&v)}</td></tr> }).collect_view()}
            </table>
        }
        .into_any(),
        Value::Array(items) => view! {
            <table class="kv" data-testid="ask-output">
                {items.into_iter().enumerate().map(|(i, v)| view! { <tr><th>{i}</th><td>{cell(&v)}</td></tr> }).collect_view()}
            </table>
        }
        .into_any(),
        other => view! { <pre class="ask-output" data-testid="ask-output">{cell(&other)}</pre> }.into_any(),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |x| num::display(x, 5)),
        other => other.to_string(),
    }
}

/// Every command sent to the run, newest first, with the trainer's answers.
#[component]
pub fn CommandsPanel() -> impl IntoView {
    let view_state = use_run().view;
    let target = Target::from_context();
    let i18n = use_i18n();
    let clock = use_clock();
    let allowed = can_command();
    let rows = move || {
        view_state.with(|v| {
            v.state
                .commands
                .iter()
                .rev()
                .take(20)
                .cloned()
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="panel" data-testid="commands">
            <div class="panel-head"><h2>{i18n.tr(Key::Commands)}</h2></div>
            {super::common::note_when("muted", Key::NoCommands, Signal::derive(move || view_state.with(|v| v.state.commands.is_empty())))}
            <table class="grid">
                <tbody>
                {move || rows().into_iter().map(|c| {
                    let now = clock.get();
                    let st = shown(&c, now);
                    let target = target.clone();
                    let id = c.id.clone();
                    let args = if c.args.is_empty() { String::new() } else { Value::Object(c.args.clone()).to_string() };
                    view! {
                        <tr data-testid="command-row" data-command=c.command.clone() data-state=st>
                            <td class="mono">{c.command.clone()}</td>
                            <td class="mono small muted">{args}</td>
                            <td><span class=format!("cmd-state {st}")>{label(i18n, &c, now)}</span></td>
                            <td class="small muted cmd-msg" data-testid="command-message">{command_story(&c)}{waiting(i18n.t(Key::WaitingRanks), &c)}</td>
                            <td class="small muted" data-testid="command-sender">{c.sender.clone().map(|who| format!("{} {who}, {}", i18n.t(Key::SentBy), clock_time(c.sent_at)))}</td>
                            <td>{(allowed.get_untracked() && (st == "unanswered" || st == "pending")).then(|| view! {
                                <button class="mini" data-testid="cancel" on:click=move |_| {
                                    let target = target.clone();
                                    let id = id.clone();
                                    leptos::task::spawn_local(async move { let _ = cancel(&target, &id).await; });
                                }>{i18n.t(Key::Cancel)}</button>
                            })}</td>
                        </tr>
                    }
                }).collect_view()}
                </tbody>
            </table>
        </section>
    }
}

/// " · waiting for ranks 1, 3": the ranks of a distributed run that have not acted yet.
fn waiting(words: &str, c: &CommandState) -> String {
    if c.waiting.is_empty() || !c.is_open() {
        return String::new();
    }
    let ranks: Vec<String> = c.waiting.iter().map(u64::to_string).collect();
    format!(" · {words} {}", ranks.join(", "))
}

/// Local wall-clock time "14:02" of unix seconds.
pub fn clock_time(t: Option<f64>) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t.unwrap_or(0.0) * 1000.0));
    format!("{:02}:{:02}", d.get_hours(), d.get_minutes())
}

/// What the trainer said about a command, step by step ("stop accepted; … → interrupting
/// the loop at step 44 (KeyboardInterrupt) → stopped").
pub fn command_story(c: &CommandState) -> String {
    if c.messages.is_empty() {
        c.message.clone().unwrap_or_default()
    } else {
        c.messages.join(" → ")
    }
}

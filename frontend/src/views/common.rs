//! Small pieces shared by the pages: status pill, connection badge, stat tiles,
//! formatting, downloads.

use crate::api::ConnState;
use crate::i18n::{use_i18n, I18n, Key};
use crate::model::ShownStatus;
use leptos::prelude::*;
use stepwatch_events::{num, RunStatus};
use wasm_bindgen::JsCast;

/// A clock ticking every second, for relative times, staleness and rates.
#[derive(Clone, Copy)]
pub struct Clock(pub RwSignal<f64>);

/// The clock from context.
pub fn use_clock() -> RwSignal<f64> {
    expect_context::<Clock>().0
}

pub fn status_key(s: ShownStatus) -> Key {
    match s {
        ShownStatus::Stale => Key::StatusStale,
        ShownStatus::Run(RunStatus::Pending) => Key::StatusPending,
        ShownStatus::Run(RunStatus::Running) => Key::StatusRunning,
        ShownStatus::Run(RunStatus::Paused) => Key::StatusPaused,
        ShownStatus::Run(RunStatus::Completed) => Key::StatusCompleted,
        ShownStatus::Run(RunStatus::Failed) => Key::StatusFailed,
        ShownStatus::Run(RunStatus::Stopped) => Key::StatusStopped,
    }
}

/// A number for people, "–" when absent.
pub fn fmt_opt(x: Option<f64>, digits: usize) -> String {
    x.map_or_else(|| "–".to_string(), |v| num::display(v, digits))
}

/// A loss for a tile: scientific below 0.01 so it fits (`1.123e-3`, not `0.0011234`).
pub fn fmt_loss(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() && v != 0.0 && v.abs() < 1e-2 => format!("{v:.3e}"),
        other => fmt_opt(other, 5),
    }
}

/// A learning rate: scientific below 1e-3 so it fits a tile (`1.52e-4`).
pub fn fmt_lr(x: Option<f64>) -> String {
    match x {
        Some(v) if v.is_finite() && v != 0.0 && v.abs() < 1e-3 => format!("{v:.2e}"),
        other => fmt_opt(other, 3),
    }
}

/// "5 s ago", "3 min ago", in the UI language.
pub fn ago(i18n: I18n, then: Option<f64>, now: f64) -> String {
    let Some(t) = then else {
        return "–".into();
    };
    let d = (now - t).max(0.0);
    if d < 5.0 {
        i18n.t(Key::JustNow).to_string()
    } else if d < 60.0 {
        format!("{} {}", d as u64, i18n.t(Key::SecondsAgo))
    } else if d < 3600.0 {
        format!("{} {}", (d / 60.0) as u64, i18n.t(Key::MinutesAgo))
    } else if d < 86400.0 {
        format!("{} {}", (d / 3600.0) as u64, i18n.t(Key::HoursAgo))
    } else {
        format!("{} {}", (d / 86400.0) as u64, i18n.t(Key::DaysAgo))
    }
}

/// Whether the OS asks for the light theme.
pub fn prefers_light() -> bool {
    web_sys::window()
        .and_then(|w| {
            w.match_media("(prefers-color-scheme: light)")
                .ok()
                .flatten()
        })
        .is_some_and(|m| m.matches())
}

/// Offers `data` as a file download named `name`.
pub fn download(name: &str, mime: &str, data: &str) {
    let parts = js_sys::Array::of1(&wasm_bindgen::JsValue::from_str(data));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else {
        return;
    };
    if let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) {
        download_url(name, &url);
        let _ = web_sys::Url::revoke_object_url(&url);
    }
}

/// Clicks a temporary `<a download>` for `url`.
pub fn download_url(name: &str, url: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    if let Ok(a) = doc.create_element("a") {
        if let Ok(a) = a.dyn_into::<web_sys::HtmlAnchorElement>() {
            a.set_href(url);
            a.set_download(name);
            if let Some(body) = doc.body() {
                let _ = body.append_child(&a);
                a.click();
                let _ = body.remove_child(&a);
            }
        }
    }
}

/// The stream's state. On the page of a run that has ended (`ended`), a working stream
/// reads "ended" in grey rather than a green "live": nothing more will come.
#[component]
pub fn ConnBadge(
    conn: ReadSignal<ConnState>,
    #[prop(optional)] ended: Option<Signal<bool>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let ended = move || ended.is_some_and(|e| e.get()) && conn.get() == ConnState::Live;
    view! {
        <span class=move || match conn.get() {
            ConnState::Live if ended() => "conn ended",
            ConnState::Live => "conn live",
            ConnState::Connecting => "conn",
            ConnState::Reconnecting => "conn down",
            ConnState::Offline => "conn offline",
        } data-testid="conn" data-state=move || match conn.get() {
            ConnState::Live => "live",
            ConnState::Connecting => "connecting",
            ConnState::Reconnecting => "reconnecting",
            ConnState::Offline => "offline",
        } data-ended=move || ended().to_string()>
            {move || i18n.t(match conn.get() {
                ConnState::Live if ended() => Key::Ended,
                ConnState::Live => Key::Live,
                ConnState::Connecting => Key::Connecting,
                ConnState::Reconnecting => Key::Reconnecting,
                ConnState::Offline => Key::Offline,
            })}
        </span>
    }
}

#[component]
pub fn StatusPill(status: Signal<ShownStatus>) -> impl IntoView {
    let i18n = use_i18n();
    view! {
        <span class=move || format!("status {}", status.get().as_str()) data-testid="status"
            data-status=move || status.get().as_str()>
            <span class="dot">"●"</span>
            {move || i18n.t(status_key(status.get()))}
        </span>
    }
}

/// One tile of the run header: a label (`label`, or `label_of` when it changes), a value,
/// optionally a bar (`frac`; `cut` marks a run that ended short of it, with `note`
/// under it), a tooltip (`hint`) and the alert colour.
#[component]
pub fn Stat(
    label: Key,
    testid: &'static str,
    value: Signal<String>,
    #[prop(optional)] label_of: Option<Signal<Key>>,
    #[prop(optional)] frac: Option<Signal<f64>>,
    #[prop(optional)] cut: Option<Signal<bool>>,
    #[prop(optional)] note: Option<Signal<String>>,
    #[prop(optional)] hint: Option<Signal<String>>,
    #[prop(optional)] alert: Option<Signal<bool>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let alert = move || alert.is_some_and(|a| a.get());
    let cut = move || cut.is_some_and(|c| c.get());
    let label = move || i18n.t(label_of.map_or(label, |l| l.get()));
    view! {
        <div class="stat" title=move || hint.map(|h| h.get())>
            <div class="label">{label}</div>
            <div class=move || if alert() { "value alert" } else { "value" } data-testid=testid>{value}</div>
            {frac.map(|f| view! {
                <div class=move || if cut() { "bar cut" } else { "bar" } data-testid=format!("{testid}-bar")
                    data-frac=move || format!("{:.4}", f.get())>
                    <div class="fill" style=move || format!("width:{:.1}%", f.get() * 100.0)></div>
                </div>
            })}
            {note.map(|n| view! { <div class="stat-note" data-testid=format!("{testid}-note")>{n}</div> })}
        </div>
    }
}

/// A paragraph of class `class` saying `key` while `when` holds ("No logs yet."):
/// every such message on every page is this one view, compiled once (a `<Show>` each
/// would compile the framework's code once per use).
pub fn note_when(class: &'static str, key: Key, when: Signal<bool>) -> impl IntoView {
    let i18n = use_i18n();
    move || {
        when.get()
            .then(|| view! { <p class=class>{i18n.tr(key)}</p> })
    }
}

/// `view` while `when` holds, built again each time it turns true. A `<Show>` compiles
/// the framework's code once per use; this compiles it once per view type.
pub fn show<V: IntoView + 'static>(
    when: Signal<bool>,
    view: impl Fn() -> V + Send + Sync + 'static,
) -> impl IntoView {
    let on = Memo::new(move |_| when.get());
    move || on.get().then(&view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_rates_fit_a_tile() {
        assert_eq!(fmt_lr(Some(0.000152)), "1.52e-4");
        assert_eq!(fmt_lr(Some(0.001)), "0.001");
        assert_eq!(fmt_lr(Some(0.0)), "0");
        assert_eq!(fmt_lr(None), "–");
        assert_eq!(fmt_lr(Some(f64::NAN)), "NaN");
    }
}

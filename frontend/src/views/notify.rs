//! Browser notifications for alerts: the header's toggle (asks the browser's permission,
//! remembered in localStorage) and [`show`], which the runs list and the run page call
//! when an alert fires.

use crate::i18n::{use_i18n, Key};
use leptos::prelude::*;
use web_sys::{Notification, NotificationOptions, NotificationPermission};

const STORE: &str = "stepwatch.notify";

/// Whether this browser has notifications here (not in an insecure context, say).
fn supported() -> bool {
    js_sys::Reflect::has(&window(), &"Notification".into()).unwrap_or(false)
}

fn granted() -> bool {
    supported() && Notification::permission() == NotificationPermission::Granted
}

fn stored() -> bool {
    window()
        .local_storage()
        .ok()
        .flatten()
        .and_then(|s| s.get_item(STORE).ok().flatten())
        .is_some_and(|v| v == "1")
}

fn store(on: bool) {
    if let Ok(Some(s)) = window().local_storage() {
        let _ = s.set_item(STORE, if on { "1" } else { "0" });
    }
}

/// Shows a notification when the user turned them on and the browser allows them;
/// `tag` keeps one per alert.
pub fn show(title: &str, body: &str, tag: &str) {
    if !(stored() && granted()) {
        return;
    }
    let opts = NotificationOptions::new();
    opts.set_body(body);
    opts.set_tag(tag);
    let _ = Notification::new_with_options(title, &opts);
}

/// "Notify me": asks the browser's permission the first time, then switches on and off.
#[component]
pub fn NotifyToggle() -> impl IntoView {
    let i18n = use_i18n();
    let on = RwSignal::new(stored() && granted());
    let blocked =
        RwSignal::new(supported() && Notification::permission() == NotificationPermission::Denied);
    let click = move |_| {
        if on.get_untracked() {
            on.set(false);
            store(false);
            return;
        }
        if !supported() {
            blocked.set(true);
            return;
        }
        let Ok(asked) = Notification::request_permission() else {
            return;
        };
        leptos::task::spawn_local(async move {
            let answer = wasm_bindgen_futures::JsFuture::from(asked).await;
            let yes = answer.ok().and_then(|v| v.as_string()).as_deref() == Some("granted");
            on.set(yes);
            blocked.set(!yes);
            store(yes);
        });
    };
    view! {
        <button class=move || if on.get() { "btn on notify" } else { "btn notify" } data-testid="notify-toggle" on:click=click
            aria-pressed=move || on.get().to_string()
            title=move || i18n.t(if blocked.get() { Key::NotifyBlocked } else { Key::NotifyHint })>
            {move || i18n.t(if on.get() { Key::NotifyOn } else { Key::NotifyMe })}
        </button>
    }
}

//! The run's tags, group and notes (`run_meta`): shown under the header, the notes as
//! safe HTML ([`crate::model::markdown`]); for roles that may command, an editor that
//! checks with the relay's own [`meta::check`] and POSTs `/api/runs/{run}/meta`; and
//! the history of changes (who, when, what) from the run's `run_meta` events.

use super::common::ago;
use super::common::use_clock;
use super::control::Target;
use super::job::Html;
use super::login::can_command;
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::load::use_run;
use crate::model::markdown;
use leptos::prelude::*;
use stepwatch_events::event::RunMeta;
use stepwatch_events::{meta, EventBody};

/// Tags as chips; a chip links to the runs list filtered by it.
pub fn tag_chips(h: &mut Html, tags: &[String]) {
    for t in tags {
        h.raw("<a class=\"tag\" data-testid=\"tag\" href=\"#/?tag=")
            .text(&crate::route::enc(t))
            .raw("\">")
            .text(t)
            .raw("</a>");
    }
}

/// The meta panel of the run page.
#[component]
pub fn MetaPanel() -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let allowed = can_command();
    let editing = RwSignal::new(false);
    let history = RwSignal::new(None::<String>);
    let shown = move || {
        let mut h = Html::default();
        view_state.with(|v| {
            let s = &v.state;
            h.raw("<div class=\"meta-line\">");
            tag_chips(&mut h, &s.tags);
            if let Some(g) = &s.group {
                h.raw("<a class=\"group-label\" data-testid=\"group\" href=\"#/?group=")
                    .text(&crate::route::enc(g))
                    .raw("\">")
                    .text(i18n.t(Key::Group))
                    .raw(": ")
                    .text(g)
                    .raw("</a>");
            }
            h.raw("</div>");
            if let Some(n) = &s.notes {
                h.raw("<div class=\"notes\" data-testid=\"notes\">")
                    .raw(&markdown::to_html(n))
                    .raw("</div>");
            }
        });
        h.0
    };
    let empty = move || {
        view_state
            .with(|v| v.state.tags.is_empty() && v.state.group.is_none() && v.state.notes.is_none())
    };
    // The history is read when opened, and again when the run's meta changes.
    let load_history = move || {
        let t = target.get_value();
        let now = clock.get_untracked();
        leptos::task::spawn_local(async move {
            let url = api::run_url(
                &t.base,
                &t.run,
                "/events?event=run_meta&order=desc&limit=100",
            );
            let Some(text) = api::get_text(&url, 1).await else {
                return;
            };
            let mut h = Html::default();
            for e in stepwatch_events::api::decode_events(&text) {
                let EventBody::RunMeta(m) = &e.body else {
                    continue;
                };
                h.raw("<li>")
                    .text(&ago(i18n, e.timestamp(), now))
                    .raw(" · <b>")
                    .text(m.sender.as_deref().unwrap_or(i18n.t(Key::Trainer)))
                    .raw("</b> ");
                if let Some(tags) = &m.tags {
                    h.text(i18n.t(Key::Tags))
                        .raw(": ")
                        .text(&tags.join(", "))
                        .raw("; ");
                }
                if let Some(g) = &m.group {
                    h.text(i18n.t(Key::Group)).raw(": ").text(g).raw("; ");
                }
                if m.notes.is_some() {
                    h.text(i18n.t(Key::NotesEdited));
                }
                h.raw("</li>");
            }
            history.try_set(Some(h.0));
        });
    };
    Effect::new(move |_| {
        // Tracks the run's meta; asks again only once the history was opened.
        view_state.with(|v| {
            v.state.tags.len()
                + v.state.notes.as_ref().map_or(0, String::len)
                + v.state.group.as_ref().map_or(0, String::len)
        });
        if history.get_untracked().is_some() {
            load_history();
        }
    });
    view! {
        <section class="panel meta-panel" data-testid="meta-panel">
            <div class="panel-head">
                <h2>{i18n.tr(Key::Notes)}</h2>
                <span class="spacer"></span>
                {super::common::show(Signal::derive(move || allowed.get() && !editing.get()), move || view! { <button class="btn small" data-testid="meta-edit" on:click=move |_| editing.set(true)>{i18n.tr(Key::Edit)}</button> })}
            </div>
            {super::common::show(Signal::derive(move || !editing.get()), move || view! { <div inner_html=shown></div>
                {super::common::note_when("muted small", Key::NoNotes, Signal::derive(empty))} })}
            {super::common::show(Signal::derive(move || editing.get()), move || view! { <MetaForm editing=editing/> })}
            <details class="small" on:toggle=move |_| if history.get_untracked().is_none() { load_history() }>
                <summary>{i18n.tr(Key::MetaHistory)}</summary>
                <ul class="meta-history" data-testid="meta-history" inner_html=move || history.get().unwrap_or_default()></ul>
            </details>
        </section>
    }
}

/// The editor: tags (comma-separated), group, notes; Save checks, then POSTs. The
/// inputs hold their own text (read when saving), so typing costs no signal updates.
#[component]
fn MetaForm(editing: RwSignal<bool>) -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let target = StoredValue::new(Target::from_context());
    let (tags0, group0, notes0) = view_state.with_untracked(|v| {
        let s = &v.state;
        (
            s.tags.join(", "),
            s.group.clone().unwrap_or_default(),
            s.notes.clone().unwrap_or_default(),
        )
    });
    let tags = NodeRef::<leptos::html::Input>::new();
    let group = NodeRef::<leptos::html::Input>::new();
    let notes = NodeRef::<leptos::html::Textarea>::new();
    let error = RwSignal::new(None::<(String, String)>);
    let busy = RwSignal::new(false);
    let save = move |_| {
        let text = |r: NodeRef<leptos::html::Input>| {
            r.get_untracked().map(|e| e.value()).unwrap_or_default()
        };
        let mut m = RunMeta {
            tags: Some(meta::parse_tags(&text(tags))),
            group: Some(text(group)),
            notes: Some(notes.get_untracked().map(|e| e.value()).unwrap_or_default()),
            ..Default::default()
        };
        if let Err(e) = meta::check(&mut m) {
            error.set(Some((e.field.clone(), e.to_string())));
            return;
        }
        let body =
            serde_json::json!({"tags": m.tags, "group": m.group, "notes": m.notes}).to_string();
        let t = target.get_value();
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            match api::post_json(&api::run_url(&t.base, &t.run, "/meta"), body).await {
                Ok(_) => editing.set(false),
                Err(r) => error.set(Some((r.field.unwrap_or_default(), r.error))),
            }
            busy.set(false);
        });
    };
    view! {
        <div class="meta-form" data-testid="meta-form">
            <label>{i18n.tr(Key::Tags)}
                <input data-testid="meta-tags" node_ref=tags placeholder=i18n.tr(Key::TagsHint) value=tags0/></label>
            <label>{i18n.tr(Key::Group)}
                <input data-testid="meta-group" node_ref=group value=group0/></label>
            <label>{i18n.tr(Key::Notes)}
                <textarea data-testid="meta-notes" node_ref=notes rows="6" placeholder=i18n.tr(Key::NotesHint)>{notes0}</textarea></label>
            <p class="small alert field-error" data-testid="meta-error" data-field=move || error.get().map(|e| e.0)>{move || error.get().map(|e| e.1)}</p>
            <div class="row">
                <button class="btn primary" data-testid="meta-save" disabled=move || busy.get() on:click=save>{i18n.tr(Key::Save)}</button>
                <button class="btn" on:click=move |_| editing.set(false)>{i18n.tr(Key::Cancel)}</button>
            </div>
        </div>
    }
}

//! The samples panel of a run: what the model produced, by step. A step slider (live:
//! following the newest step until moved) chooses what shows: the image grid (each tag's
//! images of that step; a click opens one full size), each histogram tag as a heatmap
//! over steps with that step marked ([`crate::heatmap`]), and the text samples and "Try
//! the model" answers up to that step, newest first. The markup comes from
//! [`crate::model::media`].

use super::common::{prefers_light, show};
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::load::use_run;
use crate::model::media;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

#[component]
pub fn MediaPanel() -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let base = StoredValue::new(expect_context::<api::Base>().0);
    // `None`: follow the newest step.
    let at = RwSignal::new(None::<u64>);
    let zoom = RwSignal::new(None::<String>);
    let steps = Memo::new(move |_| view_state.with(media::steps));
    let words = move || media::Words {
        step: i18n.t(Key::Step),
        asked: i18n.t(Key::TryModel),
        prompt: i18n.t(Key::Prompt),
        answer: i18n.t(Key::Answer),
    };
    let images = move || {
        base.with_value(|b| view_state.with(|v| media::images_html(v, b, at.get(), &words())))
    };
    let texts = move || view_state.with(|v| media::texts_html(v, at.get(), &words()));
    let tags = Memo::new(move |_| {
        view_state.with(|v| {
            media::histograms(v)
                .iter()
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>()
        })
    });
    let index = move || {
        let s = steps.get();
        match at.get() {
            None => s.len().saturating_sub(1),
            Some(a) => s
                .iter()
                .position(|x| *x >= a)
                .unwrap_or(s.len().saturating_sub(1)),
        }
    };
    let label = move || {
        let s = steps.get();
        let step = at.get().or(s.last().copied()).unwrap_or(0);
        let live = if at.get().is_none() {
            format!(" · {}", i18n.t(Key::Latest))
        } else {
            String::new()
        };
        format!("{} {step}{live}", i18n.t(Key::Step))
    };
    let pick = move |ev: leptos::ev::Event| {
        let i: usize = event_target_value(&ev).parse().unwrap_or(0);
        let s = steps.get_untracked();
        at.set(if i + 1 >= s.len() {
            None
        } else {
            s.get(i).copied()
        });
    };
    let open = move |ev: leptos::ev::MouseEvent| {
        let full = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
            .and_then(|el| el.get_attribute("data-full"));
        if full.is_some() {
            zoom.set(full);
        }
    };
    let any = Signal::derive(move || !steps.with(Vec::is_empty));
    show(any, move || {
        view! {
            <section class="panel media" data-testid="media">
                <div class="panel-head">
                    <h2>{i18n.tr(Key::Samples)}</h2>
                    <div class="media-bar">
                        <input type="range" data-testid="media-step" min="0"
                            prop:max=move || steps.with(|s| s.len().saturating_sub(1)).to_string()
                            prop:value=move || index().to_string()
                            on:input=pick/>
                        <span class="mono small" data-testid="media-step-label">{label}</span>
                    </div>
                </div>
                <div class="media-images" data-testid="images" on:click=open inner_html=images></div>
                <For each=move || tags.get() key=|t| t.clone() let:tag>
                    <HistogramView tag=tag at=at/>
                </For>
                <div class="samples" data-testid="samples" inner_html=texts></div>
                {move || zoom.get().map(|url| view! {
                    <div class="lightbox" data-testid="lightbox" on:click=move |_| zoom.set(None)>
                        <img src=url data-testid="lightbox-image"/>
                    </div>
                })}
            </section>
        }
    })
}

#[component]
fn HistogramView(tag: String, at: RwSignal<Option<u64>>) -> impl IntoView {
    let i18n = use_i18n();
    let view_state = use_run().view;
    let canvas = NodeRef::<leptos::html::Canvas>::new();
    let name = tag.clone();
    let words = move || media::Words {
        step: i18n.t(Key::Step),
        asked: "",
        prompt: "",
        answer: "",
    };
    let note = {
        let name = name.clone();
        move || {
            view_state.with(|v| {
                media::histograms(v)
                    .iter()
                    .find(|s| s.name == name)
                    .map(|s| media::hist_note(s, at.get(), &words()))
                    .unwrap_or_default()
            })
        }
    };
    Effect::new(move |_| {
        let Some(c) = canvas.get() else { return };
        let when = at.get();
        let theme = if prefers_light() {
            crate::chart::LIGHT
        } else {
            crate::chart::DARK
        };
        view_state.with(|v| {
            if let Some(s) = media::histograms(v).iter().find(|s| s.name == name) {
                crate::heatmap::draw(&c, s, when, theme);
            }
        });
    });
    view! {
        <div class="hist" data-testid="histogram" data-tag=tag.clone()>
            <div class="small"><b>{tag.clone()}</b>" "<span class="muted" data-testid="hist-note">{note}</span></div>
            <canvas node_ref=canvas class="hist-canvas"></canvas>
        </div>
    }
}

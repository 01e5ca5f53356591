//! The samples panel of a run: what the model produced, by step. A step slider (live:
//! following the newest step until moved) chooses what shows: the image grid (each tag's
//! images of that step; a click opens one full size), each histogram tag as a heatmap
//! over steps with that step marked ([`crate::heatmap`], drawn into the markup's canvases), and the text samples and "Try
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
    // What the panel shows changes with the media and the answers, not with every
    // event: everything below reads the run through this.
    let rev = Memo::new(move |_| view_state.with(media::revision));
    let steps = Memo::new(move |_| {
        let _ = rev.get();
        view_state.with_untracked(media::steps)
    });
    let words = move || media::Words {
        step: i18n.t(Key::Step),
        asked: i18n.t(Key::TryModel),
        prompt: i18n.t(Key::Prompt),
        answer: i18n.t(Key::Answer),
    };
    let markup =
        move |f: fn(&crate::model::RunView, &str, Option<u64>, &media::Words) -> String| {
            Memo::new(move |_| {
                let _ = rev.get();
                let w = words();
                base.with_value(|b| view_state.with_untracked(|v| f(v, b, at.get(), &w)))
            })
        };
    let images = markup(media::images_html);
    let texts = markup(|v, _, at, w| media::texts_html(v, at, w));
    let hists = markup(|v, _, at, w| media::hists_html(v, at, w));
    let holder = NodeRef::<leptos::html::Div>::new();
    // Each heatmap drawn once its canvas is in the page (after the markup's update).
    Effect::new(move |_| {
        let when = at.get();
        let _ = hists.get();
        let _ = rev.get();
        request_animation_frame(move || {
            let Some(el) = holder.get_untracked() else {
                return;
            };
            let theme = if prefers_light() {
                crate::chart::LIGHT
            } else {
                crate::chart::DARK
            };
            view_state.with_untracked(|v| {
                for (i, s) in media::histograms(v).iter().enumerate() {
                    let canvas = el
                        .query_selector(&format!("canvas[data-n='{i}']"))
                        .ok()
                        .flatten()
                        .and_then(|c| c.dyn_into::<web_sys::HtmlCanvasElement>().ok());
                    if let Some(c) = canvas {
                        crate::heatmap::draw(&c, s, when, theme);
                    }
                }
            });
        });
    });
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
                    <StepSlider steps=steps at=at/>
                </div>
                <div class="media-images" data-testid="images" on:click=open inner_html=images></div>
                <div node_ref=holder inner_html=hists></div>
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

/// The compare page's samples: one step slider over every run's sample steps, and each
/// run's images and text samples at that step side by side.
#[component]
pub fn CompareSamples(
    loaded: Vec<crate::load::Loaded>,
    names: Signal<Vec<String>>,
) -> impl IntoView {
    let i18n = use_i18n();
    let base = StoredValue::new(expect_context::<api::Base>().0);
    let views: Vec<_> = loaded.iter().map(|l| l.view).collect();
    let at = RwSignal::new(None::<u64>);
    let steps = Memo::new({
        let views = views.clone();
        move |_| {
            let all = views.iter().flat_map(|v| v.with(media::steps));
            crate::model::sort::set(all)
                .into_iter()
                .collect::<Vec<u64>>()
        }
    });
    let columns = Memo::new(move |_| {
        let w = media::Words {
            step: i18n.t(Key::Step),
            asked: i18n.t(Key::TryModel),
            prompt: i18n.t(Key::Prompt),
            answer: i18n.t(Key::Answer),
        };
        let names = names.get();
        let mut h = String::new();
        for (i, v) in views.iter().enumerate() {
            h.push_str("<div class=\"compare-col\" data-testid=\"compare-samples-run\"><h3>");
            crate::model::markdown::escape(names.get(i).map_or("", String::as_str), &mut h);
            h.push_str("</h3>");
            base.with_value(|b| {
                v.with(|v| {
                    h.push_str(&media::images_html(v, b, at.get(), &w));
                    h.push_str("<div class=\"samples\">");
                    h.push_str(&media::texts_html(v, at.get(), &w));
                    h.push_str("</div>");
                })
            });
            h.push_str("</div>");
        }
        h
    });
    let any = Signal::derive(move || !steps.with(Vec::is_empty));
    show(any, move || {
        view! {
            <section class="panel media" data-testid="compare-samples">
                <div class="panel-head">
                    <h2>{i18n.tr(Key::Samples)}</h2>
                    <StepSlider steps=steps at=at/>
                </div>
                <div class="compare-samples" inner_html=move || columns.get()></div>
            </section>
        }
    })
}

/// The samples' step slider: one position per step that has a sample, the last one
/// following the newest step (`at` = `None`, "latest") until it is moved.
#[component]
fn StepSlider(steps: Memo<Vec<u64>>, at: RwSignal<Option<u64>>) -> impl IntoView {
    let i18n = use_i18n();
    let index = move || {
        let s = steps.get();
        at.get()
            .and_then(|a| s.iter().position(|x| *x >= a))
            .unwrap_or(s.len().saturating_sub(1))
    };
    let label = move || {
        let step = at.get().or(steps.get().last().copied()).unwrap_or(0);
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
    view! {
        <div class="media-bar">
            <input type="range" data-testid="media-step" min="0"
                prop:max=move || steps.with(|s| s.len().saturating_sub(1)).to_string()
                prop:value=move || index().to_string()
                on:input=pick/>
            <span class="mono small" data-testid="media-step-label">{label}</span>
        </div>
    }
}

//! Loading: everything the dashboard asks the relay for, and the only code that writes
//! what the views show. A run's history then its stream ([`load_run`]), the runs list
//! ([`load_runs`]) and a zoomed chart's exact points ([`zoom_pages`]) each hand the
//! views read-only signals; a page shares its run through context ([`use_run`]).
//! Answers are decoded with `stepwatch_events::api`, the relay's own types.

use crate::api::{self, ConnState};
use crate::model::{self, Page, Point, RunView, LOSS};
use crate::views::notify;
use leptos::prelude::*;
use std::collections::BTreeMap;
use stepwatch_events::api as answers;
use stepwatch_events::{Event, RunSummary};

/// One run as loaded, for the views to read: its view model and its stream's state.
/// The run page provides it as context ([`use_run`]).
#[derive(Clone, Copy)]
pub struct Loaded {
    pub view: ReadSignal<RunView>,
    pub conn: ReadSignal<ConnState>,
}

/// The run of the page, from context.
pub fn use_run() -> Loaded {
    expect_context::<Loaded>()
}

/// The newest log, system and media events a run page loads (newest first).
pub const TAILS: [&str; 3] = [
    "/events?event=log&order=desc&limit=500",
    "/events?event=system&order=desc&limit=300",
    "/events?event=text_sample,image,histogram&order=desc&limit=2000",
];

/// The one (dyn) way to change a run's view: keeps the download small. False once the
/// page is gone.
fn edit(view: RwSignal<RunView>, f: &mut dyn FnMut(&mut RunView)) -> bool {
    view.try_update(|v| f(v)).is_some()
}

/// A GET while a run loads: retried through about a minute of relay downtime.
async fn get(url: String) -> Option<String> {
    api::get_text(&url, api::LOAD_TRIES).await
}

/// Loads `run` for the lifetime of the calling component, without replaying its events:
/// first its state (the header shows at once; S = its `last_id`), then each metric's
/// history from the series endpoint, the loss first (and its newest media; with `tails`,
/// the newest logs and system samples, all up to S), then a stream of the events after S only. Metric points
/// a page already holds are not added twice ([`RunView::merge_page`]). The stream opens
/// once history is in (so the connection badge turns live with the page complete, and a
/// page comparing several runs does not hold the browser's few connections per host
/// with streams while their history waits); it replays from S, so nothing in between is
/// missed. A run the relay does not know (yet) is streamed from its start.
pub fn load_run(base: &str, run: &str, tails: bool) -> Loaded {
    let view = RwSignal::new(RunView::new(run));
    let conn = RwSignal::new(ConnState::Connecting);
    let holder = StoredValue::new_local(None::<api::Stream>);
    on_cleanup(move || drop(holder.try_update_value(Option::take)));
    edit(view, &mut |v| v.history_loading = true);
    let (base, run) = (base.to_string(), run.to_string());
    leptos::task::spawn_local(async move {
        let Some(after) = load_history(&base, &run, view, tails).await else {
            return;
        };
        let stream = api::Stream::open(
            &api::run_url(&base, &run, "/stream"),
            after,
            &stepwatch_events::KNOWN_EVENTS,
            move |batch| {
                edit(view, &mut |v| {
                    let fired = v.state.alerts.fired;
                    for (_, data) in &batch {
                        if let Ok(e) = Event::from_json(data) {
                            v.take(e);
                        }
                    }
                    // A firing while the page is open: a browser notification, if allowed.
                    if v.state.alerts.fired > fired {
                        if let Some(a) = v.state.alerts.active.last() {
                            let title = format!("{} — {}", v.state.name, a.title);
                            notify::show(&title, &a.text, &a.alert_id);
                        }
                    }
                });
            },
            move |c| {
                conn.try_set(c);
            },
        );
        // Dropped (closed) at once if the page went away meanwhile.
        holder.try_update_value(|h| *h = Some(stream));
    });
    Loaded {
        view: view.read_only(),
        conn: conn.read_only(),
    }
}

/// A run's state, series pages and (with `tails`) log and system tails. Answers the id
/// the stream starts after (`Some(None)` for a run the relay does not know), or `None`
/// when the page went away.
async fn load_history(
    base: &str,
    run: &str,
    view: RwSignal<RunView>,
    tails: bool,
) -> Option<Option<u64>> {
    let url = |rest: &str| api::run_url(base, run, rest);
    let mut state = get(url(""))
        .await
        .as_deref()
        .and_then(answers::decode_state);
    let after = state.as_ref().map(|s| s.last_id);
    let has_loss = state.as_ref().is_some_and(|s| s.current_loss.is_some());
    let alive = edit(view, &mut |v| match state.take() {
        Some(s) => v.set_state(s),
        None => v.history_loading = false,
    });
    if !alive {
        return None;
    }
    let Some(s) = after else {
        return Some(None);
    };
    if !load_series(base, run, view, has_loss, s).await {
        return None;
    }
    // Media for every page that loads a run (the compare page shows samples too).
    for tail in TAILS.iter().filter(|t| tails || t.contains("image")) {
        let mut events = get(url(tail))
            .await
            .map_or_else(Vec::new, |t| answers::decode_events(&t));
        edit(view, &mut |v| v.add_history(std::mem::take(&mut events), s));
    }
    edit(view, &mut |v| v.history_loading = false);
    Some(after)
}

/// Each metric's history, the loss first: it heads the page, so it is asked for even
/// before the list of series (which takes longer on very long runs). False when the
/// page went away.
async fn load_series(
    base: &str,
    run: &str,
    view: RwSignal<RunView>,
    has_loss: bool,
    state_id: u64,
) -> bool {
    let mut todo: Vec<String> = has_loss.then(|| LOSS.to_string()).into_iter().collect();
    let mut listed = false;
    edit(view, &mut |v| v.expect_series(&todo));
    loop {
        if todo.is_empty() {
            if listed {
                return true;
            }
            listed = true;
            let list = get(api::run_url(base, run, "/series")).await;
            todo = model::metric_order(&answers::decode_series_list(&list.unwrap_or_default()));
            todo.retain(|m| !has_loss || m != LOSS);
            todo.reverse();
            edit(view, &mut |v| v.expect_series(&todo));
        }
        let Some(m) = todo.pop() else { continue };
        let u = api::series_url(base, run, &m, api::OVERVIEW_POINTS, None);
        let mut page = get(u.clone())
            .await
            .as_deref()
            .and_then(answers::decode_series_page)
            .map(Page::from);
        if page.as_ref().is_some_and(|p| p.last_id < state_id) {
            // Answered before the state (index.html asked for both at once): the stream
            // starts after the state's id, so this page must reach it too.
            page = get(u)
                .await
                .as_deref()
                .and_then(answers::decode_series_page)
                .map(Page::from);
        }
        let alive = edit(view, &mut |v| match page.take() {
            Some(p) => v.merge_page(p),
            None => v.page_done(&m),
        });
        if !alive {
            return false;
        }
    }
}

/// Every run the relay has stored, by id, live from the runs stream (`/api/stream`) for
/// the lifetime of the calling component, and the stream's state.
pub fn load_runs(
    base: &str,
) -> (
    ReadSignal<BTreeMap<String, RunSummary>>,
    ReadSignal<ConnState>,
) {
    let runs = RwSignal::new(BTreeMap::<String, RunSummary>::new());
    let conn = RwSignal::new(ConnState::Connecting);
    let stream = api::Stream::open(
        &format!("{base}/api/stream"),
        None,
        &[answers::SUMMARY_EVENT],
        move |batch| {
            runs.update(|m| {
                for (_, data) in batch {
                    if let Some(s) = answers::decode_summary(&data) {
                        if s.deleted {
                            m.remove(&s.run);
                            continue;
                        }
                        // More alerts active than before: a browser notification, if allowed.
                        let (rose, name, title) =
                            (s.alerts_active, s.name.clone(), s.alert_title.clone());
                        let tag = format!("{}#{}", s.run, s.last_id);
                        if m.insert(s.run.clone(), s)
                            .is_some_and(|old| rose > old.alerts_active)
                        {
                            notify::show(&name, &title.unwrap_or_default(), &tag);
                        }
                    }
                }
            })
        },
        move |c| conn.set(c),
    );
    let stream = send_wrapper::SendWrapper::new(stream);
    on_cleanup(move || drop(stream));
    (runs.read_only(), conn.read_only())
}

/// The exact points of a zoomed step range, per run: the id the page covers, and its
/// points (`None` where the request failed).
#[derive(Clone, PartialEq)]
pub struct ZoomPages {
    pub range: (f64, f64),
    pub pages: Vec<Option<(u64, Vec<Point>)>>,
}

/// Delay after the last zoom change before the exact points are asked for.
pub const ZOOM_FETCH_MS: u64 = 150;

/// While `range()` (reactive) names a step range, asks the relay for `metric`'s exact
/// points in it for each of `runs`, `buckets()` buckets each, once the zoom has rested
/// for [`ZOOM_FETCH_MS`]; only the newest request's answer is kept. `None` while not
/// zoomed by step (wall-time and relative-time zoom draws from what is loaded: the
/// series endpoint selects by step, and times need not grow with steps).
pub fn zoom_pages(
    metric: String,
    runs: Vec<String>,
    range: impl Fn() -> Option<(f64, f64)> + 'static,
    buckets: impl Fn() -> usize + 'static,
) -> ReadSignal<Option<ZoomPages>> {
    let pages = RwSignal::new(None::<ZoomPages>);
    let ticket = StoredValue::new(0u64);
    let base = use_context::<api::Base>();
    Effect::new(move |_| {
        let zoom = range();
        let n = ticket.get_value() + 1;
        ticket.set_value(n);
        let (Some(range), Some(base)) = (zoom, base.clone()) else {
            pages.set(None);
            return;
        };
        let points = buckets();
        let (m, runs) = (metric.clone(), runs.clone());
        let fetch = async move {
            let mut got = Vec::new();
            for run in runs {
                let url = api::series_url(&base.0, &run, &m, points, Some(range));
                let page = api::get_text(&url, 1).await;
                let page = page.as_deref().and_then(answers::decode_series_page);
                got.push(page.map(|p| {
                    let p = Page::from(p);
                    (p.last_id, p.points)
                }));
            }
            if ticket.try_get_value() == Some(n) {
                pages.try_set(Some(ZoomPages { range, pages: got }));
            }
        };
        set_timeout(
            move || {
                if ticket.try_get_value() == Some(n) {
                    leptos::task::spawn_local(fetch);
                }
            },
            std::time::Duration::from_millis(ZOOM_FETCH_MS),
        );
    });
    pages.read_only()
}

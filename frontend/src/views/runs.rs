//! The runs list: every run the relay has stored, live from `/api/stream`
//! ([`crate::load::load_runs`]); sort, filter by name, status, tag and group, group by
//! the run's group or a config value, add config values and metrics as columns (from
//! `GET /api/values`, [`crate::model::table`]), pick runs to compare.

use super::common::{ago, fmt_opt, use_clock, ConnBadge, StatusPill};
use super::job::Html;
use crate::api;
use crate::i18n::{use_i18n, Key};
use crate::load;
use crate::model::table::{self, Item};
use crate::model::{self, fold_case, ShownStatus};
use crate::route::{replace_hash, run_href, Page, Route};
use leptos::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use stepwatch_events::{RunStatus, RunSummary};

/// Columns the list sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SortBy {
    Started,
    Name,
    Status,
    Step,
    Loss,
    Best,
    Duration,
}

impl SortBy {
    fn parse(s: &str) -> SortBy {
        match s {
            "name" => SortBy::Name,
            "status" => SortBy::Status,
            "step" => SortBy::Step,
            "loss" => SortBy::Loss,
            "best" => SortBy::Best,
            "duration" => SortBy::Duration,
            _ => SortBy::Started,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            SortBy::Started => "started",
            SortBy::Name => "name",
            SortBy::Status => "status",
            SortBy::Step => "step",
            SortBy::Loss => "loss",
            SortBy::Best => "best",
            SortBy::Duration => "duration",
        }
    }
}

fn compare_class(picked: usize) -> &'static str {
    if picked >= 2 {
        "btn primary"
    } else {
        "btn disabled"
    }
}

fn duration_of(s: &RunSummary, now: f64) -> f64 {
    model::elapsed_s(s.status, s.started_at, s.ended_at, s.last_event_at, now).unwrap_or(0.0)
}

fn cmp_opt(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    // Missing and NaN last.
    let k = |x: Option<f64>| x.filter(|v| !v.is_nan()).unwrap_or(f64::INFINITY);
    k(a).total_cmp(&k(b))
}

const STATUSES: [RunStatus; 6] = [
    RunStatus::Running,
    RunStatus::Paused,
    RunStatus::Completed,
    RunStatus::Failed,
    RunStatus::Stopped,
    RunStatus::Pending,
];

/// The list's filter and sort settings, mirrored in the URL.
#[derive(Clone, Copy)]
struct ListSettings {
    query: RwSignal<String>,
    status: RwSignal<String>,
    sort: RwSignal<SortBy>,
    desc: RwSignal<bool>,
    tag: RwSignal<String>,
    group: RwSignal<String>,
    /// Group by: "", `group`, or a column (`c:lr`).
    by: RwSignal<String>,
    /// Extra columns, `c:<config key>` / `m:<metric>`.
    cols: RwSignal<Vec<String>>,
}

impl ListSettings {
    fn from_route(route: &Route) -> Self {
        ListSettings {
            query: RwSignal::new(route.get("q").unwrap_or_default().to_string()),
            status: RwSignal::new(route.get("status").unwrap_or_default().to_string()),
            sort: RwSignal::new(SortBy::parse(route.get("sort").unwrap_or("started"))),
            desc: RwSignal::new(route.get("dir") != Some("asc")),
            tag: RwSignal::new(route.get("tag").unwrap_or_default().to_string()),
            group: RwSignal::new(route.get("group").unwrap_or_default().to_string()),
            by: RwSignal::new(route.get("by").unwrap_or_default().to_string()),
            cols: RwSignal::new(
                route
                    .get("cols")
                    .unwrap_or_default()
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(String::from)
                    .collect(),
            ),
        }
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let sort = self.sort.get();
        vec![
            ("q", self.query.get()),
            ("status", self.status.get()),
            (
                "sort",
                if sort == SortBy::Started {
                    String::new()
                } else {
                    sort.as_str().into()
                },
            ),
            (
                "dir",
                if self.desc.get() {
                    String::new()
                } else {
                    "asc".into()
                },
            ),
            ("tag", self.tag.get()),
            ("group", self.group.get()),
            ("by", self.by.get()),
            ("cols", self.cols.get().join(",")),
        ]
    }

    /// The runs that pass the filters, in the chosen order (ties by run id).
    fn apply<'a>(&self, runs: &'a BTreeMap<String, RunSummary>, now: f64) -> Vec<&'a RunSummary> {
        let q = fold_case(&self.query.get());
        let st = self.status.get();
        let (tag, group) = (self.tag.get(), self.group.get());
        let mut v: Vec<&RunSummary> = runs
            .values()
            .filter(|s| tag.is_empty() || s.tags.contains(&tag))
            .filter(|s| group.is_empty() || s.group.as_deref() == Some(group.as_str()))
            .filter(|s| {
                q.is_empty() || fold_case(&s.name).contains(&q) || fold_case(&s.run).contains(&q)
            })
            .filter(|s| {
                st.is_empty() || model::shown_status(s.status, s.last_event_at, now).as_str() == st
            })
            .collect();
        let by = self.sort.get();
        let desc = self.desc.get();
        model::sort::sort_by(&mut v, |a, b| {
            let o = match by {
                SortBy::Started => a
                    .started_at
                    .unwrap_or(0.0)
                    .total_cmp(&b.started_at.unwrap_or(0.0)),
                SortBy::Name => fold_case(&a.name).cmp(&fold_case(&b.name)),
                SortBy::Status => a.status.as_str().cmp(b.status.as_str()),
                SortBy::Step => a.step.cmp(&b.step),
                SortBy::Loss => cmp_opt(a.current_loss, b.current_loss),
                SortBy::Best => cmp_opt(
                    a.best_val.as_ref().map_or(a.best_loss, |b| Some(b.value)),
                    b.best_val.as_ref().map_or(b.best_loss, |b| Some(b.value)),
                ),
                SortBy::Duration => duration_of(a, now).total_cmp(&duration_of(b, now)),
            };
            let o = if desc { o.reverse() } else { o };
            o.then_with(|| a.run.cmp(&b.run))
        });
        v
    }
}

/// Lines the list draws at first, and how many more each "show more" adds: every drawn
/// row has its own clock-driven cells, and 10,000 of them would stall the page.
const LINES: usize = 200;

#[component]
pub fn RunsPage(base: String, route: Route) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let (runs, conn) = load::load_runs(&base);
    let list = ListSettings::from_route(&route);
    let picked = RwSignal::new(BTreeSet::<String>::new());
    Effect::new(move |_| replace_hash(&Route::hash(&Page::Runs, &list.params())));
    let values = RwSignal::new(serde_json::Value::Null);
    // The chosen columns' values (and every key, for the pickers): asked again when the
    // columns or the runs change, and every 10 s while metrics are shown.
    Effect::new(move |prev: Option<String>| {
        let cols = list.cols.get();
        let by = list.by.get();
        let metrics = cols.iter().any(|c| c.starts_with("m:"));
        let tick = if metrics {
            (clock.get() / 10.0) as u64
        } else {
            0
        };
        let key = format!("{}|{by}|{}|{tick}", cols.join(","), runs.with(|m| m.len()));
        if prev.as_ref() != Some(&key) {
            let (mut config, mut metric) = (Vec::new(), Vec::new());
            for c in cols.iter().chain(std::iter::once(&by)) {
                match table::column_parts(c) {
                    (true, k) if c.contains(':') => config.push(crate::route::enc(k)),
                    (false, k) => metric.push(crate::route::enc(k)),
                    _ => {}
                }
            }
            let url = format!(
                "{}/api/values?config={}&metrics={}",
                base,
                config.join(","),
                metric.join(",")
            );
            leptos::task::spawn_local(async move {
                if let Some(v) = api::get_value(&url).await {
                    values.try_set(v);
                }
            });
        }
        key
    });
    let limit = RwSignal::new(LINES);
    // The lines drawn, how many there are in all, and whether no run passes the filters.
    let lines = Memo::new(move |_| {
        let (by, limit) = (list.by.get(), limit.get());
        runs.with(|m| {
            let rows = list.apply(m, clock.get_untracked());
            let (items, total) = values.with(|v| table::grouped(&rows, v, &by, limit));
            (items, total, rows.is_empty())
        })
    });
    let items = move || lines.with(|l| l.0.clone());
    let all_shown = move || {
        runs.with(|m| {
            let rows = list.apply(m, clock.get_untracked());
            rows.into_iter().map(|s| s.run.clone()).collect::<Vec<_>>()
        })
    };
    let item_key = |it: &Item| match it {
        Item::Head(g, n) => format!("h{g:?}{n}"),
        Item::Row(s) => format!("r{}|{}|{}", s.run, s.last_id, s.status.as_str()),
    };
    let ncols = move || 9 + list.cols.with(Vec::len);
    view! {
        <section class="panel">
            <div class="panel-head">
                <h1>{i18n.tr(Key::AllRuns)}</h1>
                <span class="count" data-testid="run-count">{move || runs.with(|m| m.len())}</span>
                <span class="spacer"></span>
                <ConnBadge conn=conn/>
            </div>
            <RunsToolbar list=list picked=picked runs=runs values=values/>
            {super::common::show(Signal::derive(move || runs.with(|m| m.is_empty())), move || view! { <div class="empty">
                    <p>{i18n.tr(Key::NoRuns)}</p>
                    <code>{i18n.tr(Key::NoRunsHint)}</code>
                </div> })}
            {super::common::show(Signal::derive(move || runs.with(|m| !m.is_empty())), move || view! { <div class="scroll">
                <table class="runs" data-testid="runs-table">
                    <thead><tr>
                        <th class="pick"><input type="checkbox" data-testid="pick-all" title=i18n.tr(Key::PickAll)
                            on:change=move |ev| { let on = event_target_checked(&ev); picked.update(|p| { p.clear(); if on { p.extend(all_shown()); } }) }/></th>
                        <SortHeader list=list by=SortBy::Name key=Key::ColName class=""/>
                        <SortHeader list=list by=SortBy::Status key=Key::ColStatus class=""/>
                        <th>{i18n.tr(Key::ColProgress)}</th>
                        <SortHeader list=list by=SortBy::Step key=Key::ColStep class="num"/>
                        <SortHeader list=list by=SortBy::Loss key=Key::ColLoss class="num"/>
                        <SortHeader list=list by=SortBy::Best key=Key::ColBestLoss class="num"/>
                        <SortHeader list=list by=SortBy::Started key=Key::ColStarted class=""/>
                        <SortHeader list=list by=SortBy::Duration key=Key::ColDuration class="num"/>
                        <For each=move || list.cols.get() key=|c| c.clone() let:c>
                            <ExtraHead col=c cols=list.cols/>
                        </For>
                    </tr></thead>
                    <tbody>
                        <For each=items key=item_key let:it>
                            {match it {
                                Item::Head(g, n) => view! {
                                    <tr class="group-head" data-testid="group-head"><td colspan=ncols>
                                        {g.unwrap_or_else(|| i18n.t(Key::Ungrouped).to_string())}" "<span class="count">{n}</span>
                                    </td></tr>
                                }.into_any(),
                                Item::Row(s) => view! { <RunRow s=s picked=picked cols=list.cols values=values/> }.into_any(),
                            }}
                        </For>
                    </tbody>
                </table>
                {move || lines.with(|l| (l.1 > l.0.len()).then(|| {
                    let (drawn, total) = (l.0.len(), l.1);
                    view! { <button class="btn small more" data-testid="more-runs" on:click=move |_| limit.update(|n| *n += LINES)>
                        {i18n.tr(Key::ShowMore)}" ("{drawn}" / "{total}")"</button> }
                }))}
                </div>
                {super::common::note_when("muted", Key::NoMatch, Signal::derive(move || lines.with(|l| l.2)))} })}
        </section>
    }
}

/// A column header that sorts by its column (a second click reverses the order).
#[component]
fn SortHeader(list: ListSettings, by: SortBy, key: Key, class: &'static str) -> impl IntoView {
    let i18n = use_i18n();
    let (sort, desc) = (list.sort, list.desc);
    view! {
        <th class=class>
            <button class="sort" data-testid=format!("sort-{}", by.as_str())
                on:click=move |_| {
                    if sort.get() == by { desc.update(|d| *d = !*d) } else { sort.set(by); desc.set(by == SortBy::Started) }
                }>
                {move || i18n.t(key)}
                {move || (sort.get() == by).then(|| if desc.get() { " ▾" } else { " ▴" })}
            </button>
        </th>
    }
}

/// The name filter, the status filter and the compare link for the runs picked.
#[component]
fn RunsToolbar(
    list: ListSettings,
    picked: RwSignal<BTreeSet<String>>,
    runs: ReadSignal<BTreeMap<String, RunSummary>>,
    values: RwSignal<serde_json::Value>,
) -> impl IntoView {
    let i18n = use_i18n();
    let (query, status, tag, by, cols) = (list.query, list.status, list.tag, list.by, list.cols);
    let compare_href = move || {
        Route::hash(
            &Page::Compare(picked.with(|p| p.iter().cloned().collect())),
            &[],
        )
    };
    // The parameter view of the runs picked, else of the runs the filters show (a tag
    // or group stays a filter, so runs that join the sweep later show up too).
    let params_href = move || {
        let mut p = vec![("tag", list.tag.get()), ("group", list.group.get())];
        let ids = if picked.with(|p| !p.is_empty()) {
            picked.with(|p| p.iter().cloned().collect::<Vec<_>>())
        } else if !list.query.get().is_empty() || !list.status.get().is_empty() {
            runs.with(|m| {
                let rows = list.apply(m, crate::api::now_s());
                rows.into_iter().map(|s| s.run.clone()).collect()
            })
        } else {
            Vec::new()
        };
        if !ids.is_empty() {
            p = vec![("runs", ids.join(","))];
        }
        Route::hash(&Page::Params, &p)
    };
    // (value, label) of every key the relay listed under `field`.
    let keys = move |field: &str, prefix: &str| {
        values.with(|v| {
            let list = v[field].as_array().cloned().unwrap_or_default();
            list.into_iter()
                .filter_map(|k| k.as_str().map(|k| (format!("{prefix}{k}"), k.to_string())))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <div class="toolbar">
            <input type="search" class="filter" data-testid="filter" placeholder=i18n.tr(Key::FilterRuns)
                prop:value=move || query.get() on:input=move |ev| query.set(event_target_value(&ev))/>
            <select data-testid="status-filter" prop:value=move || status.get()
                on:change=move |ev| status.set(event_target_value(&ev))>
                <option value="">{i18n.tr(Key::AllStatuses)}</option>
                {STATUSES.iter().map(|s| {
                    let s = *s;
                    view! { <option value=s.as_str()>{move || i18n.t(super::common::status_key(ShownStatus::Run(s)))}</option> }
                }).collect_view()}
                <option value="stale">{i18n.tr(Key::StatusStale)}</option>
            </select>
            <select data-testid="tag-filter" on:change=move |ev| tag.set(event_target_value(&ev))
                inner_html=move || {
                    let tags = runs.with(|m| model::sort::set(m.values().flat_map(|s| s.tags.iter().cloned())));
                    let mut h = Html::default();
                    options(&mut h, &tag.get(), std::iter::once((String::new(), i18n.t(Key::AllTags).to_string())).chain(tags.into_iter().map(|t| (t.clone(), t))));
                    h.0
                }></select>
            {super::common::show(Signal::derive(move || !list.group.get().is_empty()), move || view! { <button class="btn small" data-testid="group-filter" on:click=move |_| list.group.set(String::new())>
                    {move || format!("{}: {} ×", i18n.t(Key::Group), list.group.get())}</button> })}
            <select data-testid="group-by" on:change=move |ev| by.set(event_target_value(&ev))
                inner_html=move || {
                    let mut h = Html::default();
                    let fixed = [(String::new(), i18n.t(Key::NoGroup).to_string()), ("group".into(), format!("{}: {}", i18n.t(Key::GroupBy), i18n.t(Key::Group)))];
                    options(&mut h, &by.get(), fixed.into_iter());
                    h.raw("<optgroup label=\"").text(i18n.t(Key::GroupBy)).raw(": ").text(i18n.t(Key::ConfigCols)).raw("\">");
                    options(&mut h, &by.get(), keys("config_keys", "c:").into_iter());
                    h.raw("</optgroup>");
                    h.0
                }></select>
            <select data-testid="add-column" on:change=move |ev| {
                let c = event_target_value(&ev);
                if !c.is_empty() { cols.update(|v| if !v.contains(&c) { v.push(c) }); }
            } inner_html=move || {
                let mut h = Html::default();
                let _ = cols.get();
                options(&mut h, "", std::iter::once((String::new(), i18n.t(Key::AddColumn).to_string())));
                for (field, prefix, key) in [("config_keys", "c:", Key::ConfigCols), ("metric_keys", "m:", Key::MetricCols)] {
                    h.raw("<optgroup label=\"").text(i18n.t(key)).raw("\">");
                    options(&mut h, "", keys(field, prefix).into_iter());
                    h.raw("</optgroup>");
                }
                h.0
            }></select>
            <span class="spacer"></span>
            <span class="muted small">{move || (picked.with(|p| p.len()) < 2).then(|| i18n.t(Key::CompareHint))}</span>
            <a class="btn" data-testid="params-button" href=params_href title=i18n.tr(Key::ParamsOf)>
                {i18n.tr(Key::Params)}</a>
            <a class=move || compare_class(picked.with(|p| p.len()))
                data-testid="compare-button" href=compare_href
                aria-disabled=move || (picked.with(|p| p.len()) < 2).to_string()>
                {i18n.tr(Key::Compare)}" ("{move || picked.with(|p| p.len())}")"
            </a>
        </div>
    }
}

#[component]
fn RunRow(
    s: RunSummary,
    picked: RwSignal<BTreeSet<String>>,
    cols: RwSignal<Vec<String>>,
    values: RwSignal<serde_json::Value>,
) -> impl IntoView {
    let i18n = use_i18n();
    let clock = use_clock();
    let status = s.status;
    let last = s.last_event_at;
    let shown = Signal::derive(move || model::shown_status(status, last, clock.get()));
    let p = s.progress;
    let epoch = model::progress(p.epoch, p.total_epochs);
    let batch = model::progress(p.batch, p.total_batches);
    // A run without epochs counts steps ("Step 208"), not "Epoch 0 · Batch 208".
    let has_epochs = p.epoch.is_some() || p.total_epochs.is_some();
    let has_length = p.total_batches.is_some();
    let frac = p.fraction.unwrap_or(0.0);
    let bar_class = if model::cut_short(s.status, &p) {
        "bar cut"
    } else {
        "bar"
    };
    let step = s.step;
    let best = s.best_val.as_ref().map_or(s.best_loss, |b| Some(b.value));
    let best_hint = s.best_val.as_ref().map(|b| b.metric.clone());
    let is_val = s.best_val.is_some();
    let started = s.started_at;
    let s2 = s.clone();
    let dur = move || {
        if started.is_some() {
            model::duration(duration_of(&s2, clock.get()))
        } else {
            "–".into()
        }
    };
    let loss_class = if s.current_loss.is_some_and(|l| !l.is_finite()) {
        "num alert"
    } else {
        "num"
    };
    let run = s.run.clone();
    let run2 = s.run.clone();
    let run3 = s.run.clone();
    let mut chips = super::job::Html::default();
    super::meta::tag_chips(&mut chips, &s.tags);
    view! {
        <tr data-testid="run-row" data-run=s.run.clone()>
            <td class="pick"><input type="checkbox" data-testid="pick"
                prop:checked=move || picked.with(|p| p.contains(&run))
                on:change=move |_| picked.update(|p| { if !p.remove(&run2) { p.insert(run2.clone()); } })/></td>
            <td class="name"><a href=run_href(&s.run)>{s.name.clone()}</a>
                {(s.alerts_active > 0).then(|| view! {
                    <span class=format!("alert-count {}", super::alerts::level_class(s.alert_level.as_deref()))
                        data-testid="alert-count" title=s.alert_title.clone()>{s.alerts_active}</span>
                })}
                <span class="runid">{(s.name != s.run).then(|| s.run.clone())}</span>
                <span class="tags" inner_html=chips.0></span></td>
            <td><StatusPill status=shown/></td>
            <td class="progress-cell">
                <div class=bar_class data-frac=format!("{frac:.4}")><div class="fill" style=format!("width:{:.1}%", frac * 100.0)></div></div>
                <span class="small" data-testid="row-progress">{move || if has_epochs {
                    format!("{} {} · {} {}", i18n.t(Key::Epoch), epoch, i18n.t(Key::Batch), batch)
                } else if has_length {
                    format!("{} {}", i18n.t(Key::Batch), batch)
                } else {
                    format!("{} {}", i18n.t(Key::Step), step)
                }}</span>
            </td>
            <td class="num">{s.step}</td>
            <td class=loss_class data-testid="row-loss">{fmt_opt(s.current_loss, 5)}</td>
            <td class="num" data-testid="row-best" title=move || best_hint.clone().unwrap_or_else(|| i18n.t(Key::BestLossHint).to_string())>{fmt_opt(best, 5)}
                {is_val.then(|| view! { <span class="muted small val-tag">" "{i18n.tr(Key::ValTag)}</span> })}</td>
            <td>{move || ago(i18n, started, clock.get())}</td>
            <td class="num">{dur}</td>
            <For each=move || cols.get() key=|c| c.clone() let:c>
                <ExtraCell run=run3.clone() col=c values=values/>
            </For>
        </tr>
    }
}

/// The heading of a chosen column, with its remove button.
#[component]
fn ExtraHead(col: String, cols: RwSignal<Vec<String>>) -> impl IntoView {
    let i18n = use_i18n();
    let name = table::column_parts(&col).1.to_string();
    view! {
        <th class="num extra" data-testid="extra-col">{name}
            <button class="x" title=i18n.tr(Key::RemoveColumn)
                on:click=move |_| cols.update(|v| v.retain(|x| *x != col))>"×"</button></th>
    }
}

/// A run's value in a chosen column.
#[component]
fn ExtraCell(run: String, col: String, values: RwSignal<serde_json::Value>) -> impl IntoView {
    view! { <td class="num extra">{move || values.with(|v| table::show(table::value(v, &run, &col)))}</td> }
}

/// `<option>`s, the one of value `selected` marked (set with the options, so a new
/// list keeps the choice).
pub(super) fn options(h: &mut Html, selected: &str, items: impl Iterator<Item = (String, String)>) {
    for (value, label) in items {
        h.raw("<option value=\"").text(&value).raw("\"");
        if value == selected {
            h.raw(" selected");
        }
        h.raw(">").text(&label).raw("</option>");
    }
}

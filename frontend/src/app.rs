//! The application shell: contexts (language, clock), the top bar and the router.

use crate::api;
use crate::i18n::{initial_lang, remember_lang, use_i18n, I18n, Key, Lang};
use crate::route::{current_hash, Page, Route};
use crate::views::common::Clock;
use crate::views::login::{self, LoginPage, Session, SessionCtx, UserBadge};
use crate::views::notify::NotifyToggle;
use crate::views::{
    compare::ComparePage, launch::LaunchPage, params::ParamsPage, queue::QueuePage, run::RunPage,
    runs::RunsPage,
};
use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Mounts the app on the page's body.
pub fn mount() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
pub fn App() -> impl IntoView {
    let lang = RwSignal::new(initial_lang());
    provide_context(I18n(lang));
    Effect::new(move |_| remember_lang(lang.get()));

    let relay = RwSignal::new(None::<String>);
    let session = RwSignal::new(Session::Checking);
    provide_context(SessionCtx(session));
    leptos::task::spawn_local(async move {
        let base = api::resolve_relay().await;
        session.set(login::check(&base).await);
        let probe_base = base.clone();
        api::set_session_probe(move || login::recheck(probe_base.clone(), session));
        relay.set(Some(base));
    });
    let clock = RwSignal::new(api::now_s());
    provide_context(Clock(clock));
    if let Ok(handle) = set_interval_with_handle(
        move || clock.set(api::now_s()),
        std::time::Duration::from_secs(1),
    ) {
        on_cleanup(move || handle.clear());
    }

    // Navigation changes the page; settings written with replaceState do not.
    let route = RwSignal::new(Route::parse(&current_hash()));
    // The Launch and Queue pages take their parameters (`?clone=`, `?job=`) when opened.
    let opened = Memo::new(move |_| {
        route.with(|r| {
            let params = matches!(r.page, Page::Launch | Page::Queue | Page::Params)
                .then(|| r.params.clone());
            (r.page.clone(), params)
        })
    });
    let page = Memo::new(move |_| opened.with(|o| o.0.clone()));
    let on_hash = Closure::<dyn FnMut()>::new(move || route.set(Route::parse(&current_hash())));
    let _ =
        window().add_event_listener_with_callback("hashchange", on_hash.as_ref().unchecked_ref());
    on_hash.forget();

    let i18n = use_i18n();
    view! {
        <header class="topbar">
            <a class="brand" href="#/" data-testid="brand">
                <span class="logo">"◷"</span>
                {i18n.tr(Key::AppTitle)}
            </a>
            <span class="tagline">{i18n.tr(Key::Tagline)}</span>
            <nav class="nav">
                <a href="#/" class:on=move || page.get() == Page::Runs data-testid="nav-runs">{i18n.tr(Key::Runs)}</a>
                <a href="#/launch" class:on=move || page.get() == Page::Launch data-testid="nav-launch">{i18n.tr(Key::Launch)}</a>
                <a href="#/queue" class:on=move || page.get() == Page::Queue data-testid="nav-queue">{i18n.tr(Key::Queues)}</a>
            </nav>
            <span class="spacer"></span>
            <NotifyToggle/>
            {move || relay.get().map(|base| view! { <UserBadge base=base/> })}
            <LangSwitch/>
        </header>
        <main class="content">
            {move || match (relay.get(), opened.get().0) {
                (None, _) => view! { <p class="muted">{i18n.t(Key::Connecting)}</p> }.into_any(),
                (Some(base), _) if session.with(Session::signed_out) => view! { <LoginPage base=base/> }.into_any(),
                (Some(base), Page::Runs) => view! { <RunsPage base=base route=route.get_untracked()/> }.into_any(),
                (Some(base), Page::Run(run)) => view! { <RunPage base=base run=run route=route.get_untracked()/> }.into_any(),
                (Some(base), Page::Compare(runs)) => view! { <ComparePage base=base runs=runs route=route.get_untracked()/> }.into_any(),
                (Some(base), Page::Launch) => view! { <LaunchPage base=base route=route.get_untracked()/> }.into_any(),
                (Some(base), Page::Queue) => view! { <QueuePage base=base route=route.get_untracked()/> }.into_any(),
                (Some(base), Page::Params) => view! { <ParamsPage base=base route=route.get_untracked()/> }.into_any(),
            }}
        </main>
    }
}

#[component]
fn LangSwitch() -> impl IntoView {
    let i18n = use_i18n();
    let pick = move |l: Lang| move |_| i18n.0.set(l);
    let class = move |l: Lang| {
        if i18n.0.get() == l {
            "lang on"
        } else {
            "lang"
        }
    };
    view! {
        <div class="langs" role="group" aria-label=i18n.tr(Key::Language)>
            <button class=move || class(Lang::En) data-testid="lang-en" on:click=pick(Lang::En)>"EN"</button>
            <button class=move || class(Lang::Zh) data-testid="lang-zh" on:click=pick(Lang::Zh)>"中文"</button>
        </div>
    }
}

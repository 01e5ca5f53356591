//! Who is signed in: the session from `GET /api/me`, the sign-in page, and what the
//! user's role lets the page offer. The relay enforces roles regardless; the dashboard
//! only hides what would be refused.

use crate::i18n::{use_i18n, Key};
use leptos::prelude::*;
use serde_json::Value;

/// The signed-in user, when the relay has authentication.
#[derive(Debug, Clone, PartialEq)]
pub struct Me {
    pub name: Option<String>,
    pub role: String,
    /// False when the relay runs without login (everyone may do everything).
    pub auth: bool,
}

/// Where the session stands.
#[derive(Debug, Clone, PartialEq)]
pub enum Session {
    Checking,
    In(Me),
    /// Authentication is on and nobody is signed in.
    Out,
    /// The session this page was using ended (signed out elsewhere, or expired).
    Ended,
}

impl Session {
    /// Whether the sign-in form is due.
    pub fn signed_out(&self) -> bool {
        matches!(self, Session::Out | Session::Ended)
    }
}

/// Asks the relay again who we are; a session that was on and is no longer becomes
/// [`Session::Ended`]. Runs at most one check at a time.
pub fn recheck(base: String, session: RwSignal<Session>) {
    thread_local! {
        static CHECKING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    let was_in = session.with_untracked(|s| matches!(s, Session::In(m) if m.auth));
    if !was_in || CHECKING.with(|c| c.replace(true)) {
        return;
    }
    leptos::task::spawn_local(async move {
        if check(&base).await == Session::Out {
            session.set(Session::Ended);
        }
        CHECKING.with(|c| c.set(false));
    });
}

/// The session in context.
#[derive(Clone, Copy)]
pub struct SessionCtx(pub RwSignal<Session>);

pub fn use_session() -> RwSignal<Session> {
    expect_context::<SessionCtx>().0
}

/// Whether the signed-in user may send commands (operators and admins, or no login).
pub fn can_command() -> Signal<bool> {
    let s = use_session();
    Signal::derive(move || {
        s.with(
            |s| matches!(s, Session::In(m) if !m.auth || m.role == "operator" || m.role == "admin"),
        )
    })
}

fn me_from(v: &Value) -> Me {
    Me {
        name: v["name"].as_str().map(str::to_string),
        role: v["role"].as_str().unwrap_or("viewer").to_string(),
        auth: v["auth"].as_bool().unwrap_or(false),
    }
}

/// Asks the relay who we are. Unreachable relay: treated as no login, so the pages show
/// their own offline state.
pub async fn check(base: &str) -> Session {
    match gloo_net::http::Request::get(&format!("{base}/api/me"))
        .send()
        .await
    {
        Ok(r) if r.status() == 401 => Session::Out,
        Ok(r) => match r.json::<Value>().await {
            Ok(v) => Session::In(me_from(&v)),
            Err(_) => Session::In(me_from(&Value::Null)),
        },
        Err(_) => Session::In(Me {
            name: None,
            role: "admin".into(),
            auth: false,
        }),
    }
}

/// The sign-in form: a plain HTML form the relay answers with the session cookie and a
/// redirect back here (`?login=failed` when the password was wrong). No script needed,
/// and password managers recognise it.
#[component]
pub fn LoginPage(base: String) -> impl IntoView {
    let i18n = use_i18n();
    let failed = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .is_some_and(|q| q.contains("login=failed"));
    let ended = use_session().with_untracked(|s| *s == Session::Ended);
    // The relay's redirect back has no fragment, so the browser keeps the one of the
    // form's action: the page (e.g. `#/runs/x`) the user was on.
    let here = web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default();
    view! {
        <section class="panel login" data-testid="login">
            <h1>{i18n.t(Key::SignInTitle)}</h1>
            {ended.then(|| view! { <p class="banner warn small" data-testid="session-ended">{i18n.t(Key::SessionEnded)}</p> })}
            <form method="post" action=format!("{base}/api/login{here}")>
                <label>{i18n.t(Key::UserName)}
                    <input name="name" data-testid="login-name" autocomplete="username" required/>
                </label>
                <label>{i18n.t(Key::Password)}
                    <input name="password" data-testid="login-password" type="password" autocomplete="current-password" required/>
                </label>
                <button class="btn primary" type="submit" data-testid="login-submit">{i18n.t(Key::SignIn)}</button>
                {failed.then(|| view! { <p class="alert small" data-testid="login-error">{i18n.t(Key::SignInFailed)}</p> })}
            </form>
        </section>
    }
}

/// The signed-in user and Sign out, in the top bar (nothing without login). Sign out is
/// a plain form too: the relay ends the session and sends the browser back here.
#[component]
pub fn UserBadge(base: String) -> impl IntoView {
    let i18n = use_i18n();
    let session = use_session();
    let me = move || match session.get() {
        Session::In(m) if m.auth => Some(m),
        _ => None,
    };
    let action = format!("{base}/api/logout");
    view! {
        {move || me().map(|m| view! {
            <form class="user small" method="post" action=action.clone() data-testid="user" data-role=m.role.clone()>
                {m.name.clone().unwrap_or_default()}" · "{m.role.clone()}" "
                <button class="mini" type="submit" data-testid="logout">{i18n.t(Key::SignOut)}</button>
            </form>
        })}
    }
}

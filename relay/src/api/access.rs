//! The HTTP side of [`crate::auth`]: which action each API route is, who is calling,
//! cross-site checks, and the login / logout / me endpoints.
//!
//! Every request to `/api/…` and `/metrics` passes [`guard`] first: it names the
//! request's [`Action`], identifies the caller (bearer token, else session cookie),
//! refuses with 401 (no or bad credentials) or 403 (role may not), refuses state-changing
//! requests from another site (Origin check), and leaves the [`Identity`] in the
//! request's extensions for handlers (commands record who sent them).

use super::error::ApiError;
use super::state::Data;
use crate::auth::{Action, AuthError, Identity, SESSION_COOKIE};
use actix_web::body::{BoxBody, EitherBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use serde::Deserialize;
use serde_json::json;

/// What a request asks to do, from its method and path; `None` for public routes.
pub fn action_of<'a>(method: &Method, path: &'a str) -> Option<Action<'a>> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        (_, ["", "healthz" | "readyz"]) => None,
        ("POST", ["", "api", "login"] | ["", "api", "logout"]) | ("GET", ["", "api", "me"]) => None,
        ("POST", ["", "api", "runs", run, "events"])
        | ("PUT", ["", "api", "runs", run, "media", _]) => Some(Action::WriteEvents(run)),
        ("GET", ["", "api", "runs", run, "commands", "stream"]) => Some(Action::ReadCommands(run)),
        ("POST", ["", "api", "runs", _, "commands"])
        | ("POST", ["", "api", "runs", _, "commands", _, "cancel"])
        | ("POST", ["", "api", "runs", _, "alerts", "rules"])
        | ("POST", ["", "api", "runs", _, "meta"])
        | ("DELETE", ["", "api", "runs", _, "alerts", "rules", _])
        | ("POST", ["", "api", "runs", _, "alerts", _, "dismiss"]) => Some(Action::Command),
        ("DELETE", ["", "api", "runs", _]) => Some(Action::Delete),
        ("POST", ["", "api", "jobs"] | ["", "api", "jobs", "preview"])
        | ("POST", ["", "api", "jobs", _, "cancel" | "retry" | "priority"]) => Some(Action::Submit),
        ("POST", ["", "api", "agents", "heartbeat"])
        | ("POST", ["", "api", "queues", _, "claim"])
        | ("POST", ["", "api", "jobs", _, "report"]) => Some(Action::Agent),
        (_, ["", "api", ..]) | (_, ["", "metrics"]) => Some(Action::Read),
        _ => None,
    }
}

fn bearer(req: &ServiceRequest) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(|t| t.trim().to_string())
}

/// The session id from the Cookie header.
pub fn session_cookie(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

/// Whether a state-changing request comes from a page this relay may trust: no Origin
/// (not a browser), the relay's own origin, or one of `--allow-origin`.
fn same_site(req: &ServiceRequest, allowed: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
    origin_host.eq_ignore_ascii_case(host)
        || allowed
            .iter()
            .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// The response of a guarded service: the route's own, or the guard's refusal.
pub type Guarded = Result<ServiceResponse<EitherBody<BoxBody>>, actix_web::Error>;

/// The access check in front of every route (see the module docs).
pub fn guard<S>(req: ServiceRequest, srv: &S) -> LocalBoxFuture<'static, Guarded>
where
    S: Service<ServiceRequest, Response = ServiceResponse<BoxBody>, Error = actix_web::Error>,
    S::Future: 'static,
{
    match check(&req) {
        Ok(()) => {
            let fut = srv.call(req);
            Box::pin(async move { fut.await.map(ServiceResponse::map_into_left_body) })
        }
        Err(resp) => {
            let refused = req.into_response(*resp).map_into_right_body();
            Box::pin(async move { Ok(refused) })
        }
    }
}

fn refuse(e: &ApiError) -> Box<HttpResponse> {
    Box::new(e.error_response())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn check(req: &ServiceRequest) -> Result<(), Box<HttpResponse>> {
    let Some(data) = req.app_data::<Data>().cloned() else {
        return Ok(());
    };
    let method = req.method().clone();
    let path = req.path().to_string();
    let changes = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if changes && path.starts_with("/api/") && !same_site(req, &data.allowed_origins) {
        return Err(refuse(&ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused: this page's origin is not the relay's own nor one of --allow-origin",
        )));
    }
    let Some(action) = action_of(&method, &path) else {
        return Ok(());
    };
    let token = bearer(req);
    let job_run = token
        .as_deref()
        .filter(|t| t.starts_with(crate::launch::tokens::PREFIX) && data.auth.enabled())
        .map(|t| (t, data.launch.token_run(t)));
    let identified = match job_run {
        Some((t, Some(run))) => Ok(Identity::job_token(
            t.split('.').nth(1).unwrap_or_default(),
            &run,
        )),
        Some((_, None)) => Err(AuthError::Invalid(
            "unknown job token, or its job has ended",
        )),
        None => data
            .auth
            .identify(token.as_deref(), session_cookie(req.headers()).as_deref()),
    };
    let who = match identified {
        Ok(who) => who,
        Err(e) => {
            let mut resp = unauthorized(e.message()).error_response();
            if e != AuthError::Missing || bearer(req).is_some() {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            return Err(Box::new(resp));
        }
    };
    if let Err(why) = who.may(action) {
        return Err(refuse(&ApiError::new(StatusCode::FORBIDDEN, why)));
    }
    req.extensions_mut().insert(who);
    Ok(())
}

/// The caller's identity, as [`guard`] left it.
pub fn identity(req: &HttpRequest) -> Identity {
    req.extensions()
        .get::<Identity>()
        .cloned()
        .unwrap_or_else(Identity::anonymous_admin)
}

#[derive(Deserialize)]
pub struct LoginBody {
    name: String,
    password: String,
}

fn cookie(req: &HttpRequest, value: &str, max_age: u64) -> String {
    let secure = req.connection_info().scheme() == "https";
    format!(
        "{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request is an HTML form post (the dashboard's sign-in and sign-out):
/// such callers get a redirect back to their page rather than JSON.
fn is_form(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
}

/// A 303 back to the page that posted the form (its path, without query or fragment),
/// with `?login=failed` when asked.
fn back(req: &HttpRequest, failed: bool) -> actix_web::HttpResponseBuilder {
    let page = req
        .headers()
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| &rest[i..]))
        .map(|p| p.split(['?', '#']).next().unwrap_or("/"))
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or("/")
        .to_string();
    let location = if failed {
        format!("{page}?login=failed")
    } else {
        page
    };
    let mut b = HttpResponse::SeeOther();
    b.insert_header((header::LOCATION, location));
    b
}

/// `POST /api/login` with `{"name","password"}` (JSON) or a form: sets the session
/// cookie; JSON callers get `{"name","role"}`, forms a redirect back to their page.
pub async fn login(
    data: Data,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let form = is_form(&req);
    if !data.auth.enabled() {
        if form {
            return Ok(back(&req, false).finish());
        }
        return Ok(HttpResponse::Ok().json(json!({ "name": null, "role": "admin", "auth": false })));
    }
    let parsed: Option<LoginBody> = if form {
        serde_urlencoded::from_bytes(&body).ok()
    } else {
        serde_json::from_slice(&body).ok()
    };
    let Some(LoginBody { name, password }) = parsed else {
        return Err(ApiError::bad_request(
            "send {\"name\": …, \"password\": …} as JSON or as a form",
        ));
    };
    let auth = data.auth.clone();
    let n = name.clone();
    // Argon2 takes tens of milliseconds: off the async workers.
    let Some((sid, who)) = web::block(move || auth.login(&n, &password)).await? else {
        tracing::info!(user = %name, "login refused");
        if form {
            return Ok(back(&req, true).finish());
        }
        return Err(unauthorized("wrong name or password"));
    };
    tracing::info!(user = %name, role = who.role.as_str(), "login");
    let set = cookie(&req, &sid, data.auth.session_seconds());
    if form {
        return Ok(back(&req, false)
            .insert_header((header::SET_COOKIE, set))
            .finish());
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, set))
        .json(json!({ "name": who.name, "role": who.role, "auth": true })))
}

/// `POST /api/logout`: ends the session and clears the cookie (a form gets a redirect).
pub async fn logout(data: Data, req: HttpRequest) -> HttpResponse {
    if let Some(sid) = session_cookie(req.headers()) {
        data.auth.logout(&sid);
    }
    let clear = cookie(&req, "", 0);
    if is_form(&req) {
        return back(&req, false)
            .insert_header((header::SET_COOKIE, clear))
            .finish();
    }
    HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, clear))
        .json(json!({ "ok": true }))
}

/// `GET /api/me`: who the caller is (401 when auth is on and nobody is logged in).
pub async fn me(data: Data, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let who = data
        .auth
        .identify(bearer.as_deref(), session_cookie(req.headers()).as_deref())
        .map_err(|e| unauthorized(e.message()))?;
    Ok(HttpResponse::Ok().json(json!({
        "name": who.name, "role": who.role, "auth": data.auth.enabled()
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_maps_to_its_action() {
        let m = |s: &str| Method::from_bytes(s.as_bytes()).unwrap_or(Method::GET);
        assert_eq!(action_of(&m("GET"), "/healthz"), None);
        assert_eq!(action_of(&m("GET"), "/readyz"), None);
        assert_eq!(action_of(&m("GET"), "/index.html"), None);
        assert_eq!(action_of(&m("POST"), "/api/login"), None);
        assert_eq!(action_of(&m("GET"), "/api/runs"), Some(Action::Read));
        assert_eq!(action_of(&m("GET"), "/metrics"), Some(Action::Read));
        assert_eq!(
            action_of(&m("GET"), "/api/runs/r/series"),
            Some(Action::Read)
        );
        assert_eq!(
            action_of(&m("POST"), "/api/runs/r/events"),
            Some(Action::WriteEvents("r"))
        );
        assert_eq!(
            action_of(&m("GET"), "/api/runs/r/commands/stream"),
            Some(Action::ReadCommands("r"))
        );
        assert_eq!(
            action_of(&m("POST"), "/api/runs/r/commands/c-1/cancel"),
            Some(Action::Command)
        );
        assert_eq!(action_of(&m("DELETE"), "/api/runs/r"), Some(Action::Delete));
        assert_eq!(
            action_of(&m("POST"), "/api/runs/r/meta"),
            Some(Action::Command)
        );
        assert_eq!(action_of(&m("GET"), "/api/values"), Some(Action::Read));
        assert_eq!(action_of(&m("PUT"), "/api/anything"), Some(Action::Read));
        assert_eq!(action_of(&m("POST"), "/api/jobs"), Some(Action::Submit));
        assert_eq!(
            action_of(&m("POST"), "/api/jobs/preview"),
            Some(Action::Submit)
        );
        assert_eq!(
            action_of(&m("POST"), "/api/jobs/j1/cancel"),
            Some(Action::Submit)
        );
        assert_eq!(action_of(&m("GET"), "/api/jobs"), Some(Action::Read));
        assert_eq!(
            action_of(&m("POST"), "/api/queues/q/claim"),
            Some(Action::Agent)
        );
        assert_eq!(
            action_of(&m("POST"), "/api/jobs/j1/report"),
            Some(Action::Agent)
        );
        assert_eq!(
            action_of(&m("POST"), "/api/agents/heartbeat"),
            Some(Action::Agent)
        );
    }
}

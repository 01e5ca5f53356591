//! What wraps every route besides the access guard: CORS for `--allow-origin`, and the
//! request log (debug; server errors as warnings).

/// CORS for the API: the listed origins (`*`: any) may call it from a browser.
pub fn cors(origins: &[String]) -> actix_cors::Cors {
    let mut c = actix_cors::Cors::default()
        .allowed_methods(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"])
        .allowed_headers(vec![
            actix_web::http::header::CONTENT_TYPE,
            actix_web::http::header::AUTHORIZATION,
            actix_web::http::header::HeaderName::from_static("last-event-id"),
        ])
        .max_age(3600);
    for o in origins {
        if o == "*" {
            c = c.allow_any_origin().send_wildcard();
        } else {
            c = c.allowed_origin(o.trim_end_matches('/'));
        }
    }
    c
}

/// Logs each request (debug; server errors as warnings) with its status and time.
pub fn log_request<S, B>(
    req: actix_web::dev::ServiceRequest,
    srv: &S,
) -> impl std::future::Future<Output = Result<actix_web::dev::ServiceResponse<B>, actix_web::Error>>
where
    S: actix_web::dev::Service<
        actix_web::dev::ServiceRequest,
        Response = actix_web::dev::ServiceResponse<B>,
        Error = actix_web::Error,
    >,
{
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        let status = res.status().as_u16();
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if status >= 500 {
            tracing::warn!(%method, %path, status, ms, "request failed");
        } else {
            tracing::debug!(%method, %path, status, ms, "request");
        }
        Ok(res)
    }
}

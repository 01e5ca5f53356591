//! The URL hash holds the page, the run(s) and the view settings, so a reload or a
//! shared link restores the view: `#/`, `#/runs/<id>?x=step&smooth=0.6&log=loss&zoom=100~500`,
//! `#/compare?runs=a,b&base=a`, `#/launch?clone=<run>` (or `?template=NAME`),
//! `#/queue?job=<id>`, `#/params?tag=sweep&metric=val_loss`.

/// Which page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    Runs,
    Run(String),
    Compare(Vec<String>),
    /// Launch a job: `?template=NAME` picks the template, `?clone=<run>` re-runs a run.
    Launch,
    /// The job queues: `?job=<id>` highlights one.
    Queue,
    /// A sweep's config keys against a metric: `?runs=a,b` or `?tag=X` / `?group=G`
    /// choose the runs (all runs without), `&metric=val_loss&goal=min|max`.
    Params,
}

/// A page and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub page: Page,
    pub params: Vec<(String, String)>,
}

fn decode(s: &str) -> String {
    js_sys::decode_uri_component(s)
        .ok()
        .and_then(|v| v.as_string())
        .unwrap_or_else(|| s.to_string())
}

/// Percent-encodes a URL component.
pub fn enc(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

impl Route {
    pub fn parse(hash: &str) -> Route {
        let h = hash.trim_start_matches('#').trim_start_matches('/');
        let (path, query) = h.split_once('?').unwrap_or((h, ""));
        let params: Vec<(String, String)> = query
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (decode(k), decode(v))
            })
            .collect();
        let page = if let Some(id) = path.strip_prefix("runs/").filter(|s| !s.is_empty()) {
            Page::Run(decode(id))
        } else if path == "compare" {
            let runs = params
                .iter()
                .find(|(k, _)| k == "runs")
                .map(|(_, v)| {
                    v.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            Page::Compare(runs)
        } else if path == "launch" {
            Page::Launch
        } else if path == "queue" {
            Page::Queue
        } else if path == "params" {
            Page::Params
        } else {
            Page::Runs
        };
        Route { page, params }
    }

    /// A parameter's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The hash for a page with parameters.
    pub fn hash(page: &Page, params: &[(&str, String)]) -> String {
        let path = match page {
            Page::Runs => "#/".to_string(),
            Page::Run(id) => format!("#/runs/{}", enc(id)),
            Page::Compare(_) => "#/compare".to_string(),
            Page::Launch => "#/launch".to_string(),
            Page::Queue => "#/queue".to_string(),
            Page::Params => "#/params".to_string(),
        };
        let mut q: Vec<String> = Vec::new();
        if let Page::Compare(runs) = page {
            q.push(format!(
                "runs={}",
                runs.iter().map(|r| enc(r)).collect::<Vec<_>>().join(",")
            ));
        }
        q.extend(
            params
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| format!("{k}={}", enc(v))),
        );
        if q.is_empty() {
            path
        } else {
            format!("{path}?{}", q.join("&"))
        }
    }
}

/// The current hash.
pub fn current_hash() -> String {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .unwrap_or_default()
}

/// Rewrites the hash without navigating (settings changed on the same page).
pub fn replace_hash(hash: &str) {
    if current_hash() == hash {
        return;
    }
    if let Some(w) = web_sys::window() {
        if let Ok(h) = w.history() {
            let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(hash));
        }
    }
}

/// The link to a run's page.
pub fn run_href(run: &str) -> String {
    Route::hash(&Page::Run(run.to_string()), &[])
}

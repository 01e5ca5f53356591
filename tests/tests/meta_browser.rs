//! Tags, notes and groups driven from the browser: a run's notes and tags edited on its
//! page in headless Chromium (Markdown rendered, markup and script never let through,
//! the change in the history with who made it), then the runs list filtered by tag,
//! grouped by group and by a config value, with a config value as a column.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::time::Duration;
use stepwatch_e2e::*;

const WAIT: Duration = Duration::from_secs(30);

fn rows(b: &Browser) -> serde_json::Value {
    b.eval("return [...document.querySelectorAll('[data-testid=run-row]')].map(r => r.dataset.run).sort().join(',');")
}

#[test]
fn notes_and_tags_edited_in_the_browser_then_the_list_filters_and_groups_by_them() {
    let dir = TempDir::new("meta-browser");
    let dist = dist();
    let relay = Relay::start(&dir.0.join("data"), &["--dist", dist.to_str().unwrap()]);
    for (run, lr, extra) in [
        (
            "r-a",
            0.1,
            json!({"event": "run_meta", "tags": ["baseline"]}),
        ),
        ("r-b", 0.01, json!({"event": "log", "message": "hi"})),
        ("r-c", 0.1, json!({"event": "run_meta", "group": "g1"})),
    ] {
        let start = json!({"event": "training_start", "config": {"lr": lr, "model": "mlp"}});
        let (s, v) = relay.post(run, &format!("{start}\n{extra}\n"), "application/x-ndjson");
        assert_eq!(s, 200, "{v}");
    }
    let b = Browser::start();
    b.on_new_document("window.pwned = 0;");
    b.goto(&format!("{}/#/runs/r-b", relay.url));
    b.wait_for(
        "the edit button",
        WAIT,
        "return document.querySelector('[data-testid=meta-edit]');",
    );
    b.eval("document.querySelector('[data-testid=meta-edit]').click(); return 1;");
    b.wait_for(
        "the form",
        WAIT,
        "return document.querySelector('[data-testid=meta-form]');",
    );
    // A bad tag is refused in the form, naming the field, and nothing is sent.
    b.eval(&format!(
        "document.querySelector('[data-testid=meta-tags]').value = {}; \
         document.querySelector('[data-testid=meta-save]').click(); return 1;",
        serde_json::to_string(&"x".repeat(70)).unwrap()
    ));
    let field = b.wait_for(
        "the form's error",
        WAIT,
        "return document.querySelector('[data-testid=meta-error]')?.dataset.field;",
    );
    assert_eq!(field, json!("tags[0]"));
    assert!(relay.get_ok("/api/runs/r-b").get("tags").is_none());
    let notes = "# Why\n**lr too low**, see [run a](https://example.com/a)\n\n<script>window.pwned = 1</script>\n\
                 <img src=x onerror=\"window.pwned = 2\">\n[bad](javascript:window.pwned=3)";
    b.eval(&format!(
        "document.querySelector('[data-testid=meta-tags]').value = ' lr sweep , best,lr sweep'; \
         document.querySelector('[data-testid=meta-group]').value = 'g1'; \
         document.querySelector('[data-testid=meta-notes]').value = {}; \
         document.querySelector('[data-testid=meta-save]').click(); return 1;",
        serde_json::to_string(notes).unwrap()
    ));
    let chips = b.wait_for(
        "the tags on the page",
        WAIT,
        "return [...document.querySelectorAll('[data-testid=meta-panel] [data-testid=tag]')].map(t => t.textContent).join('|');",
    );
    assert_eq!(chips, json!("lr sweep|best"));
    assert_eq!(
        b.text("[data-testid=meta-panel] [data-testid=group]"),
        "Group: g1"
    );
    let html = b.eval("const n = document.querySelector('[data-testid=notes]'); \
        return {strong: n.querySelector('strong')?.textContent, h: n.querySelector('h3')?.textContent, \
        link: n.querySelector('a')?.getAttribute('href'), links: n.querySelectorAll('a').length, \
        scripts: n.querySelectorAll('script,img').length, text: n.textContent};");
    assert_eq!(html["strong"], "lr too low");
    assert_eq!(html["h"], "Why");
    assert_eq!(html["link"], "https://example.com/a");
    assert_eq!(html["links"], 1, "the javascript: link is text: {html}");
    assert_eq!(html["scripts"], 0, "{html}");
    assert!(
        html["text"].as_str().unwrap().contains("<script>"),
        "shown as text: {html}"
    );
    assert_eq!(b.eval("return window.pwned;"), json!(0));
    let state = relay.get_ok("/api/runs/r-b");
    assert_eq!(state["tags"], json!(["lr sweep", "best"]));
    assert_eq!(state["group"], "g1");
    // The history says who changed what.
    b.eval("document.querySelector('[data-testid=meta-panel] details').open = true; return 1;");
    let history = b.wait_for(
        "the history of changes",
        WAIT,
        "return document.querySelector('[data-testid=meta-history] li')?.textContent;",
    );
    let history = history.as_str().unwrap();
    assert!(
        history.contains("anonymous") && history.contains("lr sweep, best"),
        "{history}"
    );

    runs_list_filters_and_groups(&b);
}

/// The runs list after r-b got its tags: filtered by tag (a chip's link, the select),
/// grouped by group and by a config value, a config value as a column, kept in the URL.
fn runs_list_filters_and_groups(b: &Browser) {
    // The runs list: a tag chip links to the list filtered by it.
    b.eval(
        "document.querySelector('[data-testid=meta-panel] [data-testid=tag]').click(); return 1;",
    );
    b.wait_for(
        "the list filtered by tag",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 1;",
    );
    assert_eq!(rows(b), json!("r-b"));
    b.choose("tag-filter", "");
    b.wait_for(
        "every run again",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 3;",
    );
    b.choose("tag-filter", "baseline");
    b.wait_for(
        "the baseline run",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 1;",
    );
    assert_eq!(rows(b), json!("r-a"));
    b.choose("tag-filter", "");
    // Grouped by group, then by a config value, which is also shown as a column.
    b.wait_for(
        "every run again",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 3;",
    );
    b.choose("group-by", "group");
    let heads = "return [...document.querySelectorAll('[data-testid=group-head]')].map(h => h.textContent.trim()).join('|');";
    let got = b.wait_for(
        "the group headings",
        WAIT,
        &format!("const h = (() => {{ {heads} }})(); return h.includes('g1') && h;"),
    );
    assert_eq!(got, json!("g1 2|(none) 1"));
    b.wait_for("the config keys offered", WAIT, "return [...document.querySelectorAll('[data-testid=group-by] option')].some(o => o.value === 'c:lr');");
    b.choose("group-by", "c:lr");
    let got = b.wait_for(
        "the lr groups",
        WAIT,
        &format!("const h = (() => {{ {heads} }})(); return h.includes('0.01') && h;"),
    );
    assert_eq!(got, json!("0.01 1|0.1 2"));
    b.choose("add-column", "c:model");
    let cells = b.wait_for(
        "the model column",
        WAIT,
        "const c = [...document.querySelectorAll('[data-testid=run-row] td.extra')].map(t => t.textContent); return c.length === 3 && !c.includes('–') && c.join(',');",
    );
    assert_eq!(cells, json!("mlp,mlp,mlp"));
    assert_eq!(
        b.text("[data-testid=extra-col]").trim_end_matches('×'),
        "model"
    );
    // The settings are in the URL: a reload keeps them.
    b.eval("location.reload(); return 1;");
    let got = b.wait_for(
        "the groups after a reload",
        WAIT,
        &format!("const h = (() => {{ {heads} }})(); return h.includes('0.01') && h;"),
    );
    assert_eq!(got, json!("0.01 1|0.1 2"));
    // Pick every run shown (filtered by a tag) and compare them.
    b.choose("group-by", "");
    b.choose("tag-filter", "lr sweep");
    b.wait_for(
        "one run",
        WAIT,
        "return document.querySelectorAll('[data-testid=run-row]').length === 1;",
    );
    b.eval("document.querySelector('[data-testid=pick-all]').click(); return 1;");
    let compare = b.wait_for("the compare link", WAIT, "return document.querySelector('[data-testid=compare-button]').textContent.includes('(1)') && document.querySelector('[data-testid=compare-button]').textContent;");
    assert!(compare.as_str().unwrap().contains("(1)"));
}

//! Debug aid: loads a page and prints why its wasm did or did not start.
#![allow(clippy::unwrap_used)]
use std::time::Duration;
fn main() {
    let url = std::env::args().nth(1).unwrap();
    let b = stepwatch_e2e::Browser::start();
    b.goto(&url);
    std::thread::sleep(Duration::from_secs(3));
    b.eval("const s=[...document.querySelectorAll('link[rel=modulepreload]')][0].href; const w=[...document.querySelectorAll('link[as=fetch]')][0].href; window.__err='pending'; import(s).then(m=>m.default({module_or_path:w})).then(()=>window.__err='ok').catch(e=>window.__err=String(e.stack||e)); return 1;");
    std::thread::sleep(Duration::from_secs(3));
    println!("{}", b.eval("return JSON.stringify({wb: !!window.wasmBindings, err: window.__err, body: document.body.innerHTML.slice(0,300)});"));
}

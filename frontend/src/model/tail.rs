//! The run page's live tails, decoded from their events: `log` lines and `system`
//! samples (CPU, RAM, each GPU).

use stepwatch_events::{num, Event, EventBody};

/// One log line.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub id: u64,
    pub time: f64,
    pub level: String,
    pub message: String,
    pub logger: String,
    /// The rank that logged it, in a distributed run.
    pub rank: Option<u64>,
}

/// One GPU in a system sample.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuSample {
    pub index: u64,
    pub name: String,
    pub util_percent: Option<f64>,
    pub mem_used_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub temperature_c: Option<f64>,
    pub power_w: Option<f64>,
}

/// One `system` event.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SystemSample {
    pub time: f64,
    pub cpu_percent: Option<f64>,
    pub mem_used_bytes: Option<f64>,
    pub mem_total_bytes: Option<f64>,
    pub gpus: Vec<GpuSample>,
    /// The rank it came from, in a distributed run.
    pub rank: Option<u64>,
}

/// A `log` event as a line of the tail (`None` for any other event).
pub fn log_line(e: &Event, time: f64) -> Option<LogLine> {
    let EventBody::Log(l) = &e.body else {
        return None;
    };
    Some(LogLine {
        id: e.id.unwrap_or(0),
        time,
        level: l
            .level
            .clone()
            .unwrap_or_else(|| "info".into())
            .to_ascii_lowercase(),
        message: l.message.clone().unwrap_or_default(),
        logger: l.logger.clone().unwrap_or_default(),
        rank: l.rank,
    })
}

/// A `system` event as a sample (`None` for any other event).
pub fn system_sample(e: &Event, time: f64) -> Option<SystemSample> {
    let EventBody::System(s) = &e.body else {
        return None;
    };
    let f =
        |m: &serde_json::Map<String, serde_json::Value>, k: &str| m.get(k).and_then(num::from_json);
    Some(SystemSample {
        time,
        cpu_percent: s.cpu_percent,
        mem_used_bytes: s.mem_used_bytes.map(|x| x as f64),
        mem_total_bytes: s.mem_total_bytes.map(|x| x as f64),
        gpus: s
            .gpus
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, g)| GpuSample {
                index: g.get("index").and_then(|v| v.as_u64()).unwrap_or(i as u64),
                name: g
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_string(),
                util_percent: f(g, "util_percent"),
                mem_used_bytes: f(g, "mem_used_bytes"),
                mem_total_bytes: f(g, "mem_total_bytes"),
                temperature_c: f(g, "temperature_c"),
                power_w: f(g, "power_w"),
            })
            .collect(),
        rank: s.rank,
    })
}

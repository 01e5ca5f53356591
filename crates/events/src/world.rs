//! A distributed run's world: its ranks (processes), where they run and how each is
//! doing. Every rank's SDK joins the same run; its `rank` event says where it runs, its
//! `system` samples say its load, step and step time, and its errors, log records and
//! command answers carry its rank. The reducer ([`crate::RunState`]) keeps one
//! [`RankInfo`] per rank here, judges a command done when every rank has done it
//! ([`World::ack`]) and names the rank that failed a run.

use crate::bodies::{Rank, System};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// The most ranks a state tracks (a larger world keeps its first ranks).
pub const MAX_RANKS: u64 = 4096;

/// The ranks of a distributed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct World {
    /// `WORLD_SIZE`: how many ranks the run has.
    pub size: u64,
    /// One entry per rank heard from, by rank.
    pub ranks: Vec<RankInfo>,
}

/// One rank of a distributed run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RankInfo {
    pub rank: u64,
    pub host: Option<String>,
    pub local_rank: Option<u64>,
    pub node_rank: Option<u64>,
    pub pid: Option<u64>,
    /// `running`, `ended`, `failed` (it reported a fatal error) or `lost` (it went silent).
    pub state: String,
    /// How it ended, when it did: `completed`, `failed`, `stopped`.
    pub status: Option<String>,
    /// Relay time of the latest event from it.
    pub seen_at: Option<f64>,
    /// Seconds between its heartbeats.
    pub interval: Option<f64>,
    /// Its step and mean step time (ms) at its latest sample.
    pub step: Option<u64>,
    pub step_ms: Option<f64>,
    /// Its latest load: CPU %, and the mean utilisation and summed memory of its GPUs.
    pub cpu_percent: Option<f64>,
    pub gpu_util: Option<f64>,
    pub gpu_mem_bytes: Option<u64>,
    pub gpu_mem_total_bytes: Option<u64>,
}

impl RankInfo {
    /// Gone for good: ended, failed or lost.
    pub fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "ended" | "failed" | "lost")
    }
}

/// A command's answer from one rank, and where the command stands over all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct RankAck {
    /// The command's overall status: `done` once every live rank is done, `rejected` /
    /// `failed` as soon as one rank says so, else `accepted`.
    pub status: String,
    /// Ranks that have not reached this rank's status yet.
    pub waiting: Vec<u64>,
}

impl World {
    /// The entry of `rank`, made when first heard from (`None` past [`MAX_RANKS`]).
    pub fn rank_mut(&mut self, rank: u64) -> Option<&mut RankInfo> {
        if rank >= MAX_RANKS {
            return None;
        }
        self.size = self.size.max(rank + 1);
        let i = match self.ranks.binary_search_by_key(&rank, |r| r.rank) {
            Ok(i) => i,
            Err(i) => {
                self.ranks.insert(
                    i,
                    RankInfo {
                        rank,
                        state: "running".into(),
                        ..Default::default()
                    },
                );
                i
            }
        };
        self.ranks.get_mut(i)
    }

    /// The entry of `rank`, if heard from.
    pub fn rank(&self, rank: u64) -> Option<&RankInfo> {
        self.ranks
            .binary_search_by_key(&rank, |r| r.rank)
            .ok()
            .and_then(|i| self.ranks.get(i))
    }

    /// Any event from `rank`, received at `at`.
    pub fn seen(&mut self, rank: u64, at: Option<f64>) {
        if let Some(r) = self.rank_mut(rank) {
            if at.is_some() {
                r.seen_at = at;
            }
            if r.state == "lost" {
                r.state = "running".into(); // it came back
            }
        }
    }

    /// A `rank` event.
    pub fn rank_event(&mut self, e: &Rank) {
        let Some(n) = e.rank else { return };
        if let Some(w) = e.world_size {
            self.size = self.size.max(w.min(MAX_RANKS));
        }
        let Some(r) = self.rank_mut(n) else { return };
        let keep = |dst: &mut Option<u64>, v: Option<u64>| {
            if v.is_some() {
                *dst = v;
            }
        };
        keep(&mut r.local_rank, e.local_rank);
        keep(&mut r.node_rank, e.node_rank);
        keep(&mut r.pid, e.pid);
        keep(&mut r.step, e.step);
        if e.host.is_some() {
            r.host = e.host.clone();
        }
        if e.interval.is_some() {
            r.interval = e.interval;
        }
        match e.state.as_deref() {
            Some("started") => {
                r.state = "running".into();
                r.status = None;
            }
            Some("ended") => {
                r.status = Some(e.status.clone().unwrap_or_else(|| "completed".into()));
                if r.state != "failed" {
                    r.state = "ended".into();
                }
            }
            Some("lost") if !r.is_over() => r.state = "lost".into(),
            _ => {}
        }
    }

    /// A `system` sample from `rank`.
    pub fn system(&mut self, rank: u64, s: &System) {
        let Some(r) = self.rank_mut(rank) else { return };
        if s.step.is_some() {
            r.step = s.step;
        }
        if s.step_ms.is_some() {
            r.step_ms = s.step_ms;
        }
        if s.cpu_percent.is_some() {
            r.cpu_percent = s.cpu_percent;
        }
        if let Some(gpus) = &s.gpus {
            let num = |g: &serde_json::Map<String, serde_json::Value>, k: &str| {
                g.get(k).and_then(serde_json::Value::as_f64)
            };
            let utils: Vec<f64> = gpus.iter().filter_map(|g| num(g, "util_percent")).collect();
            r.gpu_util =
                (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64);
            let sum = |k: &str| {
                let v: Vec<f64> = gpus.iter().filter_map(|g| num(g, k)).collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() as u64)
            };
            r.gpu_mem_bytes = sum("mem_used_bytes");
            r.gpu_mem_total_bytes = sum("mem_total_bytes");
        }
    }

    /// Ranks, in `0..size`, that are not over and have not answered `status` (or a
    /// later one) in `acks` (each rank's latest answer, by rank).
    fn waiting(&self, acks: &[String], status: &str) -> Vec<u64> {
        let rank_of = |s: &str| match s {
            "accepted" => 1,
            "done" => 2,
            _ => 0,
        };
        let need = rank_of(status);
        (0..self.size.min(MAX_RANKS))
            .filter(|n| !self.rank(*n).is_some_and(RankInfo::is_over))
            .filter(|n| acks.get(*n as usize).is_none_or(|s| rank_of(s) < need))
            .collect()
    }

    /// Rank `rank` answered a command with `status`; `acks` holds every rank's latest
    /// answer to it, by rank (`""`: none yet).
    pub fn ack(&self, acks: &mut Vec<String>, rank: u64, status: &str) -> RankAck {
        let i = rank.min(MAX_RANKS) as usize;
        if acks.len() <= i {
            acks.resize(i + 1, String::new());
        }
        acks[i] = status.to_string();
        if matches!(status, "rejected" | "failed") {
            return RankAck {
                status: status.to_string(),
                waiting: Vec::new(),
            };
        }
        let done = self.waiting(acks, "done");
        if done.is_empty() {
            return RankAck {
                status: "done".into(),
                waiting: done,
            };
        }
        RankAck {
            status: "accepted".into(),
            waiting: self.waiting(acks, status),
        }
    }

    /// A command's answers seen again after a rank ended or was lost: `done` when every
    /// rank still running has done it, else the ranks it still waits for at `status`.
    pub fn recheck(&self, acks: &[String], status: &str) -> RankAck {
        let done = self.waiting(acks, "done");
        if done.is_empty() {
            return RankAck {
                status: "done".into(),
                waiting: done,
            };
        }
        RankAck {
            status: status.to_string(),
            waiting: self.waiting(acks, status),
        }
    }

    /// "rank 1 (host-a)": how messages name a rank.
    pub fn name(&self, rank: u64) -> String {
        match self.rank(rank).and_then(|r| r.host.as_deref()) {
            Some(h) => format!("rank {rank} ({h})"),
            None => format!("rank {rank}"),
        }
    }

    /// Ranks that went silent at relay time `now`: running, with a heartbeat interval,
    /// heard from before, and not for [`lost_after`] their interval; or for one interval
    /// and 2 s while every other rank is over (the launcher took the rest down after it
    /// died).
    pub fn silent(&self, now: f64) -> Vec<u64> {
        let all_others_over = |n: u64| {
            self.ranks.len() > 1
                && self
                    .ranks
                    .iter()
                    .filter(|r| r.rank != n)
                    .all(RankInfo::is_over)
        };
        self.ranks
            .iter()
            .filter(|r| r.state == "running")
            .filter(|r| {
                // A rank without heartbeats (no interval) is not judged by its silence.
                let (Some(seen), Some(interval)) = (r.seen_at, r.interval) else {
                    return false;
                };
                let quiet = now - seen;
                quiet > lost_after(interval) || (quiet > interval + 2.0 && all_others_over(r.rank))
            })
            .map(|r| r.rank)
            .collect()
    }
}

/// The world from its JSON, field by field: what the dashboard draws of it (its place,
/// state, step and step time; its own reducer fills in the rest from the stream).
/// Decoding through [`Value`], whose decoder the dashboard has anyway, costs it far
/// fewer bytes than a derived decoder would.
pub fn from_value(v: &Value) -> Option<World> {
    let ranks = v.get("ranks")?.as_array()?;
    let ranks = ranks.iter().filter_map(|r| {
        let s = |k: &str| r.get(k).and_then(Value::as_str).map(str::to_string);
        let u = |k: &str| r.get(k).and_then(Value::as_u64);
        Some(RankInfo {
            rank: u("rank")?,
            host: s("host"),
            local_rank: u("local_rank"),
            node_rank: u("node_rank"),
            state: s("state").unwrap_or_default(),
            status: s("status"),
            step: u("step"),
            step_ms: r.get("step_ms").and_then(Value::as_f64),
            ..Default::default()
        })
    });
    Some(World {
        size: v.get("size")?.as_u64()?,
        ranks: ranks.collect(),
    })
}

/// `RunState.world` as the dashboard decodes it (see [`from_value`]).
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<World>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?
        .as_ref()
        .and_then(from_value))
}

/// Silence after which a rank with heartbeat `interval` is lost: three heartbeats, and
/// at least 15 s.
pub fn lost_after(interval: f64) -> f64 {
    (interval.max(0.5) * 3.0).max(15.0)
}

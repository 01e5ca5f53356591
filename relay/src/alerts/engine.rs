//! The alert engine: one thread that sees every committed batch (the hub hands it over
//! without waiting), runs each run's rules ([`RunAlerts`]) over the events in id order
//! and on a one-second clock, and writes what they decide into the run's stream. The
//! relay whose append stored a record (others find it a duplicate of the same
//! `(src, seq)`) sends its notices and its action.

use super::config::AlertConfig;
use super::deliver::{Deliverer, Job};
use super::notify::{Notice, NoticeState, MAX_ATTEMPTS};
use super::Metrics;
use crate::clock::now;
use crate::hub::{CommitObserver, Hub};
use crate::storage::{Committed, Parsed, Storage, StoredEvent};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stepwatch_events::alerts::{At, Rule, RunAlerts, Transition};
use stepwatch_events::event::{Command, Rank};
use stepwatch_events::{Event, EventBody, RunState};

/// Batches waiting for the engine before the hub stops handing them over (the engine
/// then catches up from storage).
const INBOX: usize = 8192;
/// How often silence and idle GPUs are checked.
const TICK: Duration = Duration::from_secs(1);
/// Events read back to refill a run's windows when the engine first meets it mid-run.
const WARM_EVENTS: usize = 512;
/// After a restart, undelivered notices of alerts younger than this are sent again…
const REDELIVER_WITHIN_S: f64 = 3600.0;
/// …after this long (a relay still delivering them has time to record it).
const REDELIVER_DELAY: Duration = Duration::from_secs(5);
/// A run that ended is forgotten after this long without events.
const FORGET_ENDED: Duration = Duration::from_secs(600);

/// One committed batch, as the engine gets it.
struct Seen {
    run: String,
    events: Vec<Arc<StoredEvent>>,
    parsed: Option<Arc<Vec<Parsed>>>,
    state: Arc<RunState>,
}

/// The hub's side: hands batches to the engine thread, never waiting.
pub(super) struct Inbox {
    tx: SyncSender<Seen>,
    /// Runs the engine follows (other relays' batches of these are wanted too).
    watched: Mutex<HashSet<String>>,
    /// Runs whose batches did not fit: the engine reads them back from storage.
    lagged: Mutex<HashSet<String>>,
    metrics: Arc<Metrics>,
}

impl CommitObserver for Inbox {
    fn committed(&self, c: &Committed) {
        let seen = Seen {
            run: c.run.clone(),
            events: c.events.clone(),
            parsed: c.parsed.clone(),
            state: c.state.clone(),
        };
        match self.tx.try_send(seen) {
            Ok(()) => {}
            Err(TrySendError::Full(s) | TrySendError::Disconnected(s)) => {
                self.metrics.lagged.fetch_add(1, Ordering::Relaxed);
                lock(&self.lagged).insert(s.run);
            }
        }
    }

    fn watches(&self, run: &str) -> bool {
        lock(&self.watched).contains(run)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Transitions the clock decided for one run, each with its `seq`.
type Decided = (Arc<RunState>, Vec<(Transition, u64)>);

/// What the engine keeps per run it follows.
struct Tracked {
    eval: RunAlerts,
    /// The last event id evaluated.
    last_id: u64,
    /// The run's state after the last batch seen.
    state: Arc<RunState>,
    last_seen: Instant,
}

/// The engine thread's own state.
pub(super) struct Engine {
    config: Arc<AlertConfig>,
    store: Arc<dyn Storage>,
    hub: Arc<Hub>,
    inbox: Arc<Inbox>,
    runs: HashMap<String, Tracked>,
    deliver: Deliverer,
    metrics: Arc<Metrics>,
    base_url: String,
}

/// Starts the engine thread and hooks it to the hub.
pub(super) fn start(
    config: Arc<AlertConfig>,
    store: Arc<dyn Storage>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    base_url: String,
) -> anyhow::Result<()> {
    // Runs live now, with how far their events go: what comes after reaches the engine
    // through the hub, hooked below.
    let live: Vec<(String, u64)> = store
        .runs()
        .into_iter()
        .filter(|s| s.status.is_live())
        .map(|s| (s.run, s.last_id))
        .collect();
    let (tx, rx) = sync_channel(INBOX);
    let inbox = Arc::new(Inbox {
        tx,
        watched: Mutex::new(HashSet::new()),
        lagged: Mutex::new(HashSet::new()),
        metrics: metrics.clone(),
    });
    hub.observe(inbox.clone());
    let deliver = Deliverer::start(store.clone(), hub.clone(), metrics.clone())?;
    let mut engine = Engine {
        config,
        store,
        hub,
        inbox,
        runs: HashMap::new(),
        deliver,
        metrics,
        base_url,
    };
    std::thread::Builder::new()
        .name("alerts".into())
        .spawn(move || engine.run(rx, live))?;
    Ok(())
}

impl Engine {
    fn run(&mut self, rx: Receiver<Seen>, live: Vec<(String, u64)>) {
        // Every live run is followed from the start, so a trainer that died while the
        // relay was down still goes stale.
        for (run, upto) in live {
            if self.ensure(&run, upto).is_some() {
                self.redeliver(&run);
            }
        }
        let mut next_tick = Instant::now() + TICK;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(seen) => self.batch(seen),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if Instant::now() >= next_tick {
                self.catch_up();
                self.tick();
                next_tick = Instant::now() + TICK;
            }
        }
    }

    /// The run's tracker. Met after event `upto` (not at its start), it restores from
    /// storage what came up to there; later events come through the hub.
    fn ensure(&mut self, run: &str, upto: u64) -> Option<&mut Tracked> {
        if !self.runs.contains_key(run) {
            let tracked = if upto == 0 {
                Tracked {
                    eval: RunAlerts::new(run, self.config.rules_for(run, &[])),
                    last_id: 0,
                    state: Arc::new(RunState::new(run)),
                    last_seen: Instant::now(),
                }
            } else {
                self.restore(run, upto)?
            };
            lock(&self.inbox.watched).insert(run.to_string());
            self.runs.insert(run.to_string(), tracked);
        }
        self.runs.get_mut(run)
    }

    fn restore(&self, run: &str, upto: u64) -> Option<Tracked> {
        let state = self.store.state(run)?;
        let own: Vec<Rule> = state.alerts.rules.iter().map(|r| r.rule.clone()).collect();
        let mut eval = RunAlerts::new(run, self.config.rules_for(run, &own));
        let mut recent: Vec<Event> = self
            .store
            .events_desc(run, Some(upto + 1), WARM_EVENTS, None)
            .unwrap_or_default()
            .iter()
            .filter_map(|e| Event::from_json(&e.json).ok())
            .collect();
        recent.reverse();
        eval.restore(&state, &recent);
        Some(Tracked {
            eval,
            last_id: upto,
            state,
            last_seen: Instant::now(),
        })
    }

    /// After a restart: the notices of the run's active alerts that never got through
    /// (the relay stopped mid-delivery) are sent again, unless they go meanwhile.
    fn redeliver(&self, run: &str) {
        let Some(state) = self.store.state(run) else {
            return;
        };
        let since = now() - REDELIVER_WITHIN_S;
        for (a, channel, made) in state.alerts.undelivered(since, u64::from(MAX_ATTEMPTS)) {
            let Some(ch) = self.config.channel(channel) else {
                continue;
            };
            let n = Notice {
                state: NoticeState::Fired,
                alert_id: a.alert_id.clone(),
                run: run.to_string(),
                run_name: state.name.clone(),
                rule: a.rule.clone(),
                kind: a.kind.clone(),
                level: a.level.clone(),
                title: a.title.clone(),
                text: a.text.clone(),
                metric: a.metric.clone(),
                value: a.value,
                step: a.step,
                action: a.action.clone(),
                url: format!("{}/#/runs/{run}", self.base_url),
                time: a.since.unwrap_or_else(now),
            };
            tracing::info!(run, alert = %a.alert_id, channel, "sending an alert notice again after a restart");
            self.deliver
                .push(Job::resumed(ch.clone(), n, made as u32, REDELIVER_DELAY));
        }
    }

    /// Runs whose batches did not fit in the inbox: read what was missed from storage.
    fn catch_up(&mut self) {
        let lagged: Vec<String> = lock(&self.inbox.lagged).drain().collect();
        for run in lagged {
            let Some(state) = self.store.state(&run) else {
                continue;
            };
            let seen = Seen {
                run,
                events: Vec::new(),
                parsed: None,
                state,
            };
            self.batch(seen);
        }
    }

    fn batch(&mut self, seen: Seen) {
        let first = seen.events.first().map(|e| e.id);
        let store = self.store.clone();
        let config = self.config.clone();
        let upto = first.map_or(seen.state.last_id, |f| f.saturating_sub(1));
        let Some(t) = self.ensure(&seen.run, upto) else {
            return;
        };
        t.last_seen = Instant::now();
        let mut out: Vec<(Transition, u64)> = Vec::new();
        // A gap (lag, or a batch before this one that never came): read it back.
        let newest = seen
            .state
            .last_id
            .max(seen.events.last().map_or(0, |e| e.id));
        let from_here = first.unwrap_or(newest + 1);
        while t.last_id + 1 < from_here {
            let missing = store
                .events(&seen.run, t.last_id, 1000, None)
                .unwrap_or_default();
            if missing.is_empty() {
                break;
            }
            for e in missing.iter().take_while(|e| e.id < from_here) {
                if let Ok(ev) = Event::from_json(&e.json) {
                    let at = approx_at(&ev, &seen.state);
                    step(t, &config, &ev, at, &mut out);
                }
                t.last_id = e.id;
            }
            if missing.last().is_some_and(|e| e.id >= from_here) {
                break;
            }
        }
        for (i, e) in seen.events.iter().enumerate() {
            if e.id <= t.last_id {
                continue; // already evaluated (a duplicate hand-over)
            }
            match seen.parsed.as_ref().and_then(|p| p.get(i)) {
                Some(p) => {
                    let at = At {
                        step: p.step,
                        status: p.status,
                        state: &seen.state,
                    };
                    step(t, &config, &p.event, at, &mut out);
                }
                None => {
                    if let Ok(ev) = Event::from_json(&e.json) {
                        let at = approx_at(&ev, &seen.state);
                        step(t, &config, &ev, at, &mut out);
                    }
                }
            }
            t.last_id = e.id;
        }
        t.state = seen.state;
        if !out.is_empty() {
            let state = t.state.clone();
            self.write(&state, out);
        }
    }

    fn tick(&mut self) {
        let now = now();
        let mut decided: Vec<Decided> = Vec::new();
        self.runs
            .retain(|_, t| t.state.status.is_live() || t.last_seen.elapsed() <= FORGET_ENDED);
        let live: HashSet<&String> = self.runs.keys().collect();
        lock(&self.inbox.watched).retain(|r| live.contains(r));
        for t in self.runs.values_mut() {
            let mut out = Vec::new();
            t.eval.tick(now, &t.state, &mut out);
            if !out.is_empty() {
                let seq = |tr: &Transition| match tr {
                    Transition::Fired { body, .. } => body.trigger_id.unwrap_or(0),
                    Transition::Resolved { .. } => t.last_id,
                };
                let paired = out.into_iter().map(|tr| {
                    let s = seq(&tr);
                    (tr, s)
                });
                decided.push((t.state.clone(), paired.collect()));
            }
        }
        for (state, out) in decided {
            self.write(&state, out);
        }
        self.lost_ranks(now);
    }

    /// A distributed run's ranks that went silent (killed, out of memory, host gone):
    /// each gets a `rank` event with `state: "lost"`, which fails the run naming it.
    /// Stored once across relays: `(src, seq)` is the rank and when it was last heard.
    fn lost_ranks(&mut self, now: f64) {
        let mut lost = Vec::new();
        for (run, t) in &self.runs {
            let Some(w) = &t.state.world else { continue };
            for n in w.silent(now) {
                let Some(r) = w.rank(n) else { continue };
                let seen = r.seen_at.unwrap_or(0.0);
                let mut e = Event::new(EventBody::Rank(Rank {
                    rank: Some(n),
                    state: Some("lost".into()),
                    step: r.step,
                    message: Some(format!("nothing heard for {:.0} s", now - seen)),
                    ..Default::default()
                }));
                e.src = Some(format!("relay:rank-lost:{n}"));
                e.seq = Some((seen * 1000.0).max(1.0) as u64);
                e.time = Some(now);
                lost.push((run.clone(), e));
            }
        }
        for (run, e) in lost {
            let hub = self.hub.clone();
            if let Err(err) = self.store.append(&run, vec![e], now, &|c| hub.publish(c)) {
                tracing::warn!(run = %run, error = %err, "cannot record a lost rank");
            }
        }
    }

    /// Stores each record; for those this relay stored, sends the notices and the action.
    fn write(&mut self, state: &Arc<RunState>, out: Vec<(Transition, u64)>) {
        let run = state.run.clone();
        for (mut tr, seq) in out {
            let channels = self.config.channels_for(tr.rule());
            if let Transition::Fired { body, .. } = &mut tr {
                body.channels = Some(channels.iter().map(|c| c.name.clone()).collect());
            }
            let event = tr.to_event(seq);
            let hub = self.hub.clone();
            let stored = match self
                .store
                .append(&run, vec![event], now(), &|c| hub.publish(c))
            {
                Ok(c) if c.accepted == 1 => true,
                Ok(_) => {
                    self.metrics
                        .stored_elsewhere
                        .fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(e) => {
                    tracing::warn!(run = %run, alert = tr.alert_id(), error = %e, "cannot store an alert record");
                    false
                }
            };
            if !stored {
                continue; // another relay stored it first, or storage failed
            }
            let notice = match &tr {
                Transition::Fired { .. } => {
                    self.metrics.fired.fetch_add(1, Ordering::Relaxed);
                    self.act(state, &tr);
                    NoticeState::Fired
                }
                Transition::Resolved { .. } => {
                    self.metrics.resolved.fetch_add(1, Ordering::Relaxed);
                    NoticeState::Resolved
                }
            };
            let n = self.notice(state, &tr, notice);
            for channel in channels {
                self.deliver.push(Job::new(channel, n.clone()));
            }
        }
    }

    /// A firing's action: the ordinary pause / stop command, sent by `alert:<rule>`.
    fn act(&self, state: &RunState, tr: &Transition) {
        let Transition::Fired { rule, .. } = tr else {
            return;
        };
        let Some(action) = rule.action else { return };
        let command = action.command();
        let live = self
            .store
            .state(&state.run)
            .unwrap_or_else(|| Arc::new(state.clone()));
        if !live.status.is_live() {
            return;
        }
        if live.open_commands().any(|c| c.command == command) {
            return; // one is already on its way
        }
        if command == "pause" && live.status == stepwatch_events::RunStatus::Paused {
            return;
        }
        let body = EventBody::Command(Command {
            command_id: Some(format!("c-{:016x}", rand::random::<u64>())),
            command: Some(command.to_string()),
            args: Some(Default::default()),
            sender: Some(format!("alert:{}", rule.name)),
            ..Default::default()
        });
        let hub = self.hub.clone();
        if let Err(e) = self
            .store
            .append(&state.run, vec![Event::new(body)], now(), &|c| {
                hub.publish(c)
            })
        {
            tracing::warn!(run = %state.run, rule = %rule.name, error = %e, "cannot send the alert's {command}");
        }
    }

    fn notice(&self, state: &RunState, tr: &Transition, kind: NoticeState) -> Notice {
        let rule = tr.rule();
        let (title, text, metric, value, step, action) = match tr {
            Transition::Fired { body, .. } => (
                body.title.clone().unwrap_or_default(),
                body.text.clone().unwrap_or_default(),
                body.metric.clone(),
                body.value,
                body.step,
                body.action.clone(),
            ),
            Transition::Resolved { body, .. } => {
                let fired = state
                    .alerts
                    .active
                    .iter()
                    .find(|a| Some(&a.alert_id) == body.alert_id.as_ref());
                (
                    fired.map_or_else(|| rule.describe(), |a| a.title.clone()),
                    body.text.clone().unwrap_or_default(),
                    rule.metric.clone(),
                    None,
                    Some(state.step),
                    None,
                )
            }
        };
        Notice {
            state: kind,
            alert_id: tr.alert_id().to_string(),
            run: state.run.clone(),
            run_name: state.name.clone(),
            rule: rule.name.clone(),
            kind: rule.kind.as_str().to_string(),
            level: match tr {
                Transition::Fired { body, .. } => body.level.clone().unwrap_or_default(),
                Transition::Resolved { .. } => rule.level.as_str().to_string(),
            },
            title,
            text,
            metric,
            value,
            step,
            action,
            url: format!("{}/#/runs/{}", self.base_url, state.run),
            time: now(),
        }
    }
}

/// Where the run stood at an event known only from its JSON: its own step if it names
/// one, else the batch's.
fn approx_at<'a>(e: &Event, state: &'a RunState) -> At<'a> {
    let step = match &e.body {
        EventBody::BatchEnd(b) => b.step,
        EventBody::MetricUpdate(m) => m.step,
        _ => None,
    };
    At {
        step: step.unwrap_or(state.step),
        status: state.status,
        state,
    }
}

/// One event through a run's rules; a run rule set or removed changes the rule set.
fn step(
    t: &mut Tracked,
    config: &AlertConfig,
    e: &Event,
    at: At<'_>,
    out: &mut Vec<(Transition, u64)>,
) {
    let id = e.id.unwrap_or(0);
    let mut found = Vec::new();
    t.eval.observe(e, at, &mut found);
    if matches!(e.body, EventBody::AlertRule(_)) {
        let own: Vec<Rule> = at
            .state
            .alerts
            .rules
            .iter()
            .map(|r| r.rule.clone())
            .collect();
        t.eval
            .set_rules(config.rules_for(t.eval.run(), &own), id, &mut found);
    }
    out.extend(found.into_iter().map(|tr| (tr, id)));
}

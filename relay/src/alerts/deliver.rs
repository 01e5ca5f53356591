//! Delivery: notices wait in a bounded queue for one dispatcher thread, which runs each
//! attempt on its own short-lived thread (a slow channel holds up no other), retries a
//! failed one after 1, 2, 4, 8 s, and records every attempt as an `alert_delivery` event
//! of the run. Nothing here ever waits on ingest, nor ingest on it.

use super::notify::{Channel, Notice, MAX_ATTEMPTS, RETRY_DELAYS};
use super::Metrics;
use crate::clock::now;
use crate::hub::Hub;
use crate::storage::Storage;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwatch_events::event::AlertDelivery;
use stepwatch_events::{Event, EventBody};

/// Notices waiting to be sent before new ones are refused (and recorded as failed).
const QUEUE: usize = 1024;
/// Attempts in flight at once.
const PARALLEL: usize = 16;
/// Time limit of one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// One notice for one channel.
pub struct Job {
    channel: Arc<Channel>,
    notice: Notice,
    attempt: u32,
    due: Instant,
    /// Taken up again after a restart: skipped if the run's history shows it went.
    resumed: bool,
}

impl Job {
    pub fn new(channel: Arc<Channel>, notice: Notice) -> Self {
        Job {
            channel,
            notice,
            attempt: 1,
            due: Instant::now(),
            resumed: false,
        }
    }

    /// A notice a stopped relay left undone, after `made` attempts, tried again after
    /// `delay` (time for a relay still delivering it to record its success).
    pub fn resumed(channel: Arc<Channel>, notice: Notice, made: u32, delay: Duration) -> Self {
        Job {
            channel,
            notice,
            attempt: made + 1,
            due: Instant::now() + delay,
            resumed: true,
        }
    }
}

enum Msg {
    New(Job),
    Done(Job, Result<(), String>),
    /// A resumed job that had been delivered meanwhile.
    Skipped,
}

/// The queue's sending end.
pub struct Deliverer {
    tx: SyncSender<Msg>,
    recorder: Recorder,
}

/// Writes delivery records.
#[derive(Clone)]
struct Recorder {
    store: Arc<dyn Storage>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
}

impl Recorder {
    fn record(&self, job: &Job, result: &Result<(), String>, last: bool) {
        let ok = result.is_ok();
        let counter = if ok {
            &self.metrics.deliveries_ok
        } else {
            &self.metrics.deliveries_failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            tracing::warn!(run = %job.notice.run, alert = %job.notice.alert_id, channel = %job.channel.name,
                attempt = job.attempt, error = %e, "alert delivery failed");
        }
        let body = EventBody::AlertDelivery(AlertDelivery {
            alert_id: Some(job.notice.alert_id.clone()),
            channel: Some(job.channel.name.clone()),
            channel_kind: Some(job.channel.kind.as_str().to_string()),
            notice: Some(job.notice.state.as_str().to_string()),
            attempt: Some(u64::from(job.attempt)),
            ok: Some(ok),
            error: result.as_ref().err().cloned(),
            last_attempt: Some(last),
            ..Default::default()
        });
        let hub = self.hub.clone();
        if let Err(e) = self
            .store
            .append(&job.notice.run, vec![Event::new(body)], now(), &|c| {
                hub.publish(c)
            })
        {
            tracing::warn!(run = %job.notice.run, error = %e, "cannot record an alert delivery");
        }
    }
}

impl Deliverer {
    pub fn start(
        store: Arc<dyn Storage>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = sync_channel(QUEUE);
        let recorder = Recorder {
            store,
            hub,
            metrics,
        };
        let back = tx.clone();
        let rec = recorder.clone();
        std::thread::Builder::new()
            .name("alert-delivery".into())
            .spawn(move || dispatch(&rx, &back, &rec))?;
        Ok(Deliverer { tx, recorder })
    }

    /// Queues a notice; a full queue refuses it and records why.
    pub fn push(&self, job: Job) {
        match self.tx.try_send(Msg::New(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(Msg::New(job)) | TrySendError::Disconnected(Msg::New(job))) => {
                self.recorder
                    .metrics
                    .queue_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.recorder
                    .record(&job, &Err("delivery queue full".into()), true);
            }
            Err(_) => {}
        }
    }
}

fn dispatch(rx: &Receiver<Msg>, back: &SyncSender<Msg>, rec: &Recorder) {
    let mut waiting: Vec<Job> = Vec::new();
    let mut running = 0usize;
    loop {
        let next = waiting.iter().map(|j| j.due).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::New(job)) => waiting.push(job),
            Ok(Msg::Skipped) => running -= 1,
            Ok(Msg::Done(mut job, result)) => {
                running -= 1;
                let last = result.is_ok() || job.attempt >= MAX_ATTEMPTS;
                rec.record(&job, &result, last);
                if !last {
                    let delay = RETRY_DELAYS
                        .get(job.attempt as usize - 1)
                        .copied()
                        .unwrap_or(Duration::from_secs(8));
                    job.attempt += 1;
                    job.due = Instant::now() + delay;
                    waiting.push(job);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while running < PARALLEL {
            let Some(i) = waiting.iter().position(|j| j.due <= now) else {
                break;
            };
            let job = waiting.swap_remove(i);
            running += 1;
            let back = back.clone();
            let store = rec.store.clone();
            let spawned = std::thread::Builder::new()
                .name("alert-send".into())
                .spawn(move || {
                    let went = job.resumed
                        && store.state(&job.notice.run).is_some_and(|s| {
                            s.alerts.delivered(&job.notice.alert_id, &job.channel.name)
                        });
                    if went {
                        let _ = back.send(Msg::Skipped);
                        return;
                    }
                    let result = job.channel.send(&job.notice, ATTEMPT_TIMEOUT);
                    let _ = back.send(Msg::Done(job, result));
                });
            if let Err(e) = spawned {
                running -= 1;
                tracing::warn!(error = %e, "cannot start an alert delivery thread");
                break;
            }
        }
    }
}

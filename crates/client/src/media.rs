//! Media from a Rust trainer (Python's `_media`): text samples and histograms are events
//! like any other; an image's bytes go up first, `PUT …/media/{sha256}` from a thread of
//! their own, and its `image` event follows through the queue once the relay holds
//! them, so the relay never sees an image it cannot show. The training thread only
//! hands the bytes over: a full hand-over queue drops the image and counts it.

use crate::sender::Outbox;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use stepwatch_events::event::{Histogram, Image};
use stepwatch_events::EventBody;

/// Images waiting for upload before more are dropped.
pub const MEDIA_QUEUE: usize = 32;
/// Tries of one upload (a relay that is away, 5xx) before the image is dropped.
const TRIES: u32 = 6;

struct Job {
    name: String,
    step: u64,
    caption: Option<String>,
    bytes: Vec<u8>,
}

/// The upload thread's end of the hand-over, started on the first image.
pub(crate) struct Uploader {
    tx: SyncSender<Job>,
    pub(crate) dropped: Arc<AtomicU64>,
    /// Images handed over and not yet uploaded (or given up on).
    pub(crate) pending: Arc<AtomicU64>,
}

impl Uploader {
    pub(crate) fn start(base: &str, run: &str, token: Option<String>, outbox: Arc<Outbox>) -> Self {
        let (tx, rx) = sync_channel(MEDIA_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(AtomicU64::new(0));
        let (d, p) = (dropped.clone(), pending.clone());
        let endpoint = format!("{base}/api/runs/{run}/media/");
        let _ = std::thread::Builder::new()
            .name("stepwatch-media".into())
            .spawn(move || upload_loop(&rx, &endpoint, token.as_deref(), &outbox, &d, &p));
        Uploader {
            tx,
            dropped,
            pending,
        }
    }

    pub(crate) fn send(&self, name: &str, step: u64, bytes: Vec<u8>, caption: Option<&str>) {
        let job = Job {
            name: name.to_string(),
            step,
            caption: caption.map(str::to_string),
            bytes,
        };
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(job) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn upload_loop(
    rx: &Receiver<Job>,
    endpoint: &str,
    token: Option<&str>,
    outbox: &Outbox,
    dropped: &AtomicU64,
    pending: &AtomicU64,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    while let Ok(job) = rx.recv() {
        let sha = sha256_hex(&job.bytes);
        let mut wait = Duration::from_millis(200);
        let mut sent = false;
        for _ in 0..TRIES {
            let mut req = agent.put(&format!("{endpoint}{sha}"));
            if let Some(t) = token {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match req.send_bytes(&job.bytes) {
                Ok(_) => {
                    sent = true;
                    break;
                }
                // Refused (not an image, over a limit): trying again cannot help.
                Err(ureq::Error::Status(code, resp))
                    if (400..500).contains(&code) && code != 429 =>
                {
                    let why = resp.into_string().unwrap_or_default();
                    outbox.emit(EventBody::Log(stepwatch_events::event::Log {
                        level: Some("warning".into()),
                        message: Some(format!("image {:?} not stored: {code} {why}", job.name)),
                        logger: Some("stepwatch".into()),
                        ..Default::default()
                    }));
                    break;
                }
                Err(_) => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        if sent {
            outbox.emit(EventBody::Image(Image {
                name: Some(job.name),
                step: Some(job.step),
                caption: job.caption,
                media: Some(sha),
                ..Default::default()
            }));
        } else {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
        pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `values` binned into `bins` equal bins between their lowest and highest finite value
/// (non-finite values left out and counted in `nonfinite`); `None` when no value is
/// finite. At most [`stepwatch_events::media::MAX_BINS`] bins.
pub fn histogram(name: &str, step: u64, values: &[f64], bins: usize) -> Option<Histogram> {
    let bins = bins.clamp(1, stepwatch_events::media::MAX_BINS);
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (lo, hi, n, sum) = finite.fold(
        (f64::INFINITY, f64::NEG_INFINITY, 0u64, 0.0),
        |(lo, hi, n, s), v| (lo.min(v), hi.max(v), n + 1, s + v),
    );
    if n == 0 {
        return None;
    }
    let (a, b) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let width = (b - a) / bins as f64;
    let mut counts = vec![0.0; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        let i = (((v - a) / width) as usize).min(bins - 1);
        counts[i] += 1.0;
    }
    let edges = (0..=bins).map(|i| a + width * i as f64).collect();
    let mut extra = serde_json::Map::new();
    let bad = values.len() as u64 - n;
    if bad > 0 {
        extra.insert("nonfinite".into(), bad.into());
    }
    Some(Histogram {
        name: Some(name.to_string()),
        step: Some(step),
        edges: Some(edges),
        counts: Some(counts),
        min: Some(lo),
        max: Some(hi),
        sum: Some(sum),
        count: Some(n as f64),
        extra,
        ..Default::default()
    })
}

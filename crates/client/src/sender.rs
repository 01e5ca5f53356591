//! Delivery: the bounded in-memory queue [`Client::emit`](crate::Client::emit) writes to,
//! and the background thread that sends it to the relay in NDJSON batches, retrying with
//! backoff and spooling to disk ([`crate::spool`]) while the relay is unreachable.
//!
//! A full queue makes room by dropping its oldest event that is not part of the run's
//! lifecycle ([`crate::spool::PROTECTED`]: start, end, checkpoints, errors, command
//! answers), the rule the spool follows too; a lifecycle event is never dropped.

use crate::spool::{self, Spool};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use stepwatch_events::event::Log;
use stepwatch_events::{Event, EventBody};

/// Most events sent in one request.
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// How long the sender waits to fill a batch.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(20);
/// Backoff bounds while the relay is unreachable.
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While the relay is unreachable, queued events move to the spool this often.
pub const SPILL_EVERY: Duration = Duration::from_millis(200);

pub(crate) fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub(crate) fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    d.mul_f64(0.5 + f64::from(nanos % 1000) / 1000.0)
}

/// Whether a full queue (or spool) may drop this event to make room.
pub(crate) fn droppable(e: &Event) -> bool {
    !spool::PROTECTED.contains(&e.name())
}

enum Msg {
    Event(Box<Event>),
    Flush(SyncSender<()>),
    Close,
}

/// Counters shared with the sender thread.
#[derive(Default)]
pub(crate) struct Counters {
    pub dropped: AtomicU64,
    pub spool_dropped: AtomicU64,
    pub sent: AtomicU64,
    pub rejected: AtomicU64,
}

#[derive(Default)]
struct Inner {
    msgs: VecDeque<Msg>,
    /// Events in `msgs`, and flush / close marks.
    events: usize,
    marks: usize,
    /// The sender thread waits for a first message: an emit wakes it.
    idle: bool,
}

/// The bounded queue between the emitting threads and the sender thread.
pub(crate) struct Queue {
    inner: Mutex<Inner>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    fn new(capacity: usize) -> Queue {
        Queue {
            inner: Mutex::new(Inner::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues one event; when full, drops the oldest droppable one (or this one, if it
    /// is droppable and nothing queued is). Returns whether an event was dropped.
    fn push(&self, e: Event) -> bool {
        let mut q = self.lock();
        let mut dropped = false;
        if q.events >= self.capacity {
            let oldest = q
                .msgs
                .iter()
                .position(|m| matches!(m, Msg::Event(e) if droppable(e)));
            match oldest {
                Some(i) => {
                    q.msgs.remove(i);
                    q.events -= 1;
                    dropped = true;
                }
                None if droppable(&e) => return true,
                None => {} // a lifecycle event is kept, beyond the cap
            }
        }
        q.msgs.push_back(Msg::Event(Box::new(e)));
        q.events += 1;
        if q.idle || q.events == DEFAULT_MAX_BATCH {
            self.ready.notify_one();
        }
        dropped
    }

    fn mark(&self, m: Msg) {
        let mut q = self.lock();
        q.msgs.push_back(m);
        q.marks += 1;
        self.ready.notify_one();
    }

    /// Moves up to `max` events (and the marks among them) into `into` (empty), in
    /// order: a buffer swap when they all fit, so the emitting threads wait on no more
    /// than that (the events are unpacked after the lock is let go).
    fn grab(q: &mut Inner, max: usize, into: &mut VecDeque<Msg>) {
        if q.events <= max {
            std::mem::swap(&mut q.msgs, into);
            q.events = 0;
            q.marks = 0;
            return;
        }
        let (mut n, mut events) = (0, 0);
        for m in &q.msgs {
            if events == max {
                break;
            }
            events += usize::from(matches!(m, Msg::Event(_)));
            n += 1;
        }
        q.events -= events;
        q.marks -= n - events;
        into.extend(q.msgs.drain(..n));
    }
}

/// Where a client's events go: stamps each with the client's `src` and the next `seq`,
/// and queues it for the sender thread. Shared by the training and command threads.
pub(crate) struct Outbox {
    queue: Arc<Queue>,
    pub counters: Arc<Counters>,
    pub src: String,
    seq: AtomicU64,
    /// In a distributed run: this process's rank (see `crate::world`).
    pub rank: Option<u64>,
}

impl Outbox {
    /// Queues one event; never blocks, never fails (a full queue drops and counts). In a
    /// distributed run the rank's own events are tagged with it, and a rank other than 0
    /// sends only those.
    pub fn emit(&self, mut body: EventBody) {
        if let Some(r) = self.rank {
            let own = match &mut body {
                EventBody::System(b) => Some(&mut b.rank),
                EventBody::Log(b) => Some(&mut b.rank),
                EventBody::ErrorOccurred(b) => Some(&mut b.rank),
                EventBody::CommandAck(b) => Some(&mut b.rank),
                EventBody::Rank(b) => Some(&mut b.rank),
                _ => None,
            };
            match own {
                Some(slot) => *slot = Some(r),
                None if r != 0 => return, // rank 0 reports the training
                None => {}
            }
        }
        let mut e = Event::new(body);
        e.time = Some(now());
        e.src = Some(self.src.clone());
        e.seq = Some(self.seq.fetch_add(1, Ordering::Relaxed) + 1);
        if self.queue.push(e) {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits up to `timeout` until everything emitted so far is acknowledged.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
        self.queue.mark(Msg::Flush(done_tx));
        done_rx.recv_timeout(timeout).is_ok()
    }

    /// Tells the sender thread to spill what is left and end.
    pub fn close(&self) {
        self.queue.mark(Msg::Close);
    }
}

/// What [`start`] needs to know.
pub(crate) struct Setup<'a> {
    pub base: &'a str,
    pub run: &'a str,
    pub src: String,
    pub token: Option<String>,
    pub capacity: usize,
    pub spool_dir: Option<&'a std::path::Path>,
    pub spool_max_bytes: u64,
    pub rank: Option<u64>,
}

/// Starts the sender thread; returns the outbox feeding it and the thread.
pub(crate) fn start(s: Setup<'_>) -> (Arc<Outbox>, Option<std::thread::JoinHandle<()>>) {
    let queue = Arc::new(Queue::new(s.capacity));
    let counters = Arc::new(Counters::default());
    let mut sender = Sender {
        agent: ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build(),
        endpoint: format!("{}/api/runs/{}/events", s.base, s.run),
        token: s.token,
        src: s.src.clone(),
        counters: counters.clone(),
        queue: queue.clone(),
        older: Vec::new(),
        spool: None,
        reported: 0,
        waiters: Vec::new(),
        closing: false,
        taken: VecDeque::new(),
    };
    if let Some(dir) = s.spool_dir {
        sender.older = spool::files(dir, s.run)
            .into_iter()
            .map(Spool::existing)
            .collect();
        let file = format!("{:.6}-{}.ndjson", now(), s.src);
        sender.spool = Some(Spool::new(dir.join(s.run).join(file), s.spool_max_bytes));
    }
    let thread = std::thread::Builder::new()
        .name(format!("stepwatch-sender-{}", s.run))
        .spawn(move || sender.run())
        .ok();
    let outbox = Arc::new(Outbox {
        queue,
        counters,
        src: s.src,
        seq: AtomicU64::new(0),
        rank: s.rank,
    });
    (outbox, thread)
}

enum Outcome {
    Sent,
    /// The relay named one bad event: drop it, send the rest again.
    BadEvent(usize),
    Rejected,
    Retry,
}

/// The sender thread's state.
struct Sender {
    agent: ureq::Agent,
    endpoint: String,
    token: Option<String>,
    src: String,
    counters: Arc<Counters>,
    queue: Arc<Queue>,
    /// Spool files earlier processes left for this run, sent first.
    older: Vec<Spool>,
    /// This sender's spool (none when spooling is off).
    spool: Option<Spool>,
    /// Spool drops already reported to the relay.
    reported: u64,
    waiters: Vec<SyncSender<()>>,
    closing: bool,
    /// What was last taken from the queue, unpacked outside its lock (its buffer is
    /// swapped back in, so the steady state allocates nothing).
    taken: VecDeque<Msg>,
}

impl Sender {
    fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            let delivered = match self.send_next() {
                Some(ok) => ok,
                None if self.closing => return,
                None => continue,
            };
            if delivered {
                backoff = MIN_BACKOFF;
                continue;
            }
            if self.closing {
                self.spill();
                self.settle();
                return;
            }
            // Relay unreachable: wait out the backoff, moving the queue to disk meanwhile.
            let until = Instant::now() + jitter(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
            while Instant::now() < until && !self.closing {
                std::thread::sleep(
                    SPILL_EVERY.min(until.saturating_duration_since(Instant::now())),
                );
                self.spill();
            }
            if self.closing {
                self.settle();
                return;
            }
        }
    }

    /// One delivery attempt, from the spool first: `Some(delivered)`, or `None` when
    /// there was nothing to send.
    fn send_next(&mut self) -> Option<bool> {
        if let Some(s) = self.next_spool() {
            let (mut events, pos) = s.read(DEFAULT_MAX_BATCH);
            if events.is_empty() {
                // only torn or invalid lines left: skip to the end
                s.advance(u64::MAX);
                self.older.retain(Spool::pending);
                return None;
            }
            let ok = self.post_all(&mut events);
            if ok {
                if let Some(s) = self.next_spool() {
                    s.advance(pos);
                }
                self.older.retain(Spool::pending);
            }
            return Some(ok);
        }
        self.report_drops();
        for w in self.waiters.drain(..) {
            let _ = w.try_send(());
        }
        if self.closing {
            return None;
        }
        let mut batch = self.gather();
        if batch.is_empty() {
            return None;
        }
        let ok = self.post_all(&mut batch);
        if !ok && !self.spool_batch(&batch) {
            // No spool: hold the batch in memory and retry it (queue backs up).
            self.retry_in_memory(batch);
            return None;
        }
        Some(ok)
    }

    /// The spool to send from next: earlier processes' files, then our own.
    fn next_spool(&mut self) -> Option<&mut Spool> {
        if let Some(i) = self.older.iter().position(Spool::pending) {
            return self.older.get_mut(i);
        }
        self.spool.as_mut().filter(|s| s.pending())
    }

    /// Unpacks what [`Queue::grab`] took: events into `batch`, flush waiters and the
    /// close noted.
    fn unpack(&mut self, batch: &mut Vec<Event>) {
        while let Some(m) = self.taken.pop_front() {
            match m {
                Msg::Event(e) => batch.push(*e),
                Msg::Flush(w) => self.waiters.push(w),
                Msg::Close => self.closing = true,
            }
        }
    }

    /// Blocks for the first message, then lingers briefly to fill a batch (a flush or
    /// close ends the wait).
    fn gather(&mut self) -> Vec<Event> {
        let queue = self.queue.clone();
        {
            let mut q = queue.lock();
            while q.msgs.is_empty() {
                q.idle = true;
                q = queue.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.idle = false;
            let linger_until = Instant::now() + DEFAULT_LINGER;
            loop {
                let left = linger_until.saturating_duration_since(Instant::now());
                if q.events >= DEFAULT_MAX_BATCH || q.marks > 0 || left.is_zero() {
                    break;
                }
                q = queue
                    .ready
                    .wait_timeout(q, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            Queue::grab(&mut q, DEFAULT_MAX_BATCH, &mut self.taken);
        }
        let mut batch = Vec::new();
        self.unpack(&mut batch);
        batch
    }

    /// Moves everything queued now into the spool.
    fn spill(&mut self) {
        let queue = self.queue.clone();
        loop {
            {
                let mut q = queue.lock();
                if q.msgs.is_empty() {
                    return;
                }
                Queue::grab(&mut q, DEFAULT_MAX_BATCH, &mut self.taken);
            }
            let mut batch = Vec::new();
            self.unpack(&mut batch);
            self.spool_batch(&batch);
        }
    }

    fn spool_batch(&mut self, batch: &[Event]) -> bool {
        let Some(s) = self.spool.as_mut() else {
            return false;
        };
        let before = s.dropped;
        let ok = s.append(batch).is_ok();
        self.counters
            .spool_dropped
            .fetch_add(s.dropped - before, Ordering::Relaxed);
        ok
    }

    fn settle(&mut self) {
        if let Some(s) = self.spool.as_mut() {
            s.settle();
        }
    }

    /// Without a spool: retries one batch with backoff until it is taken or closing.
    fn retry_in_memory(&mut self, mut batch: Vec<Event>) {
        let mut backoff = MIN_BACKOFF;
        while !self.post_all(&mut batch) {
            std::thread::sleep(jitter(backoff));
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Tells the relay, once the spool is empty again, how many events it dropped.
    fn report_drops(&mut self) {
        let Some(s) = self.spool.as_ref() else { return };
        if s.dropped <= self.reported {
            return;
        }
        self.reported = s.dropped;
        let mut fields = serde_json::Map::new();
        fields.insert("dropped_events".into(), s.dropped.into());
        fields.insert("dropped_batch_end".into(), s.dropped_batch_end.into());
        let mut e = Event::new(EventBody::Log(Log {
            level: Some("warning".into()),
            logger: Some("stepwatch".into()),
            message: Some(format!(
                "stepwatch: the relay was unreachable and the spool was full: {} events \
                 dropped ({} of them batch_end)",
                s.dropped, s.dropped_batch_end
            )),
            extra: fields,
            ..Default::default()
        }));
        e.time = Some(now());
        let _ = self.post_all(&mut vec![e]);
    }

    /// Sends until the relay took or refused every event (true), or is unreachable
    /// (false). Only events stamped with this sender's `src` count as sent.
    fn post_all(&mut self, batch: &mut Vec<Event>) -> bool {
        while !batch.is_empty() {
            match post(&self.agent, &self.endpoint, self.token.as_deref(), batch) {
                Outcome::Sent => {
                    let own = batch
                        .iter()
                        .filter(|e| e.src.as_deref() == Some(self.src.as_str()))
                        .count();
                    self.counters.sent.fetch_add(own as u64, Ordering::Relaxed);
                    return true;
                }
                Outcome::BadEvent(i) => {
                    self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    batch.remove(i);
                }
                Outcome::Rejected => {
                    self.counters
                        .rejected
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    return true;
                }
                Outcome::Retry => return false,
            }
        }
        true
    }
}

fn post(agent: &ureq::Agent, endpoint: &str, token: Option<&str>, batch: &[Event]) -> Outcome {
    let mut body = String::new();
    for e in batch {
        body.push_str(&e.to_json());
        body.push('\n');
    }
    let mut req = agent
        .post(endpoint)
        .set("Content-Type", "application/x-ndjson");
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    match req.send_string(&body) {
        Ok(_) => Outcome::Sent,
        Err(ureq::Error::Status(400, resp)) => resp
            .into_json::<serde_json::Value>()
            .ok()
            .and_then(|v| v["index"].as_u64())
            .map(|i| i as usize)
            .filter(|i| *i < batch.len())
            .map_or(Outcome::Rejected, Outcome::BadEvent),
        // Credentials missing or refused: keep the events (spool) and retry, so fixing
        // STEPWATCH_TOKEN loses nothing.
        Err(ureq::Error::Status(401 | 403, _)) => Outcome::Retry,
        Err(ureq::Error::Status(code, _)) if (400..500).contains(&code) && code != 429 => {
            Outcome::Rejected
        }
        Err(_) => Outcome::Retry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stepwatch_events::event::{BatchEnd, TrainingStart};

    fn batch_end(i: u64) -> Event {
        Event::new(EventBody::BatchEnd(BatchEnd {
            batch_idx: Some(i),
            ..Default::default()
        }))
    }

    fn names_and_idx(q: &Queue) -> Vec<String> {
        q.lock()
            .msgs
            .iter()
            .filter_map(|m| match m {
                Msg::Event(e) => Some(match &e.body {
                    EventBody::BatchEnd(b) => format!("b{}", b.batch_idx.unwrap_or(0)),
                    other => other.name().to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_droppable_event_and_keeps_the_lifecycle() {
        let q = Queue::new(3);
        assert!(!q.push(Event::new(EventBody::TrainingStart(
            TrainingStart::default()
        ))));
        assert!(!q.push(batch_end(1)));
        assert!(!q.push(batch_end(2)));
        assert!(q.push(batch_end(3)), "no drop counted");
        assert_eq!(names_and_idx(&q), ["training_start", "b2", "b3"]);
        assert!(q.push(Event::new(EventBody::TrainingEnd(Default::default()))));
        assert_eq!(names_and_idx(&q), ["training_start", "b3", "training_end"]);
        assert!(q.push(batch_end(4)));
        assert_eq!(names_and_idx(&q), ["training_start", "training_end", "b4"]);
    }

    #[test]
    fn grab_takes_at_most_max_events_in_order_with_the_marks_among_them() {
        let q = Queue::new(100);
        for i in 0..3 {
            q.push(batch_end(i));
        }
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        q.mark(Msg::Flush(tx));
        for i in 3..5 {
            q.push(batch_end(i));
        }
        let mut taken = VecDeque::new();
        {
            let mut inner = q.lock();
            Queue::grab(&mut inner, 4, &mut taken);
            assert_eq!((inner.events, inner.marks), (1, 0));
        }
        let kinds: Vec<String> = taken
            .iter()
            .map(|m| match m {
                Msg::Event(e) => match &e.body {
                    EventBody::BatchEnd(b) => format!("b{}", b.batch_idx.unwrap_or(0)),
                    _ => "other".into(),
                },
                Msg::Flush(_) => "flush".into(),
                Msg::Close => "close".into(),
            })
            .collect();
        assert_eq!(kinds, ["b0", "b1", "b2", "flush", "b3"]);
        assert_eq!(names_and_idx(&q), ["b4"]);
        let mut rest = VecDeque::new();
        Queue::grab(&mut q.lock(), 4, &mut rest);
        assert_eq!(rest.len(), 1);
        assert!(q.lock().msgs.is_empty());
    }

    #[test]
    fn a_queue_of_lifecycle_events_drops_a_new_droppable_one_and_keeps_a_new_lifecycle_one() {
        let q = Queue::new(1);
        assert!(!q.push(Event::new(EventBody::TrainingStart(
            TrainingStart::default()
        ))));
        assert!(q.push(batch_end(1)));
        assert_eq!(names_and_idx(&q), ["training_start"]);
        assert!(!q.push(Event::new(EventBody::TrainingEnd(Default::default()))));
        assert_eq!(names_and_idx(&q), ["training_start", "training_end"]);
    }
}

//! Cross-relay fan-out: each relay LISTENs on the `stepwatch` channel, and on another
//! relay's commit (or every [`POLL_EVERY`], or after a reconnect) reads the events after
//! the newest id it delivered and hands them to its subscribers ([`Fanout`]) in id
//! order, each once. Runs deleted or re-created elsewhere are forgotten here. Work for
//! others that rides on the listening thread (shared sessions) comes in as a
//! [`ListenerJob`].

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stepwatch_events::RunState;

use super::chunks::PgChunks;
use super::pool::{prepared, Conn};
use super::schema::describe;
use super::{Known, PgStore};
use crate::storage::chunks;
use crate::storage::error::StoreError;
use crate::storage::peers::{Fanout, ListenerJob};
use crate::storage::types::{Committed, StoredEvent};

/// The channel relays notify each other on.
const CHANNEL: &str = "stepwatch";
/// How often each relay compares every run's newest id with what it has delivered,
/// in case a notification was lost (the listening connection dropped, say).
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Events read per query when catching up.
const PAGE: usize = 5000;

/// What a notification says when another relay's data besides runs changed (its
/// [`ListenerJob`]'s, the sessions; run ids cannot contain `!`).
pub(super) const SESSIONS: &str = "!sessions";

/// Connects the store to this relay's subscribers and starts listening for the other
/// relays' commits (once; later calls do nothing). `job` rides on the listening thread.
pub fn listen(store: &Arc<PgStore>, fanout: Arc<dyn Fanout>, job: Option<Arc<dyn ListenerJob>>) {
    if store.fanout.set(fanout).is_ok() {
        store.spawn_listener(job);
    }
}

impl PgStore {
    /// Delivers the run's events up to `upto` to this relay's subscribers, in id order,
    /// each once: `own` (a batch this relay just committed) when it continues what was
    /// delivered, the rest read from the events table. `publish` gets each slice.
    pub(super) fn deliver(
        &self,
        conn: &mut Conn,
        run: &str,
        upto: u64,
        own: &[Arc<StoredEvent>],
        state: &Arc<RunState>,
        publish: &dyn Fn(&Committed),
    ) -> Result<(), StoreError> {
        // One lock per run: a slow read for one run does not hold up the others.
        let mark = self
            .shared
            .delivered
            .lock()
            .map_err(|_| StoreError::poisoned())?
            .entry(run.to_string())
            .or_default()
            .clone();
        let mut delivered = mark.lock().map_err(|_| StoreError::poisoned())?;
        let done = *delivered;
        if upto <= done {
            return Ok(());
        }
        let listening = self.fanout.get().is_none_or(|f| f.has_subscribers(run));
        let first_own = own.first().map_or(u64::MAX, |e| e.id);
        let mut events: Vec<Arc<StoredEvent>> = Vec::new();
        if listening {
            // What other relays stored between what was delivered and this batch.
            let mut after = done;
            let until = first_own.min(upto + 1);
            while after + 1 < until {
                let mut db = PgChunks {
                    db: &mut conn.client,
                    cache: &mut conn.cache,
                };
                let want = ((until - after - 1) as usize).min(PAGE);
                let page = chunks::read_after(&mut db, run, after, want, None)?;
                let before_until = page.iter().take_while(|e| e.id < until).count();
                let Some(last) = page[..before_until].last().map(|e| e.id) else {
                    break;
                };
                events.extend(page.into_iter().take(before_until).map(Arc::new));
                after = last;
            }
        }
        // This relay's own events always go to the hub (no read needed): its alert engine
        // sees every local commit, followed or not.
        events.extend(own.iter().filter(|e| e.id > done).cloned());
        *delivered = upto;
        let batch = Committed {
            run: run.to_string(),
            accepted: events.len(),
            duplicates: 0,
            last_id: upto,
            events,
            state: state.clone(),
            parsed: None,
        };
        if batch.events.is_empty() {
            if let Some(f) = self.fanout.get() {
                f.publish_summary(state);
            }
        } else {
            publish(&batch);
        }
        Ok(())
    }

    /// Brings this relay up to date with a run another relay changed (`None`: it was
    /// deleted, or is not there).
    pub(super) fn catch_up(&self, conn: &mut Conn, run: &str) -> Result<(), StoreError> {
        let s = prepared(
            &mut conn.cache,
            &mut conn.client,
            "SELECT last_id, state, gen FROM runs WHERE run = $1",
        )?;
        let row = conn.client.query_opt(&s, &[&run])?;
        let Some(row) = row else {
            self.forget_run(run);
            return Ok(());
        };
        let json: String = row.get(1);
        if json.is_empty() {
            return Ok(());
        }
        let gen: i64 = row.get(2);
        let state: RunState = serde_json::from_str(&json)
            .map_err(|e| StoreError::Corrupt(format!("run {run}: {e}")))?;
        let state = Arc::new(state);
        self.forget_other_generation(run, gen);
        self.remember(run, gen, &state)?;
        let fanout = self.fanout.get().cloned();
        self.deliver(conn, run, state.last_id, &[], &state, &|c| {
            if let Some(f) = &fanout {
                f.publish(c);
            }
        })
    }

    /// Keeps `state` as the run's, unless this relay already knows a newer one of the
    /// same generation.
    pub(super) fn remember(
        &self,
        run: &str,
        gen: i64,
        state: &Arc<RunState>,
    ) -> Result<(), StoreError> {
        let mut states = self
            .shared
            .states
            .write()
            .map_err(|_| StoreError::poisoned())?;
        let stale = states
            .get(run)
            .is_some_and(|k| k.gen == gen && k.state.last_id >= state.last_id);
        if !stale {
            states.insert(
                run.to_string(),
                Known {
                    gen,
                    state: state.clone(),
                },
            );
        }
        Ok(())
    }

    /// When the run this relay knows is an earlier incarnation (deleted, then written
    /// again elsewhere), forgets it: its state, delivery mark and series index.
    pub(super) fn forget_other_generation(&self, run: &str, gen: i64) {
        let other = self
            .shared
            .states
            .read()
            .is_ok_and(|s| s.get(run).is_some_and(|k| k.gen != gen));
        if other {
            self.forget_run(run);
        }
    }

    /// A run deleted elsewhere: drop it here too and tell subscribers.
    pub(super) fn forget_run(&self, run: &str) {
        let known = self
            .shared
            .states
            .write()
            .map(|mut s| s.remove(run).is_some())
            .unwrap_or(false);
        if let Ok(mut d) = self.shared.delivered.lock() {
            d.remove(run);
        }
        if let Ok(mut index) = self.index_of(run).lock() {
            index.forget(run);
        }
        if known {
            if let Some(f) = self.fanout.get() {
                f.publish_deleted(run);
            }
        }
    }

    /// Compares every run's newest id with what this relay knows, catching up.
    fn poll(&self, job: Option<&dyn ListenerJob>) -> Result<(), StoreError> {
        if let Some(job) = job {
            job.on_poll()?;
        }
        // What this relay knows, taken before reading the table: a run this relay
        // creates meanwhile is then neither here nor forgotten below.
        let known: HashMap<String, (i64, u64)> = self
            .shared
            .states
            .read()
            .map_err(|_| StoreError::poisoned())?
            .iter()
            .map(|(k, v)| (k.clone(), (v.gen, v.state.last_id)))
            .collect();
        let delivered: HashMap<String, u64> = self
            .shared
            .delivered
            .lock()
            .map_err(|_| StoreError::poisoned())?
            .iter()
            // A delivery under way (its lock held) is not behind: it is catching up now.
            .map(|(k, v)| (k.clone(), v.try_lock().map_or(u64::MAX, |d| *d)))
            .collect();
        self.pool.with_conn(|conn| {
            let rows = conn
                .client
                .query("SELECT run, last_id, gen FROM runs WHERE state <> ''", &[])?;
            let mut present = std::collections::HashSet::new();
            for row in &rows {
                let run: String = row.get(0);
                let last = row.get::<_, i64>(1) as u64;
                let gen: i64 = row.get(2);
                // Behind, another incarnation, or a delivery that failed earlier.
                let behind = known.get(&run).is_none_or(|(g, k)| *g != gen || *k < last)
                    || delivered.get(&run).is_none_or(|d| *d < last);
                if behind {
                    self.catch_up(conn, &run)?;
                }
                present.insert(run);
            }
            for run in known.keys().filter(|r| !present.contains(*r)) {
                self.forget_run(run);
            }
            Ok(())
        })
    }

    /// Listens for other relays' commits until the store is dropped; reconnects after
    /// a failure and then catches up from the tables.
    fn spawn_listener(self: &Arc<Self>, job: Option<Arc<dyn ListenerJob>>) {
        let weak = Arc::downgrade(self);
        let stop = self.stop.clone();
        let (config, tls) = self.pool.config();
        let (config, tls) = (config.clone(), tls.clone());
        let _ = std::thread::Builder::new()
            .name("stepwatch-pg-listen".into())
            .spawn(move || {
                let mut backoff = Duration::from_millis(200);
                let mut failing = false;
                while !stop.load(Ordering::Relaxed) {
                    let mut client = match config.connect(tls.clone()) {
                        Ok(c) => c,
                        Err(e) => {
                            if !failing {
                                tracing::warn!(error = %describe(&e), "database unreachable; retrying");
                                failing = true;
                            }
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            continue;
                        }
                    };
                    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                        tracing::warn!(error = %describe(&e), "LISTEN failed; retrying");
                        std::thread::sleep(backoff);
                        continue;
                    }
                    if failing {
                        tracing::info!("database reachable again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                    let Some(store) = weak.upgrade() else { return };
                    if let Err(e) = store.listen_on(&mut client, &stop, job.as_deref()) {
                        tracing::warn!(error = %e, "lost the database's notifications; reconnecting");
                    }
                }
            });
    }

    /// Handles notifications on `client` until it fails or the store stops.
    fn listen_on(
        &self,
        client: &mut Client,
        stop: &AtomicBool,
        job: Option<&dyn ListenerJob>,
    ) -> Result<(), StoreError> {
        // Whatever happened while not listening.
        self.poll(job)?;
        let mut polled = Instant::now();
        let mut sized = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let mut changed: HashMap<String, ()> = HashMap::new();
            let mut resync = false;
            let mut take = |n: postgres::Notification| {
                let mut parts = n.payload().splitn(2, ' ');
                let node = parts.next().unwrap_or_default();
                let run = parts.next().unwrap_or_default();
                if node == self.node {
                    return;
                }
                if run == "*" || run == SESSIONS || run.is_empty() {
                    resync = true;
                } else {
                    changed.insert(run.to_string(), ());
                }
            };
            let first = client
                .notifications()
                .timeout_iter(Duration::from_millis(250))
                .next()?;
            if let Some(n) = first {
                take(n);
                let mut notes = client.notifications();
                let mut rest = notes.iter();
                while let Some(n) = rest.next()? {
                    take(n);
                }
            }
            if client.is_closed() {
                return Err(StoreError::database("listening connection closed"));
            }
            if !changed.is_empty() {
                self.pool.with_conn(|conn| {
                    for run in changed.keys() {
                        self.catch_up(conn, run)?;
                    }
                    Ok(())
                })?;
            }
            if let Some(job) = job {
                job.on_wake();
            }
            if resync || polled.elapsed() >= POLL_EVERY {
                self.poll(job)?;
                polled = Instant::now();
            }
            if sized.elapsed() >= Duration::from_secs(10) {
                self.refresh_bytes();
                if let Some(job) = job {
                    job.on_sweep();
                }
                sized = Instant::now();
            }
        }
        Ok(())
    }
}

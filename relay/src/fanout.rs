//! Cross-relay fan-out's last hop: what a shared storage backend learns of other
//! relays' commits reaches this relay's [`Hub`] through the storage's
//! [`Fanout`] trait, which the hub implements here (storage never sees the hub).

use crate::hub::Hub;
use crate::storage::peers::Fanout;
use crate::storage::types::Committed;
use stepwatch_events::RunState;

impl Fanout for Hub {
    fn has_subscribers(&self, run: &str) -> bool {
        // The alert engine follows the runs it watches through other relays' commits too.
        Hub::has_subscribers(self, run) || self.watched(run)
    }

    fn publish(&self, c: &Committed) {
        Hub::publish(self, c);
    }

    fn publish_summary(&self, state: &RunState) {
        Hub::publish_summary(self, state);
    }

    fn publish_deleted(&self, run: &str) {
        Hub::publish_deleted(self, run);
    }
}

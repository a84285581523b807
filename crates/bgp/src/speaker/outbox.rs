//! The bounded route-event channel from the runtime to the consumer, and what happens when the
//! consumer falls behind.
//!
//! At most [`ROUTE_EVENTS`] events wait in the channel. When it is full the runtime never
//! waits (it must keep serving sessions and timers): the event goes into a table of pending
//! changes instead, one entry per prefix, the newest winning, since a later best path or
//! withdrawal of a prefix supersedes an earlier one. `Synced` waits behind every pending prefix.
//! As soon as the channel has room again the table drains into it, oldest prefix first. Nothing
//! is lost: the consumer ends with the same best path per prefix as if it had seen every
//! event, and the table never holds more entries than the speaker has prefixes (the same idea
//! as the node agent's route feed, which reconciles from the table of best paths on overflow).

use std::collections::BTreeMap;

use ipnet::IpNet;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::core::RouteEvent;

/// How many route events may wait for the consumer before they are coalesced per prefix.
pub const ROUTE_EVENTS: usize = 4096;

/// The runtime's end of the route-event channel.
pub(super) struct Outbox {
    tx: mpsc::Sender<RouteEvent>,
    /// Changes that did not fit, newest per prefix.
    pending: BTreeMap<IpNet, RouteEvent>,
    /// A `Synced` that did not fit (sent after every pending prefix).
    synced: bool,
    /// The consumer is gone: events are dropped.
    closed: bool,
}

fn prefix_of(ev: &RouteEvent) -> Option<IpNet> {
    match ev {
        RouteEvent::Best { prefix, .. } | RouteEvent::Withdrawn { prefix } => Some(*prefix),
        RouteEvent::Synced => None,
    }
}

impl Outbox {
    pub(super) fn new(tx: mpsc::Sender<RouteEvent>) -> Outbox {
        Outbox {
            tx,
            pending: BTreeMap::new(),
            synced: false,
            closed: false,
        }
    }

    /// Whether changes wait for room in the channel.
    pub(super) fn has_pending(&self) -> bool {
        !self.closed && (!self.pending.is_empty() || self.synced)
    }

    /// Queues `ev` without waiting: into the channel when nothing is pending and it has
    /// room, else into the table of pending changes.
    pub(super) fn push(&mut self, ev: RouteEvent) {
        if self.closed {
            return;
        }
        if !self.has_pending() {
            match self.tx.try_send(ev) {
                Ok(()) => return,
                Err(TrySendError::Closed(_)) => {
                    self.close();
                    return;
                }
                Err(TrySendError::Full(ev)) => {
                    tracing::debug!("route events: consumer behind; coalescing per prefix");
                    self.hold(ev);
                    return;
                }
            }
        }
        self.hold(ev);
    }

    fn hold(&mut self, ev: RouteEvent) {
        match prefix_of(&ev) {
            Some(p) => {
                self.pending.insert(p, ev);
            }
            None => self.synced = true,
        }
    }

    /// Moves pending changes into the channel while it has room; `Synced` last.
    pub(super) fn flush(&mut self) {
        while let Some((p, ev)) = self.pending.pop_first() {
            match self.tx.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    self.pending.insert(p, ev);
                    return;
                }
                Err(TrySendError::Closed(_)) => {
                    self.close();
                    return;
                }
            }
        }
        if self.synced {
            match self.tx.try_send(RouteEvent::Synced) {
                Ok(()) => self.synced = false,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Closed(_)) => self.close(),
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.pending.clear();
        self.synced = false;
    }

    /// Waits until the channel has room for one event (or the consumer is gone), then
    /// flushes. Only meaningful while [`Outbox::has_pending`].
    pub(super) async fn drain(&mut self) {
        // The permit only proves there is room; it is released at once.
        let room = self.tx.reserve().await.is_ok();
        if !room {
            self.close();
            return;
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn best(p: &str, nh: &str) -> RouteEvent {
        RouteEvent::Best {
            prefix: p.parse().unwrap(),
            next_hop: nh.parse().unwrap(),
            learned_from: nh.parse().unwrap(),
            stale: false,
        }
    }

    fn withdrawn(p: &str) -> RouteEvent {
        RouteEvent::Withdrawn {
            prefix: p.parse().unwrap(),
        }
    }

    /// Applies events the way a consumer does: prefix → next hop; whether Synced came and
    /// whether it came after the last prefix change.
    fn apply(
        state: &mut BTreeMap<IpNet, IpAddr>,
        synced: &mut Option<usize>,
        seen: &mut usize,
        ev: RouteEvent,
    ) {
        *seen += 1;
        match ev {
            RouteEvent::Best {
                prefix, next_hop, ..
            } => {
                state.insert(prefix, next_hop);
            }
            RouteEvent::Withdrawn { prefix } => {
                state.remove(&prefix);
            }
            RouteEvent::Synced => *synced = Some(*seen),
        }
    }

    #[tokio::test]
    async fn overflow_coalesces_per_prefix_and_loses_no_change() {
        let (tx, mut rx) = mpsc::channel(4);
        let mut out = Outbox::new(tx);
        // The consumer reads nothing while 300 events for 100 prefixes are produced: the
        // channel holds 4, the rest is coalesced.
        let mut expected = BTreeMap::new();
        for round in 0..3u8 {
            for i in 0..100u8 {
                let p = format!("10.{i}.0.0/24");
                if round == 2 && i % 3 == 0 {
                    out.push(withdrawn(&p));
                    expected.remove(&p.parse::<IpNet>().unwrap());
                } else {
                    let nh = format!("192.168.{round}.{i}");
                    out.push(best(&p, &nh));
                    expected.insert(p.parse().unwrap(), nh.parse().unwrap());
                }
            }
        }
        out.push(RouteEvent::Synced);
        assert!(out.has_pending(), "the channel of 4 must have overflowed");
        assert!(
            out.pending.len() <= 100,
            "at most one pending entry per prefix: {}",
            out.pending.len()
        );
        // Now the consumer drains; the runtime flushes whenever there is room.
        let mut state = BTreeMap::new();
        let (mut synced, mut seen) = (None, 0usize);
        for _ in 0..10_000 {
            while let Ok(ev) = rx.try_recv() {
                apply(&mut state, &mut synced, &mut seen, ev);
            }
            if !out.has_pending() {
                break;
            }
            out.drain().await;
        }
        while let Ok(ev) = rx.try_recv() {
            apply(&mut state, &mut synced, &mut seen, ev);
        }
        assert!(!out.has_pending());
        assert_eq!(
            state, expected,
            "the consumer ends with every latest change"
        );
        assert_eq!(synced, Some(seen), "Synced comes last, after every prefix");
        // Far fewer events than produced reached the consumer: they were coalesced.
        assert!(seen < 301, "{seen} events delivered");
    }

    #[tokio::test]
    async fn without_overflow_events_pass_straight_through_in_order() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut out = Outbox::new(tx);
        out.push(best("10.0.0.0/24", "192.168.0.1"));
        out.push(withdrawn("10.0.0.0/24"));
        out.push(RouteEvent::Synced);
        assert!(!out.has_pending());
        assert_eq!(rx.recv().await, Some(best("10.0.0.0/24", "192.168.0.1")));
        assert_eq!(rx.recv().await, Some(withdrawn("10.0.0.0/24")));
        assert_eq!(rx.recv().await, Some(RouteEvent::Synced));
    }

    #[tokio::test]
    async fn a_gone_consumer_stops_the_outbox() {
        let (tx, rx) = mpsc::channel(1);
        let mut out = Outbox::new(tx);
        out.push(best("10.0.0.0/24", "192.168.0.1"));
        out.push(best("10.0.1.0/24", "192.168.0.1"));
        drop(rx);
        out.drain().await;
        assert!(!out.has_pending());
        assert!(
            out.pending.is_empty(),
            "nothing is held for a consumer that is gone"
        );
        out.push(best("10.0.2.0/24", "192.168.0.1"));
        assert!(out.pending.is_empty() && !out.has_pending());
    }
}

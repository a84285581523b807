//! A watch over a key prefix that survives disconnects and compaction.
//!
//! ```text
//!   EtcdClient::watch / list_watch
//!        │ spawns
//!        ▼
//!   watch task ──(bounded mpsc, 1024)──► KvWatchStream (the consumer's Stream)
//!     ├─ opens an etcd watch from `next` (last delivered revision + 1)
//!     ├─ on disconnect / stream end: backoff, reopen from `next`
//!     └─ on "revision compacted": re-lists the prefix, emits WatchEvent::Snapshot,
//!        and continues from the snapshot's revision + 1
//! ```
//!
//! Choice: after compaction the watcher re-lists by itself and emits a synthetic
//! [`WatchEvent::Snapshot`] rather than handing the problem to every consumer. A consumer
//! handles a snapshot by replacing its whole view of the prefix (keys not in the snapshot were
//! deleted while we could not see it). The same event starts [`EtcdClient::list_watch`].
//!
//! Dropping the stream aborts the task. The task gives up (one final error, then the stream
//! ends) only after `RetryPolicy::watch_max_failures` consecutive failures to reconnect.

use std::pin::Pin;
use std::task::{Context, Poll};

use etcd_client::{EventType, WatchOptions};
use futures::Stream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use super::{EtcdClient, KeyValue, KvError, Listing, Op, Result, convert_kv, header_revision};

/// One change under the watched prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted at `revision`; `prev` is its last value when etcd still had it.
    Delete {
        key: String,
        revision: i64,
        prev: Option<KeyValue>,
    },
    /// The complete content of the prefix at `listing.revision`. Replace your view with it:
    /// keys you knew that are not listed were deleted. Sent first by
    /// [`EtcdClient::list_watch`], and whenever the history we needed was compacted away.
    Snapshot(Listing),
}

impl WatchEvent {
    /// The store revision this event brings the consumer's view up to.
    pub fn revision(&self) -> i64 {
        match self {
            WatchEvent::Put(kv) => kv.mod_revision,
            WatchEvent::Delete { revision, .. } => *revision,
            WatchEvent::Snapshot(l) => l.revision,
        }
    }
}

/// The consumer side of a watch: a `Stream` of events, ending only after the watch gave up.
pub struct KvWatchStream {
    rx: ReceiverStream<Result<WatchEvent>>,
    task: AbortHandle,
}

impl Drop for KvWatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for KvWatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl EtcdClient {
    /// Watches every key under `prefix`, delivering events with revision >= `from_revision`
    /// (`from_revision <= 0`: changes after now). Resumes transparently after disconnects;
    /// emits [`WatchEvent::Snapshot`] if `from_revision` (or a later resume point) was compacted.
    pub fn watch(&self, prefix: &str, from_revision: i64) -> KvWatchStream {
        self.spawn_watch(prefix, Start::Revision(from_revision), true)
    }

    /// Lists `prefix` (emitted as a first [`WatchEvent::Snapshot`]) and then watches it from
    /// the listing's revision + 1: the usual way to build and maintain a view.
    pub fn list_watch(&self, prefix: &str) -> KvWatchStream {
        self.spawn_watch(prefix, Start::Snapshot, true)
    }

    /// [`EtcdClient::list_watch`] without the previous value of deleted keys
    /// ([`WatchEvent::Delete`]'s `prev` is always `None`). For a consumer that keeps its own
    /// view: asking for previous values makes etcd read the key's previous revision from its
    /// backend for every event sent to every such watcher (a range per event per watcher,
    /// seen in `etcd_debugging_mvcc_range_total`), which a cluster of agents multiplies.
    pub fn list_watch_without_prev(&self, prefix: &str) -> KvWatchStream {
        self.spawn_watch(prefix, Start::Snapshot, false)
    }

    fn spawn_watch(&self, prefix: &str, start: Start, prev: bool) -> KvWatchStream {
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(run_watch(self.clone(), prefix.to_owned(), start, prev, tx));
        KvWatchStream {
            rx: ReceiverStream::new(rx),
            task: task.abort_handle(),
        }
    }
}

enum Start {
    Revision(i64),
    Snapshot,
}

/// Why one watch connection ended.
enum Ended {
    /// The consumer dropped the stream.
    ConsumerGone,
    /// History we need is gone: re-list.
    Compacted { compact_revision: i64 },
    /// Connection lost or the server ended the stream; `established` if events could flow.
    Disconnected { established: bool, error: KvError },
}

async fn run_watch(
    client: EtcdClient,
    prefix: String,
    start: Start,
    prev: bool,
    tx: mpsc::Sender<Result<WatchEvent>>,
) {
    let policy = client.retry.clone();
    let mut need_snapshot = matches!(start, Start::Snapshot);
    let mut next = match start {
        Start::Revision(r) => r.max(0),
        Start::Snapshot => 0,
    };
    let mut failures = 0u32;
    let mut backoff = policy.initial_backoff;
    loop {
        if need_snapshot {
            match client.list(&prefix).await {
                Ok(listing) => {
                    next = listing.revision + 1;
                    need_snapshot = false;
                    debug!(
                        prefix,
                        revision = listing.revision,
                        keys = listing.kvs.len(),
                        "watch snapshot"
                    );
                    if tx.send(Ok(WatchEvent::Snapshot(listing))).await.is_err() {
                        return;
                    }
                }
                Err(error) => {
                    failures += 1;
                    if failures >= policy.watch_max_failures {
                        let _ = tx
                            .send(Err(KvError::WatchGaveUp {
                                prefix: prefix.clone(),
                                failures,
                                source: Box::new(error),
                            }))
                            .await;
                        return;
                    }
                    warn!(prefix, failures, %error, "watch re-list failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = policy.next_backoff(backoff);
                    continue;
                }
            }
        }
        match watch_once(&client, &prefix, &mut next, prev, &tx).await {
            Ended::ConsumerGone => return,
            Ended::Compacted { compact_revision } => {
                info!(
                    prefix,
                    requested = next,
                    compact_revision,
                    "watch revision compacted, re-listing"
                );
                need_snapshot = true;
                // A successful (if short) connection: not a failure.
                failures = 0;
                backoff = policy.initial_backoff;
            }
            Ended::Disconnected { established, error } => {
                if established {
                    failures = 0;
                    backoff = policy.initial_backoff;
                }
                failures += 1;
                if failures >= policy.watch_max_failures {
                    let _ = tx
                        .send(Err(KvError::WatchGaveUp {
                            prefix: prefix.clone(),
                            failures,
                            source: Box::new(error),
                        }))
                        .await;
                    return;
                }
                warn!(prefix, next, failures, %error, "watch disconnected, resuming");
                tokio::time::sleep(backoff).await;
                backoff = policy.next_backoff(backoff);
            }
        }
    }
}

/// Runs one etcd watch from `*next`, forwarding events and advancing `*next` past every
/// revision delivered, until it ends.
async fn watch_once(
    client: &EtcdClient,
    prefix: &str,
    next: &mut i64,
    prev: bool,
    tx: &mpsc::Sender<Result<WatchEvent>>,
) -> Ended {
    let mut options = WatchOptions::new().with_prefix().with_progress_notify();
    if prev {
        options = options.with_prev_key();
    }
    if *next > 0 {
        options = options.with_start_revision(*next);
    }
    let mut watch_client = client.client.watch_client();
    let opened = tokio::time::timeout(
        client.retry.request_timeout,
        watch_client.watch(prefix, Some(options)),
    )
    .await;
    let mut stream = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(source)) => {
            return Ended::Disconnected {
                established: false,
                error: KvError::Etcd {
                    op: Op::Watch,
                    key: prefix.to_owned(),
                    attempts: 1,
                    source: Box::new(source),
                },
            };
        }
        Err(_) => {
            return Ended::Disconnected {
                established: false,
                error: KvError::Timeout {
                    op: Op::Watch,
                    key: prefix.to_owned(),
                    timeout: client.retry.request_timeout,
                    attempts: 1,
                },
            };
        }
    };
    let mut established = false;
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = tx.closed() => return Ended::ConsumerGone,
        };
        let resp = match message {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                return Ended::Disconnected {
                    established,
                    error: KvError::WatchCancelled {
                        prefix: prefix.to_owned(),
                        reason: "server closed the watch stream".into(),
                    },
                };
            }
            Err(source) => {
                return Ended::Disconnected {
                    established,
                    error: KvError::Etcd {
                        op: Op::Watch,
                        key: prefix.to_owned(),
                        attempts: 1,
                        source: Box::new(source),
                    },
                };
            }
        };
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Ended::Compacted {
                    compact_revision: resp.compact_revision(),
                };
            }
            return Ended::Disconnected {
                established,
                error: KvError::WatchCancelled {
                    prefix: prefix.to_owned(),
                    reason: resp.cancel_reason().to_owned(),
                },
            };
        }
        if resp.created() {
            established = true;
            if *next == 0 {
                // Watching "from now": pin now, so a resume does not skip what happens between.
                *next = header_revision(resp.header()) + 1;
            }
        }
        if resp.events().is_empty() {
            // A progress notification: everything up to the header revision was delivered.
            // (Not a `created` response, whose header revision runs ahead of the replay.)
            if !resp.created() {
                *next = (*next).max(header_revision(resp.header()) + 1);
            }
            continue;
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let converted = match event.event_type() {
                EventType::Put => convert_kv(Op::Watch, kv).map(WatchEvent::Put),
                EventType::Delete => {
                    let prev = event
                        .prev_kv()
                        .map(|p| convert_kv(Op::Watch, p))
                        .transpose();
                    convert_kv(Op::Watch, kv).and_then(|kv| {
                        Ok(WatchEvent::Delete {
                            key: kv.key,
                            revision: kv.mod_revision,
                            prev: prev?,
                        })
                    })
                }
            };
            let revision = kv.mod_revision();
            if tx.send(converted).await.is_err() {
                return Ended::ConsumerGone;
            }
            *next = (*next).max(revision + 1);
        }
    }
}

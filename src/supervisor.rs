//! One supervisor for the node's long-running tasks: job workers, export workers, the model
//! thread, the directory watch, the audit writer and the metrics upkeep. A task that panics (or
//! returns while the node runs) is logged and replaced. At shutdown the stages stop in order —
//! workers and exporters first (each finishes its item or releases its lease), then the model
//! thread, which answers the workers' last requests, then the upkeep tasks, which write what is
//! left — each within a bounded wait.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::{AbortHandle, Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The order in which tasks stop at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Job and export workers: they hold leases.
    Work,
    /// The model thread: the workers' requests must be answered until they stop.
    Model,
    /// Book-keeping that must see everything the others did: the audit writer (its last
    /// entries), the metrics upkeep.
    Upkeep,
}

const STAGES: [Stage; 3] = [Stage::Work, Stage::Model, Stage::Upkeep];

type AsyncStart = Arc<dyn Fn(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;
type BlockingStart = Arc<dyn Fn(CancellationToken) + Send + Sync>;

#[derive(Clone)]
enum Start {
    Async(AsyncStart),
    Blocking(BlockingStart),
}

struct Role {
    name: String,
    stage: Stage,
    start: Start,
    abort: AbortHandle,
}

pub struct Supervisor {
    /// Cancelled when the node shuts down.
    shutdown: CancellationToken,
    /// One token per stage, cancelled in order by the shutdown; a task gets its stage's.
    stops: HashMap<Stage, CancellationToken>,
    tasks: JoinSet<()>,
    roles: HashMap<Id, Role>,
    /// The most a stage may take to stop; the workers' own grace for their item is shorter.
    stop_wait: Duration,
    /// Pause before a replacement starts, so that a task that fails at once does not spin.
    restart_delay: Duration,
}

impl Supervisor {
    pub fn new(shutdown: CancellationToken, stop_wait: Duration) -> Supervisor {
        Supervisor {
            shutdown,
            stops: STAGES.iter().map(|s| (*s, CancellationToken::new())).collect(),
            tasks: JoinSet::new(),
            roles: HashMap::new(),
            stop_wait,
            restart_delay: Duration::from_secs(1),
        }
    }

    /// Supervises an async task; `start` makes it (again, after a panic) with its stop token.
    pub fn spawn<F, Fut>(&mut self, name: impl Into<String>, stage: Stage, start: F)
    where
        F: Fn(CancellationToken) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start: AsyncStart = Arc::new(move |stop| Box::pin(start(stop)));
        self.start(name.into(), stage, Start::Async(start), Duration::ZERO);
    }

    /// Supervises a blocking task (on the blocking pool); it must return soon after its stop
    /// token is cancelled.
    pub fn spawn_blocking<F>(&mut self, name: impl Into<String>, stage: Stage, start: F)
    where
        F: Fn(CancellationToken) + Send + Sync + 'static,
    {
        self.start(
            name.into(),
            stage,
            Start::Blocking(Arc::new(start)),
            Duration::ZERO,
        );
    }

    fn start(&mut self, name: String, stage: Stage, start: Start, delay: Duration) {
        let stop = self.stops[&stage].clone();
        let abort = match &start {
            Start::Async(f) => {
                let task = f(stop.clone());
                self.tasks.spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    task.await
                })
            }
            Start::Blocking(f) => {
                let f = f.clone();
                self.tasks.spawn_blocking(move || {
                    std::thread::sleep(delay);
                    f(stop)
                })
            }
        };
        self.roles.insert(
            abort.id(),
            Role {
                name,
                stage,
                start,
                abort,
            },
        );
    }

    /// Runs until the shutdown token is cancelled, replacing tasks that end; then stops the
    /// stages in order and returns when all tasks have ended (or were abandoned after the wait).
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(ended) = self.tasks.join_next_with_id() => self.replace(ended),
            }
        }
        for stage in STAGES {
            self.stop(stage).await;
        }
        info!("supervised tasks stopped");
    }

    fn replace(&mut self, ended: Result<(Id, ()), JoinError>) {
        let (id, how) = match ended {
            Ok((id, ())) => (id, "ended".to_string()),
            Err(e) => (e.id(), describe(e)),
        };
        let Some(role) = self.roles.remove(&id) else {
            return;
        };
        error!(task = %role.name, "supervised task {how}; starting a replacement");
        self.start(role.name, role.stage, role.start, self.restart_delay);
    }

    async fn stop(&mut self, stage: Stage) {
        self.stops[&stage].cancel();
        let deadline = tokio::time::Instant::now() + self.stop_wait;
        while self.roles.values().any(|r| r.stage == stage) {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(ended)) => {
                    let (id, how) = match ended {
                        Ok((id, ())) => (id, None),
                        Err(e) => (e.id(), Some(describe(e))),
                    };
                    if let (Some(role), Some(how)) = (self.roles.remove(&id), how) {
                        warn!(task = %role.name, "supervised task {how} while stopping");
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // A blocking task cannot be aborted; it is left to end with the process.
                    for role in self.roles.values().filter(|r| r.stage == stage) {
                        warn!(task = %role.name, wait_s = self.stop_wait.as_secs(), "still running at shutdown; aborting it");
                        role.abort.abort();
                    }
                    self.roles.retain(|_, r| r.stage != stage);
                    break;
                }
            }
        }
    }
}

/// A supervisor dropped before or without `run` (start-up failed half-way) still stops its
/// tasks: a blocking one would otherwise keep the runtime from shutting down.
impl Drop for Supervisor {
    fn drop(&mut self) {
        for stop in self.stops.values() {
            stop.cancel();
        }
    }
}

fn describe(e: JoinError) -> String {
    if e.is_cancelled() {
        return "was aborted".into();
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    format!("panicked: {message}")
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_replaced_and_all_stop_in_order() {
        let shutdown = CancellationToken::new();
        let mut sup = Supervisor::new(shutdown.clone(), Duration::from_secs(5));
        sup.restart_delay = Duration::from_millis(10);
        let starts = Arc::new(AtomicUsize::new(0));
        let live = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let (starts, live, order) = (starts.clone(), live.clone(), order.clone());
            sup.spawn("flaky", Stage::Work, move |stop| {
                let n = starts.fetch_add(1, Ordering::SeqCst);
                let (live, order) = (live.clone(), order.clone());
                async move {
                    if n < 2 {
                        panic!("boom {n}");
                    }
                    live.store(1, Ordering::SeqCst);
                    stop.cancelled().await;
                    order.lock().unwrap().push("work");
                }
            });
        }
        {
            let order = order.clone();
            sup.spawn_blocking("model", Stage::Model, move |stop| {
                while !stop.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                order.lock().unwrap().push("model");
            });
        }
        let run = tokio::spawn(sup.run());
        while live.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("the supervisor stops")
            .unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 3, "two panics, two replacements");
        assert_eq!(*order.lock().unwrap(), ["work", "model"]);
    }

    #[tokio::test]
    async fn a_supervisor_dropped_without_running_stops_its_blocking_tasks() {
        let mut sup = Supervisor::new(CancellationToken::new(), Duration::from_secs(5));
        let (tx, rx) = std::sync::mpsc::channel();
        let running = Arc::new(AtomicUsize::new(0));
        let seen = running.clone();
        sup.spawn_blocking("model", Stage::Model, move |stop| {
            seen.store(1, Ordering::SeqCst);
            while !stop.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(());
        });
        while running.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(sup);
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the blocking task saw its stop token");
    }
}

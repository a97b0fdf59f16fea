//! The model thread: one per device, owning the model (tch modules are not Sync), batching the
//! requests that are waiting (up to `max_batch`, waiting at most `max_wait` for more). It runs
//! under the supervisor ([`ModelThread::run`] on the blocking pool): one that panics is replaced
//! and takes the model and the waiting requests over.

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tch::Tensor;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vcnode_models::model::RcModel;

struct Request {
    input: Tensor,
    attention: bool,
    reply: oneshot::Sender<Synthesized>,
}

/// One image's output: the synthetic RC [1, H, W] and, when asked for, the attention map of
/// the last SCPA layer [1, H, W]; on the CPU.
pub struct Synthesized {
    pub image: Tensor,
    pub attention: Option<Tensor>,
}

/// Why a request got no answer; both are transient (the job is retried later).
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("the model thread has stopped")]
    Stopped,
    #[error("the model thread dropped the request (its batch failed, or the thread is restarting)")]
    Dropped,
}

/// A handle to the model thread; cheap to clone.
#[derive(Clone)]
pub struct Inference {
    tx: mpsc::Sender<Request>,
}

/// What the model thread owns, shared with its replacement should it panic.
pub struct ModelThread {
    // Held by one run at a time; a panicked run poisons them, its replacement takes them anyway.
    model: Mutex<RcModel>,
    rx: Mutex<mpsc::Receiver<Request>>,
    max_batch: usize,
    max_wait: Duration,
}

impl Inference {
    /// The handle and the model thread's body, which the caller runs (under the supervisor).
    pub fn new(model: RcModel, max_batch: usize, max_wait: Duration) -> (Inference, Arc<ModelThread>) {
        let (tx, rx) = mpsc::channel::<Request>();
        let thread = ModelThread {
            model: Mutex::new(model),
            rx: Mutex::new(rx),
            max_batch: max_batch.max(1),
            max_wait,
        };
        (Inference { tx }, Arc::new(thread))
    }

    /// Synthesizes RC for one normalized input [1, 1, H, W].
    pub async fn synthesize(&self, input: Tensor, attention: bool) -> Result<Synthesized, InferenceError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                input,
                attention,
                reply,
            })
            .map_err(|_| InferenceError::Stopped)?;
        rx.await.map_err(|_| InferenceError::Dropped)
    }
}

impl ModelThread {
    /// Serves requests until `stop` is cancelled (blocking). The supervisor cancels it after
    /// the workers have stopped, so that their last requests are answered.
    pub fn run(&self, stop: CancellationToken) {
        let model = self.model.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        run(&model, &rx, self.max_batch, self.max_wait, &stop);
    }
}

fn run(
    model: &RcModel,
    rx: &mpsc::Receiver<Request>,
    max_batch: usize,
    max_wait: Duration,
    stop: &CancellationToken,
) {
    info!(model = %model.manifest.model_id(), device = ?model.device, max_batch, "inference thread ready");
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.is_cancelled() => continue,
            Err(_) => break,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + max_wait;
        while batch.len() < max_batch {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let inputs: Vec<&Tensor> = batch.iter().map(|r| &r.input).collect();
        // A torch error panics in tch; keep the thread (and the node) alive and fail only this
        // batch: dropping its reply senders fails those jobs, which then retry.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let x = Tensor::cat(&inputs, 0);
            if batch.iter().any(|r| r.attention) {
                model.synthesize_with_attention(&x)
            } else {
                (model.synthesize(&x), None)
            }
        }));
        let Ok((output, attention)) = run else {
            warn!(
                batch = batch.len(),
                "inference failed; the batch's jobs will be retried"
            );
            continue;
        };
        debug!(
            batch = batch.len(),
            ms = started.elapsed().as_millis() as u64,
            "inference batch"
        );
        for (i, r) in batch.into_iter().enumerate() {
            let i = i as i64;
            let attention = attention.as_ref().filter(|_| r.attention).map(|a| a.get(i));
            let _ = r.reply.send(Synthesized {
                image: output.get(i),
                attention,
            });
        }
    }
}

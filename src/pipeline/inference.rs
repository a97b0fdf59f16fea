//! The model thread: one per device, owning the model (tch modules are not Sync), batching the
//! requests that are waiting (up to `max_batch`, waiting at most `max_wait` for more).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use tch::Tensor;
use tokio::sync::oneshot;
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

/// A handle to the model thread; cheap to clone.
#[derive(Clone)]
pub struct Inference {
    tx: mpsc::Sender<Request>,
}

impl Inference {
    /// Starts the model thread.
    pub fn spawn(model: RcModel, max_batch: usize, max_wait: Duration) -> Inference {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("vcnode-inference".into())
            .spawn(move || run(model, rx, max_batch.max(1), max_wait))
            .expect("spawn the inference thread");
        Inference { tx }
    }

    /// Synthesizes RC for one normalized input [1, 1, H, W].
    pub async fn synthesize(&self, input: Tensor, attention: bool) -> anyhow::Result<Synthesized> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                input,
                attention,
                reply,
            })
            .map_err(|_| anyhow::anyhow!("the inference thread has stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the inference thread dropped the request"))
    }
}

fn run(model: RcModel, rx: mpsc::Receiver<Request>, max_batch: usize, max_wait: Duration) {
    info!(model = %model.manifest.model_id(), device = ?model.device, max_batch, "inference thread ready");
    while let Ok(first) = rx.recv() {
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

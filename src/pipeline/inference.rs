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

/// What the model thread runs a batch on: the generator, or in tests a stand-in that fails
/// as a GPU out of memory would.
pub trait Generate {
    /// Synthetic RC (and the attention map when asked) for a batch [N, 1, H, W]; panics on a
    /// torch error, as tch does.
    fn generate(&self, x: &Tensor, attention: bool) -> (Tensor, Option<Tensor>);
}

impl Generate for RcModel {
    fn generate(&self, x: &Tensor, attention: bool) -> (Tensor, Option<Tensor>) {
        if attention {
            self.synthesize_with_attention(x)
        } else {
            (self.synthesize(x), None)
        }
    }
}

/// Runs one batch. A torch error panics in tch: it is caught, so that the thread (and the
/// node) stay alive and only this batch fails (dropping its reply senders fails those jobs,
/// which then retry). When the device ran out of memory, `limit` is halved (for this batch and
/// the later ones) and the batch is run in pieces of that size; a single image that does not
/// fit fails.
fn run_batch<M: Generate>(
    model: &M,
    inputs: &[&Tensor],
    attention: bool,
    limit: &mut usize,
) -> Option<(Tensor, Option<Tensor>)> {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        model.generate(&Tensor::cat(inputs, 0), attention)
    }));
    match run {
        Ok(out) => Some(out),
        Err(panic) if inputs.len() > 1 && is_out_of_memory(&*panic) => {
            let half = inputs.len() / 2;
            if half < *limit {
                warn!(
                    batch = inputs.len(),
                    now = half,
                    "device out of memory: smaller batches from now on"
                );
                *limit = half;
            }
            // In pieces of the (possibly further lowered) limit, in order.
            let (mut images, mut maps) = (Vec::new(), Vec::new());
            let mut done = 0;
            while done < inputs.len() {
                let n = (*limit).min(inputs.len() - done);
                let (y, a) = run_batch(model, &inputs[done..done + n], attention, limit)?;
                images.push(y);
                maps.extend(a);
                done += n;
            }
            let att = (attention && !maps.is_empty()).then(|| Tensor::cat(&maps, 0));
            Some((Tensor::cat(&images, 0), att))
        }
        Err(_) => None,
    }
}

/// Whether a caught panic is torch's out-of-memory error (CUDA's, or the CPU allocator's).
fn is_out_of_memory(panic: &(dyn std::any::Any + Send)) -> bool {
    let text = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.contains("out of memory") || text.contains("OutOfMemoryError")
}

fn run(
    model: &RcModel,
    rx: &mpsc::Receiver<Request>,
    max_batch: usize,
    max_wait: Duration,
    stop: &CancellationToken,
) {
    info!(model = %model.manifest.model_id(), device = ?model.device, max_batch, "inference thread ready");
    // The batch size in use: max_batch, lowered for good when the device runs out of memory.
    let mut limit = max_batch;
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) if !stop.is_cancelled() => continue,
            Err(_) => break,
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + max_wait;
        while batch.len() < limit {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let inputs: Vec<&Tensor> = batch.iter().map(|r| &r.input).collect();
        let wants_attention = batch.iter().any(|r| r.attention);
        let Some((output, attention)) = run_batch(model, &inputs, wants_attention, &mut limit) else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tch::{Device, Kind};

    /// Fails like a GPU with room for `fits` images at a time, and records the batch sizes tried.
    struct SmallDevice {
        fits: i64,
        tried: RefCell<Vec<i64>>,
    }

    impl Generate for SmallDevice {
        fn generate(&self, x: &Tensor, attention: bool) -> (Tensor, Option<Tensor>) {
            let n = x.size()[0];
            self.tried.borrow_mut().push(n);
            if n > self.fits {
                panic!("Torch(\"CUDA out of memory. Tried to allocate 2.00 GiB\")");
            }
            (x * 2.0, attention.then(|| x * 3.0))
        }
    }

    fn images(n: i64) -> Vec<Tensor> {
        (0..n)
            .map(|i| Tensor::full([1, 1, 2, 2], i as f64, (Kind::Float, Device::Cpu)))
            .collect()
    }

    #[test]
    fn out_of_memory_halves_the_batch_keeps_every_answer_in_order_and_lowers_the_limit() {
        let device = SmallDevice {
            fits: 2,
            tried: RefCell::new(Vec::new()),
        };
        let inputs = images(8);
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut limit = 8;
        let (out, att) = run_batch(&device, &refs, true, &mut limit).expect("answered in halves");
        assert_eq!(out.size(), [8, 1, 2, 2]);
        for i in 0..8 {
            assert_eq!(
                f64::try_from(out.get(i).mean(Kind::Float)).unwrap(),
                2.0 * i as f64
            );
        }
        assert_eq!(att.unwrap().size(), [8, 1, 2, 2]);
        assert_eq!(limit, 2, "later batches start at a size that fits");
        assert_eq!(*device.tried.borrow(), [8, 4, 2, 2, 2, 2]);
    }

    #[test]
    fn a_single_image_that_does_not_fit_and_other_errors_fail_the_batch_only() {
        let device = SmallDevice {
            fits: 0,
            tried: RefCell::new(Vec::new()),
        };
        let inputs = images(2);
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut limit = 4;
        assert!(run_batch(&device, &refs, false, &mut limit).is_none());
        assert_eq!(limit, 1);
        // Not an out-of-memory error: no splitting, the batch fails as a whole.
        struct Broken;
        impl Generate for Broken {
            fn generate(&self, _: &Tensor, _: bool) -> (Tensor, Option<Tensor>) {
                panic!("Torch(\"shape mismatch\")")
            }
        }
        let mut limit = 4;
        assert!(run_batch(&Broken, &refs, false, &mut limit).is_none());
        assert_eq!(limit, 4);
    }
}

//! A dedicated single-threaded Tokio runtime for the AMQP client.
//!
//! Why: `azure_core_amqp` 1.2.0-beta.1 runs on `fe2o3-amqp` 0.16, whose sender hands a
//! transfer frame to the session task first and registers the delivery as unsettled only
//! afterwards. On a multi-threaded runtime the session task can write the frame, read the
//! broker's disposition and look the delivery up before that registration; the disposition is
//! then dropped and `send` waits forever. Seen here against the Service Bus emulator under CPU
//! load: a `$cbs` put-token that never completed (`pollbus dlq` hung) and 30 s publish stalls.
//! `fe2o3-amqp` 0.18.2 fixes it ("an unsettled delivery is now registered before its transfer
//! reaches the session"), but `azure_core_amqp` still requires `^0.16`.
//!
//! On a current-thread runtime no other task runs between the frame entering the session's
//! channel and the registration (the send returns without yielding once the frame is queued),
//! so the session cannot see the disposition first. Every AMQP connection, session and link of
//! the sink and of `pollbus dlq` is therefore created and used on one such runtime, on a
//! thread of its own; callers on any runtime hand it work with [`AmqpRuntime::run`].

use std::future::Future;
use std::thread;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;

/// A current-thread runtime on its own OS thread; stops when dropped.
pub struct AmqpRuntime {
    handle: Handle,
    /// Dropping it ends the runtime's `block_on`, which cancels whatever still runs there.
    _stop: oneshot::Sender<()>,
}

/// The runtime stopped before the work finished.
#[derive(Debug, thiserror::Error)]
#[error("the Service Bus client thread stopped")]
pub struct RuntimeStopped;

impl AmqpRuntime {
    /// Starts the runtime on a thread named `name`.
    pub fn start(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                // Runs spawned work until the owner is dropped.
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(AmqpRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `work` on this runtime in the background until it ends or the returned handle is
    /// dropped.
    pub fn spawn<F>(&self, work: F) -> AbortOnDropHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        AbortOnDropHandle::new(self.handle.spawn(work))
    }

    /// Runs `work` on this runtime and waits for it. Dropping the returned future cancels the
    /// work (nothing keeps running on the AMQP thread after its caller gave up).
    pub async fn run<F, T>(&self, work: F) -> Result<T, RuntimeStopped>
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let task = AbortOnDropHandle::new(self.handle.spawn(work));
        match task.await {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(RuntimeStopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn work_runs_on_the_runtime_s_own_thread() {
        let rt = AmqpRuntime::start("amqp-test").unwrap();
        let name = rt
            .run(async { thread::current().name().map(str::to_string) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("amqp-test"));
        // Tasks spawned by the work (as fe2o3 spawns its connection and session engines) run
        // there too.
        let inner = rt
            .run(async {
                tokio::spawn(async { thread::current().name().map(str::to_string) })
                    .await
                    .unwrap()
            })
            .await
            .unwrap();
        assert_eq!(inner.as_deref(), Some("amqp-test"));
    }

    #[tokio::test]
    async fn a_dropped_caller_cancels_its_work() {
        let rt = AmqpRuntime::start("amqp-test").unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let work = rt.run(async move {
            let _keep = tx;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(tokio::time::timeout(Duration::from_millis(50), work)
            .await
            .is_err());
        // The work was aborted, so its end of the channel is gone.
        assert!(rx.await.is_err());
    }

    #[tokio::test]
    async fn work_after_the_runtime_stopped_is_an_error_not_a_hang() {
        let rt = AmqpRuntime::start("amqp-test").unwrap();
        let handle = rt.handle.clone();
        drop(rt);
        // Give the thread a moment to leave block_on and drop the runtime.
        for _ in 0..100 {
            if handle.spawn(async {}).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("work was still accepted 1 s after the runtime stopped");
    }
}

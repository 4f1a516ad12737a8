//! A shard's helper thread: where the work that may block goes (creating, renaming and
//! deleting files, syncing directories), so that the shard's loop never waits on a file
//! system's journal.
//!
//! A job is a closure run on the helper; what it returns is a message of the service's
//! own type, handed back to the shard over a bounded channel, with the shard's doorbell
//! rung if it sleeps, and given to the service (`Service::on_blocking_done`) in a later
//! turn. Jobs run one at a time, in the order given. The thread is started on first use,
//! so a shard that never needs it has none; it ends once the shard drops its end.

use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::Arc;

use crate::mesh::links::Doorbell;

/// Work for the helper thread; its result goes back to the shard.
pub type Job<M> = Box<dyn FnOnce() -> M + Send>;

/// Jobs waiting for the helper, and results waiting for the shard, at most.
pub const HELPER_QUEUE: usize = 64;

/// The shard's end of its helper thread.
pub(crate) struct Helper<M> {
    shard: usize,
    doorbells: Arc<[Doorbell]>,
    jobs: Option<Sender<Job<M>>>,
    results: Option<Receiver<M>>,
    thread: Option<JoinHandle<()>>,
    /// Jobs given and not yet handed back.
    pending: usize,
}

impl<M: Send + 'static> Helper<M> {
    pub(crate) fn new(shard: usize, doorbells: Arc<[Doorbell]>) -> Helper<M> {
        Helper {
            shard,
            doorbells,
            jobs: None,
            results: None,
            thread: None,
            pending: 0,
        }
    }

    /// Gives `job` to the helper, starting it if need be; the job back if the helper's
    /// queue is full (or it could not be started).
    pub(crate) fn run(&mut self, job: Job<M>) -> Result<(), Job<M>> {
        if self.jobs.is_none() && self.start().is_err() {
            return Err(job);
        }
        let Some(jobs) = &self.jobs else {
            return Err(job);
        };
        match jobs.try_send(job) {
            Ok(()) => {
                self.pending += 1;
                Ok(())
            }
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        let (job_tx, job_rx) = crossbeam_channel::bounded::<Job<M>>(HELPER_QUEUE);
        let (res_tx, res_rx) = crossbeam_channel::bounded::<M>(HELPER_QUEUE);
        let doorbells = self.doorbells.clone();
        let shard = self.shard;
        let thread = std::thread::Builder::new()
            .name(format!("shard-{shard}-helper"))
            .spawn(move || {
                for job in job_rx {
                    if res_tx.send(job()).is_err() {
                        return;
                    }
                    doorbells[shard].ring_if_sleeping();
                }
            })?;
        self.jobs = Some(job_tx);
        self.results = Some(res_rx);
        self.thread = Some(thread);
        Ok(())
    }

    /// Jobs given and not yet handed back.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// Whether results wait to be handed to the service.
    pub(crate) fn has_results(&self) -> bool {
        self.results.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// The next result, if one is there.
    pub(crate) fn try_result(&mut self) -> Option<M> {
        let m = self.results.as_ref()?.try_recv().ok()?;
        self.pending -= 1;
        Some(m)
    }
}

impl<M> Drop for Helper<M> {
    fn drop(&mut self) {
        // Closing the job channel ends the thread once the job it runs (if any) is done;
        // the results channel is dropped first, so it never blocks handing one back.
        self.jobs = None;
        self.results = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn jobs_run_in_order_and_their_results_come_back() {
        let bells: Arc<[Doorbell]> = vec![Doorbell::new().unwrap()].into();
        let mut h = Helper::<u32>::new(0, bells);
        assert!(h.thread.is_none(), "started on first use only");
        for i in 0..10 {
            h.run(Box::new(move || i * 2))
                .unwrap_or_else(|_| panic!("queue full"));
        }
        assert_eq!(h.pending(), 10);
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.len() < 10 {
            assert!(Instant::now() < deadline, "results never came");
            match h.try_result() {
                Some(r) => got.push(r),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert_eq!(h.pending(), 0);
    }

    #[test]
    fn a_full_queue_gives_the_job_back() {
        let bells: Arc<[Doorbell]> = vec![Doorbell::new().unwrap()].into();
        let mut h = Helper::<u32>::new(0, bells);
        let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
        h.run(Box::new(move || {
            let _ = gate_rx.recv();
            0
        }))
        .unwrap_or_else(|_| panic!("first job refused"));
        // One job runs (blocked); the queue holds HELPER_QUEUE more.
        let mut refused = 0;
        for _ in 0..HELPER_QUEUE + 2 {
            if h.run(Box::new(|| 1)).is_err() {
                refused += 1;
            }
        }
        assert!(refused >= 1, "the bounded queue refused nothing");
        drop(gate_tx);
    }
}

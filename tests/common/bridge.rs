//! Pods of the simulated API server bridged to real broker processes, both ways: a pod
//! that starts runs the broker of its completion index, a deleted pod kills it (`kill -9`),
//! and a broker that exits by itself ends its pod with the broker's exit code, as the
//! container of a Flux Operator pod would.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use fluxk8s::sim::{PodEvent, PodEventKind, SimCluster};

use super::cluster::Cluster;

/// How often the bridge looks for brokers that exited by themselves.
const TICK: Duration = Duration::from_millis(50);

/// What the bridge did to a broker, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// Its pod started: the broker was started.
    Started(u32),
    /// Its pod was deleted: the broker was killed.
    Killed(u32),
    /// The broker exited by itself with this code; its pod was ended with it.
    Exited { rank: u32, code: i32 },
}

/// The bridge thread for one Job; stopped and joined on drop.
pub struct PodBridge {
    history: Arc<Mutex<Vec<BrokerEvent>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The Job whose pods run brokers.
struct Target {
    sim: Arc<SimCluster>,
    cluster: Arc<Cluster>,
    namespace: String,
    job: String,
}

impl PodBridge {
    /// Subscribes to the pods of `job` now (create the Job after this, so no start is
    /// missed) and bridges them until dropped.
    pub fn start(
        sim: Arc<SimCluster>,
        cluster: Arc<Cluster>,
        namespace: &str,
        job: &str,
    ) -> PodBridge {
        let events = sim.subscribe_pods();
        let history = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let target = Target {
            sim,
            cluster,
            namespace: namespace.to_owned(),
            job: job.to_owned(),
        };
        let thread = {
            let history = history.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("pod-bridge".into())
                .spawn(move || target.run(&events, &history, &stop))
                .expect("start the pod bridge thread")
        };
        PodBridge {
            history,
            stop,
            thread: Some(thread),
        }
    }

    /// Everything the bridge did so far.
    pub fn history(&self) -> Vec<BrokerEvent> {
        self.history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Ranks whose broker the bridge started, in order (a rank restarted shows twice).
    pub fn started(&self) -> Vec<u32> {
        self.history()
            .iter()
            .filter_map(|event| match event {
                BrokerEvent::Started(rank) => Some(*rank),
                _ => None,
            })
            .collect()
    }

    /// The exit code of the first exit of `rank` by itself, if it exited.
    pub fn exit_code(&self, rank: u32) -> Option<i32> {
        self.history().iter().find_map(|event| match event {
            BrokerEvent::Exited { rank: r, code } if *r == rank => Some(*code),
            _ => None,
        })
    }

    /// Whether the bridge thread is still running (it ends only on drop or a panic).
    pub fn is_alive(&self) -> bool {
        self.thread
            .as_ref()
            .is_some_and(|thread| !thread.is_finished())
    }
}

impl Drop for PodBridge {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the pod bridge thread panicked");
        }
    }
}

impl Target {
    fn run(
        &self,
        events: &Receiver<PodEvent>,
        history: &Mutex<Vec<BrokerEvent>>,
        stop: &AtomicBool,
    ) {
        let record = |event: BrokerEvent| {
            history
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(event);
        };
        while !stop.load(Ordering::Relaxed) {
            match events.recv_timeout(TICK) {
                Ok(event) => {
                    if let Some(done) = self.apply(&event) {
                        record(done);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            for (rank, code) in self.cluster.reap_exited() {
                // The pod may be gone already (deleted while the broker was exiting).
                let _ = self.sim.end_index(&self.namespace, &self.job, rank, code);
                record(BrokerEvent::Exited { rank, code });
            }
        }
    }

    /// Carries out one pod event on the brokers.
    fn apply(&self, event: &PodEvent) -> Option<BrokerEvent> {
        if event.namespace != self.namespace || event.job.as_deref() != Some(&self.job) {
            return None;
        }
        let rank = event.index?;
        match event.kind {
            PodEventKind::Started => {
                // A replacement pod: its predecessor's broker cannot still run.
                if self.cluster.is_running(rank) {
                    self.cluster.kill(rank);
                }
                self.cluster.start(rank);
                Some(BrokerEvent::Started(rank))
            }
            PodEventKind::Terminating | PodEventKind::Deleted if self.cluster.is_running(rank) => {
                self.cluster.kill(rank);
                Some(BrokerEvent::Killed(rank))
            }
            _ => None,
        }
    }
}

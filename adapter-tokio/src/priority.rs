//! Thread priorities: with the Kafka sink on, the threads that serve MQTT clients run nicer than
//! the sink's threads (`kafka.client_threads_nice`).
//!
//! The MQTT side never waits for Kafka, so on a host whose CPU is saturated by client traffic
//! the sink's threads (the feeder and librdkafka's) would get an even share of the CPU with the
//! client-serving threads, fall behind and drop events at the buffer limit. A higher nice value
//! on the client-serving threads (the tokio workers and the router) gives the sink the CPU it
//! needs first; clients slow down instead, as they do on any CPU-bound broker. With spare CPU,
//! nice values change nothing. Raising a nice value needs no privilege.

use std::io;

use rustix::process::{Pid, getpriority_process, setpriority_process};

/// The highest nice value Linux allows.
const MAX_NICE: i32 = 19;

/// The nice value `delta` above the process's own (the main thread's).
fn target(delta: i32) -> io::Result<i32> {
    let base = getpriority_process(Some(rustix::process::getpid()))?;
    Ok(base.saturating_add(delta).min(MAX_NICE))
}

/// Sets thread `tid` to `nice` unless it is already at least that nice (so that applying it
/// twice changes nothing).
fn renice(tid: Pid, nice: i32) -> io::Result<()> {
    if getpriority_process(Some(tid))? < nice {
        setpriority_process(Some(tid), nice)?;
    }
    Ok(())
}

/// Makes the calling thread `delta` nicer than the process.
pub fn lower_current_thread(delta: i32) -> io::Result<()> {
    renice(rustix::thread::gettid(), target(delta)?)
}

/// Runs `spawn` on a short-lived thread that is first made `delta` nicer than the process, and
/// returns what `spawn` returned with whether the lowering worked.
///
/// Linux threads inherit their creator's nice value, so every thread `spawn` starts (rumqttd's
/// router, say) runs lowered from its first instruction: no scan for it by name, no race with
/// the moment it names itself. When lowering fails, `spawn` still runs, at the process's
/// priority, and the error comes back for the caller to report.
pub fn spawn_lowered<T: Send>(delta: i32, spawn: impl FnOnce() -> T + Send) -> (T, io::Result<()>) {
    std::thread::scope(|scope| {
        let spawner = scope.spawn(move || {
            let lowered = lower_current_thread(delta);
            (spawn(), lowered)
        });
        match spawner.join() {
            Ok(result) => result,
            // `spawn` panicked: the same panic, on the caller's thread.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The nice value of thread `tid` of this process.
pub fn thread_nice(tid: Pid) -> io::Result<i32> {
    Ok(getpriority_process(Some(tid))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_lowered_once_and_others_keep_their_priority() {
        let base = getpriority_process(None).expect("getpriority");
        let main_tid = rustix::thread::gettid();
        let (tid, nice) = std::thread::Builder::new()
            .name("nice-test".into())
            .spawn(move || {
                lower_current_thread(2).expect("renice");
                // Applying it again is a no-op, not 4.
                lower_current_thread(2).expect("renice again");
                let tid = rustix::thread::gettid();
                (tid, thread_nice(tid).expect("nice"))
            })
            .expect("spawn")
            .join()
            .expect("join");
        assert_ne!(tid, main_tid);
        assert_eq!(nice, (base + 2).min(MAX_NICE));
        assert_eq!(
            thread_nice(main_tid).expect("nice"),
            base,
            "the caller is untouched"
        );
    }

    #[test]
    fn threads_spawned_lowered_start_lowered_and_the_caller_keeps_its_priority() {
        let base = getpriority_process(None).expect("getpriority");
        let caller = rustix::thread::gettid();
        let (tid_rx, lowered) = spawn_lowered(3, || {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("nice-inherited".into())
                .spawn(move || {
                    let tid = rustix::thread::gettid();
                    // Read from inside the thread, before anything could renice it.
                    tid_tx
                        .send((tid, thread_nice(tid).expect("nice")))
                        .expect("send");
                })
                .expect("spawn");
            tid_rx
        });
        lowered.expect("lowering needs no privilege");
        let (tid, nice) = tid_rx.recv().expect("the thread's own reading");
        assert_ne!(tid, caller);
        assert_eq!(nice, (base + 3).min(MAX_NICE));
        assert_eq!(
            thread_nice(caller).expect("nice"),
            base,
            "the caller is untouched"
        );
    }
}

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

/// Makes every thread of this process named `name` `delta` nicer than the process; how many
/// there were.
pub fn lower_threads_named(name: &str, delta: i32) -> io::Result<usize> {
    let nice = target(delta)?;
    let mut count = 0;
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        if comm.trim_end() == name {
            renice(tid, nice)?;
            count += 1;
        }
    }
    Ok(count)
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
    fn threads_are_found_by_name() {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::Builder::new()
            .name("nice-named".into())
            .spawn(move || {
                ready_tx.send(rustix::thread::gettid()).expect("send");
                let _ = done_rx.recv();
            })
            .expect("spawn");
        let tid = ready_rx.recv().expect("tid");
        assert_eq!(lower_threads_named("nice-named", 3).expect("renice"), 1);
        let base = getpriority_process(None).expect("getpriority");
        assert_eq!(thread_nice(tid).expect("nice"), (base + 3).min(MAX_NICE));
        assert_eq!(lower_threads_named("no-such-thread", 3).expect("scan"), 0);
        drop(done_tx);
        worker.join().expect("join");
    }
}

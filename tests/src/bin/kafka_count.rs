//! `kafka-count ADDR QUIET_SECS TOPIC...`: counts the records of partition 0 of each TOPIC on
//! the Kafka at ADDR, from the beginning, with a real rdkafka consumer (`assign()`, no consumer
//! group). It reads until no record arrived for QUIET_SECS seconds and prints one line per
//! topic, `TOPIC COUNT`. Used by `scripts/soak.py` to check that every presence event reached
//! Kafka; tansu's reported high watermark lags the true count (`shared/FACTS.md`), so it counts.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::time::{sleep, timeout};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, addr, quiet, topics @ ..] = &args[..] else {
        panic!("usage: kafka-count ADDR QUIET_SECS TOPIC..., got {args:?}");
    };
    let quiet = Duration::from_secs_f64(quiet.parse().expect("QUIET_SECS is a number"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let counts = runtime.block_on(count(addr, quiet, topics));
    for topic in topics {
        println!("{topic} {}", counts.get(topic).copied().unwrap_or(0));
    }
}

/// Reads every topic from its beginning until nothing arrived for `quiet`.
async fn count(addr: &str, quiet: Duration, topics: &[String]) -> BTreeMap<String, u64> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "kafka-count")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("the consumer starts");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("a valid offset");
    }
    consumer.assign(&assignment).expect("assign works");
    let mut counts = BTreeMap::new();
    loop {
        match timeout(quiet, consumer.recv()).await {
            Err(_) => return counts,
            // Unknown topic or partition (no event of that kind yet): keep polling.
            Ok(Err(_)) => sleep(Duration::from_millis(50)).await,
            Ok(Ok(message)) => *counts.entry(message.topic().to_owned()).or_insert(0) += 1,
        }
    }
}

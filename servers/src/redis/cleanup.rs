//! Tidying a shared Redis after a run: the topic claims, sequence counters and streams of the given
//! topics and the lane streams, stats and name claims of the given queues are removed, so runs
//! against one long-lived Redis (`commbench run --bus-url`) never pile up towards `--max-topics` or
//! `--max-queues`. Job hashes are left to expire (`--queue-retention`); the data epoch (`epoch.rs`) stays,
//! since every instance on this Redis reads it and its removal would look like a loss of the data.

use crate::{
    bus::redis::wire,
    queue::{redis_wire, Lane, QueueName},
    topic::TopicName,
};

/// Deletes what the topics and queues left in the Redis at `url`.
pub async fn forget(
    url: &str,
    topics: &[TopicName],
    queues: &[QueueName],
) -> Result<(), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    // Bounded batches: a cell may have one notification topic per user.
    for chunk in topics.chunks(512) {
        let mut pipe = redis::pipe();
        for topic in chunk {
            pipe.cmd("SREM").arg(wire::TOPICS_KEY).arg(topic.as_str());
            pipe.cmd("DEL")
                .arg(wire::seq_key(topic))
                .arg(wire::stream_key(topic));
        }
        pipe.query_async::<()>(&mut connection).await?;
    }
    for queue in queues {
        let mut pipe = redis::pipe();
        pipe.cmd("SREM")
            .arg(redis_wire::NAMES_KEY)
            .arg(queue.as_str());
        pipe.cmd("DEL").arg(redis_wire::stats_key(queue));
        for lane in Lane::ALL {
            pipe.cmd("DEL").arg(redis_wire::stream_key(queue, lane));
        }
        pipe.query_async::<()>(&mut connection).await?;
    }
    Ok(())
}

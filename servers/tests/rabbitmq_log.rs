//! RabbitMQ streams as logs, at the log level: a record is never written ahead of its stream's
//! genesis (where every reader would skip it), even when the stream exists without one, and a
//! stream that begins with something else is refused by name rather than read wrongly.

#![allow(clippy::unwrap_used)]

mod backends;
mod common;

use std::{sync::Arc, time::Duration};

use amqprs::{
    channel::{BasicPublishArguments, Channel, QueueDeclareArguments},
    connection::{Connection, OpenConnectionArguments},
    BasicProperties, FieldTable, FieldValue,
};
use backends::{shared, Backend};
use bytes::Bytes;
use commbench_servers::log::{rabbitmq::RabbitLog, LogBroker, LogError};

/// A channel of a connection of its own to the test broker, as another program would have.
async fn foreign_channel(url: &str) -> (Connection, Channel) {
    let port = url.rsplit(':').next().unwrap().parse().unwrap();
    let args = OpenConnectionArguments::new("127.0.0.1", port, "guest", "guest");
    let connection = Connection::open(&args).await.unwrap();
    let channel = connection.open_channel(None).await.unwrap();
    (connection, channel)
}

/// Declares `name` as a stream, empty.
async fn declare_bare_stream(channel: &Channel, name: &str) {
    let mut arguments = FieldTable::new();
    arguments.insert(
        "x-queue-type".try_into().unwrap(),
        FieldValue::S("stream".try_into().unwrap()),
    );
    channel
        .queue_declare(
            QueueDeclareArguments::new(name)
                .durable(true)
                .arguments(arguments)
                .finish(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_record_is_written_ahead_of_a_stream_s_genesis() {
    let backend = Backend::RabbitMq;
    if !backend.available("no_record_is_written_ahead_of_a_stream_s_genesis") {
        return;
    }
    let url = shared(backend).await.unwrap().url();
    let log = RabbitLog::connect(&url, Arc::default()).await.unwrap();
    let (_connection, channel) = foreign_channel(&url).await;

    // A stream that exists without its genesis, as one does between its creator's declare and
    // genesis (or after a genesis the broker lost): the first record must not take offset 0.
    declare_bare_stream(&channel, "cb.t.bare").await;
    log.append("cb.t.bare", &[("first".into(), Bytes::from_static(b"1"))])
        .await
        .unwrap();
    let mut reader = log.reader("cb.t.bare", 0).await.unwrap();
    let entries = reader.next(Duration::from_secs(10)).await.unwrap();
    let read: Vec<_> = entries.iter().map(|e| (e.offset, e.id.as_str())).collect();
    assert_eq!(read, vec![(0, "first")], "the record read from offset 0");
    assert_eq!(log.end("cb.t.bare").await, Ok(1));

    // A stream whose first record is not commbench's genesis is refused, by name.
    declare_bare_stream(&channel, "cb.t.foreign").await;
    let mut properties = BasicProperties::default();
    properties.with_message_id("not-a-genesis");
    channel
        .basic_publish(
            properties,
            b"x".to_vec(),
            BasicPublishArguments::new("", "cb.t.foreign"),
        )
        .await
        .unwrap();
    // (The check waits for the new stream to settle, 600 ms, which the unconfirmed publish above
    // is long stored by.)
    let refused = match log
        .append("cb.t.foreign", &[("mine".into(), Bytes::new())])
        .await
    {
        Err(LogError::Refused(detail)) => detail,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(
        refused.contains("cb.t.foreign") && refused.contains("not-a-genesis"),
        "{refused}"
    );
}

//! Redis keys, the Lua scripts and the parsing of stream replies, kept apart from the bus logic.

use bytes::Bytes;
use redis::Value;

use crate::{
    event::{Event, SharedEvent},
    topic::TopicName,
};

/// The set of topic names, shared by every instance so `--max-topics` holds across them.
pub const TOPICS_KEY: &str = "cb:topics";

/// The stream field holding an event's payload.
pub const PAYLOAD_FIELD: &str = "p";

pub fn seq_key(topic: &TopicName) -> String {
    format!("cb:seq:{}", topic.as_str())
}

pub fn stream_key(topic: &TopicName) -> String {
    format!("cb:stream:{}", topic.as_str())
}

/// Claims the topic (bounded by ARGV[2]) and returns 0, or -1 at the limit.
/// KEYS: topics set. ARGV: topic, max topics.
pub const CLAIM_TOPIC: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
return 0
";

/// How far back (entries of the topic's stream) a replayed publish looks for its own id.
pub const DEDUPE_WINDOW: usize = 1000;

/// Claims the topic, assigns the next sequence number and appends the event (field `p`) with its
/// publish id (field `i`), atomically, so sequence numbers stay strictly increasing across every
/// instance. Returns the sequence number, or -1 at the topic limit.
///
/// The number is above ARGV[8], the highest this instance has seen for the topic: after Redis lost
/// its data the counter starts from nothing, and is raised past it here, inside the script, so two
/// instances doing so at once still never assign one number twice.
///
/// With ARGV[6] = 1 (a replay of a publish whose earlier attempt may have been applied before its
/// reply was lost) it first looks for the id among the newest ARGV[7] entries and returns that
/// earlier sequence number instead of appending a duplicate.
/// KEYS: topics set, seq counter, stream. ARGV: topic, max topics, payload, history, id, check, window,
/// floor.
pub const PUBLISH: &str = r"
if ARGV[6] == '1' then
  local recent = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', tonumber(ARGV[7]))
  for _, entry in ipairs(recent) do
    local fields = entry[2]
    for f = 1, #fields, 2 do
      if fields[f] == 'i' and fields[f + 1] == ARGV[5] then
        return tonumber(string.match(entry[1], '^(%d+)'))
      end
    end
  end
end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
local seq = redis.call('INCR', KEYS[2])
if seq <= tonumber(ARGV[8]) then
  seq = tonumber(ARGV[8]) + 1
  redis.call('SET', KEYS[2], seq)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '=', ARGV[4], seq .. '-0', 'p', ARGV[3], 'i', ARGV[5])
return seq
";

/// Raises the topic's counter to at least ARGV[1] (the repair after Redis lost its data: readers and
/// instances that never saw the topic then see the head where it was). KEYS: seq counter.
pub const RAISE_FLOOR: &str = r"
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 0
";

/// The sequence number in a stream entry id `{seq}-0`.
fn seq_of(id: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(id).ok()?;
    text.split('-').next()?.parse().ok()
}

fn bytes_of(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.as_bytes()),
        _ => None,
    }
}

/// Parses an XRANGE reply (`[[id, [field, value, …]], …]`) into events.
pub fn parse_entries(topic: &TopicName, reply: &Value) -> Result<Vec<SharedEvent>, String> {
    let Value::Array(entries) = reply else {
        return match reply {
            Value::Nil => Ok(Vec::new()),
            other => Err(format!("unexpected stream reply {other:?}")),
        };
    };
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else {
            return Err(format!("unexpected stream entry {entry:?}"));
        };
        let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
            return Err(format!("unexpected stream entry {entry:?}"));
        };
        let seq = bytes_of(id)
            .and_then(seq_of)
            .ok_or_else(|| format!("unexpected stream id {id:?}"))?;
        let payload = fields
            .chunks(2)
            .find(|pair| pair.first().and_then(bytes_of) == Some(PAYLOAD_FIELD.as_bytes()))
            .and_then(|pair| pair.get(1).and_then(bytes_of))
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        events.push(Event::new(topic.clone(), seq, payload));
    }
    Ok(events)
}

/// Parses an XREAD reply for one stream (`[[key, entries]]`, or nil on timeout) into events.
pub fn parse_xread(topic: &TopicName, reply: &Value) -> Result<Vec<SharedEvent>, String> {
    match reply {
        Value::Nil => Ok(Vec::new()),
        Value::Array(streams) => match streams.first() {
            None => Ok(Vec::new()),
            Some(Value::Array(pair)) => match pair.get(1) {
                Some(entries) => parse_entries(topic, entries),
                None => Err(format!("unexpected XREAD reply {reply:?}")),
            },
            Some(other) => Err(format!("unexpected XREAD reply {other:?}")),
        },
        // RESP3 answers with a map; this client speaks RESP2, but accept it anyway.
        Value::Map(streams) => match streams.first() {
            Some((_, entries)) => parse_entries(topic, entries),
            None => Ok(Vec::new()),
        },
        other => Err(format!("unexpected XREAD reply {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn entries_become_events_with_their_sequence() {
        let topic = TopicName::parse("t").unwrap_or_else(|e| panic!("{e}"));
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("7-0"), Value::Array(vec![bulk("p"), bulk("hi")])]),
            Value::Array(vec![bulk("8-0"), Value::Array(vec![bulk("p"), bulk("yo")])]),
        ]);
        let events = parse_entries(&topic, &reply).unwrap_or_default();
        let got: Vec<_> = events.iter().map(|e| (e.seq, e.payload.clone())).collect();
        assert_eq!(
            got,
            vec![
                (7, Bytes::from_static(b"hi")),
                (8, Bytes::from_static(b"yo"))
            ]
        );
        let wrapped = Value::Array(vec![Value::Array(vec![bulk("cb:stream:t"), reply])]);
        assert_eq!(parse_xread(&topic, &wrapped).map(|e| e.len()), Ok(2));
        assert_eq!(parse_xread(&topic, &Value::Nil).map(|e| e.len()), Ok(0));
    }
}

//! The Redis queue's keys, Lua scripts and reply parsing, apart from the backend's logic.
//!
//! Per queue: one stream per lane `cb:q:{queue}:{lane}` (entries hold only the job id) read through
//! the consumer group [`GROUP`]; a hash per job `cb:q:{queue}:job:{id}`; a counters hash
//! `cb:q:{queue}:stats`. Every state change is one script, so counters and job hashes never disagree.

use std::collections::HashMap;

use redis::Value;

use super::{JobState, JobView, Lane, QueueName};
use crate::topic::TopicName;

/// Queue names in use, shared so `--max-queues` holds across instances.
pub const NAMES_KEY: &str = "cb:q:names";
/// The consumer group every instance reads through.
pub const GROUP: &str = "cb-workers";
/// Pub/sub channel: `e {queue}` after an enqueue, `d {queue} {id}` after a completion.
pub const EVENTS: &str = "cb:q:events";

pub fn stream_key(queue: &QueueName, lane: Lane) -> String {
    format!("cb:q:{}:{}", queue.as_str(), lane.label())
}

pub fn stats_key(queue: &QueueName) -> String {
    format!("cb:q:{}:stats", queue.as_str())
}

pub fn job_prefix(queue: &QueueName) -> String {
    format!("cb:q:{}:job:", queue.as_str())
}

/// A job's handle `{queue} {id}`, as completion notifications (`d {queue} {id}`) name it.
pub fn handle(queue: &QueueName, id: &str) -> String {
    format!("{} {id}", queue.as_str())
}

/// The hash key of the job a handle names, or `None` for a malformed handle.
pub fn job_key_of(handle: &str) -> Option<String> {
    let (queue, id) = handle.split_once(' ')?;
    Some(format!(
        "{}{id}",
        job_prefix(&QueueName::parse(queue).ok()?)
    ))
}

/// Claims the queue name, refuses a full queue, appends the job to its lane and writes its hash.
/// Returns 0, 1 when the job already exists (a replay of an enqueue whose answer was lost), -1 at the
/// queue limit, -2 when the queue is full.
/// KEYS: names, stream, stats, job. ARGV: queue, max queues, max unfinished, group, lane, id,
/// work_ms, notify ('' = none), payload, has payload ('1'/'0'), now µs, secret, ttl s.
pub const ENQUEUE: &str = r"
if redis.call('EXISTS', KEYS[4]) == 1 then return 1 end
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
local s = redis.call('HMGET', KEYS[3], 'wp', 'wn', 'running')
local unfinished = (tonumber(s[1]) or 0) + (tonumber(s[2]) or 0) + (tonumber(s[3]) or 0)
if unfinished >= tonumber(ARGV[3]) then return -2 end
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[4], '0', 'MKSTREAM')
end
local sid = redis.call('XADD', KEYS[2], '*', 'id', ARGV[6])
redis.call('HSET', KEYS[4], 'lane', ARGV[5], 'work_ms', ARGV[7], 'status', 'queued',
  'attempts', 0, 'completions', 0, 'enq', ARGV[11], 'secret', ARGV[12], 'sid', sid)
if ARGV[8] ~= '' then redis.call('HSET', KEYS[4], 'notify', ARGV[8]) end
if ARGV[10] == '1' then redis.call('HSET', KEYS[4], 'payload', ARGV[9]) end
redis.call('EXPIRE', KEYS[4], ARGV[13])
redis.call('HINCRBY', KEYS[3], ARGV[5] == 'premium' and 'wp' or 'wn', 1)
redis.call('HINCRBY', KEYS[3], 'submitted', 1)
redis.call('PUBLISH', 'cb:q:events', 'e ' .. ARGV[1])
return 0
";

/// Takes one job: first an expired lease (XAUTOCLAIM, min idle = the visibility timeout) from either
/// lane, else a new entry (XREADGROUP) from the preferred lane, then the other. The PEL scan resumes
/// from the caller's per-lane cursors and looks at most (claim rounds) × 10 entries per lane, so a
/// take costs the same however many jobs are running. Returns {cursor1, cursor2} when nothing was
/// taken, else {cursor1, cursor2, id, lane, work_ms, payload|nil, attempt, secret, redelivered 0/1,
/// contested 0/1}.
/// KEYS: first stream, second stream, stats. ARGV: group, consumer, min idle ms, first lane,
/// second lane, now µs, job key prefix, cursor1, cursor2, claim rounds.
pub const TAKE: &str = r"
local s = redis.call('HMGET', KEYS[3], 'wp', 'wn')
local contested = ((tonumber(s[1]) or 0) > 0 and (tonumber(s[2]) or 0) > 0) and 1 or 0
local cursors = {ARGV[8], ARGV[9]}
local function waiting_field(lane) if lane == 'premium' then return 'wp' end return 'wn' end
local function take(stream, lane, entry, redelivered)
  local sid, fields, id = entry[1], entry[2], nil
  for i = 1, #fields, 2 do if fields[i] == 'id' then id = fields[i + 1] end end
  local key = ARGV[7] .. (id or '')
  local status = id and redis.call('HGET', key, 'status')
  if not status or status == 'done' then
    -- A forgotten or finished job's entry: drop it and keep the counters right.
    redis.call('XACK', stream, ARGV[1], sid)
    redis.call('XDEL', stream, sid)
    if not status then
      if redelivered then redis.call('HINCRBY', KEYS[3], 'running', -1)
      else redis.call('HINCRBY', KEYS[3], waiting_field(lane), -1) end
    end
    return nil
  end
  local attempt = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'running')
  if redis.call('HEXISTS', key, 'started') == 0 then redis.call('HSET', key, 'started', ARGV[6]) end
  if redelivered then
    redis.call('HINCRBY', KEYS[3], 'redelivered', 1)
  else
    redis.call('HINCRBY', KEYS[3], waiting_field(lane), -1)
    redis.call('HINCRBY', KEYS[3], 'running', 1)
  end
  local h = redis.call('HMGET', key, 'work_ms', 'payload', 'secret')
  return {cursors[1], cursors[2], id, lane, h[1], h[2], attempt, h[3],
    redelivered and 1 or 0, contested}
end
local lanes = {{KEYS[1], ARGV[4]}, {KEYS[2], ARGV[5]}}
for i, l in ipairs(lanes) do
  if redis.call('EXISTS', l[1]) == 1 then
    for round = 1, tonumber(ARGV[10]) do
      local r = redis.call('XAUTOCLAIM', l[1], ARGV[1], ARGV[2], ARGV[3], cursors[i], 'COUNT', 1)
      cursors[i] = r[1]
      for _, e in ipairs(r[2]) do
        if e then
          local got = take(l[1], l[2], e, true)
          if got then return got end
        end
      end
      if cursors[i] == '0-0' then break end
    end
  else
    cursors[i] = '0-0'
  end
end
for _, l in ipairs(lanes) do
  if redis.call('EXISTS', l[1]) == 1 then
    for round = 1, 100 do
      local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', l[1], '>')
      if not r or not r[1][2][1] then break end
      local got = take(l[1], l[2], r[1][2][1], false)
      if got then return got end
    end
  end
end
return cursors
";

/// Acknowledges under a lease: the first completes the job (XACK + XDEL, counters, expiry, a
/// `d` notification), later ones count as duplicates. Returns {-1} unknown job, {-2} lease not of
/// this job, or {duplicate 0/1, HGETALL of the job}.
/// KEYS: job, premium stream, normal stream, stats. ARGV: group, attempt, secret, now µs,
/// retention s, queue, id.
pub const ACK: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
local h = redis.call('HMGET', KEYS[1], 'secret', 'attempts', 'status', 'lane', 'sid')
if h[1] ~= ARGV[3] or tonumber(ARGV[2]) > (tonumber(h[2]) or 0) then return {-2} end
redis.call('HINCRBY', KEYS[1], 'completions', 1)
local dup = 0
if h[3] == 'done' then
  dup = 1
  redis.call('HINCRBY', KEYS[4], 'duplicates', 1)
else
  local stream = KEYS[3]
  if h[4] == 'premium' then stream = KEYS[2] end
  redis.call('XACK', stream, ARGV[1], h[5])
  redis.call('XDEL', stream, h[5])
  if h[3] == 'running' then
    redis.call('HINCRBY', KEYS[4], 'running', -1)
  elseif h[4] == 'premium' then
    redis.call('HINCRBY', KEYS[4], 'wp', -1)
  else
    redis.call('HINCRBY', KEYS[4], 'wn', -1)
  end
  redis.call('HSET', KEYS[1], 'status', 'done', 'completed', ARGV[4])
  redis.call('HINCRBY', KEYS[4], 'completed', 1)
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('PUBLISH', 'cb:q:events', 'd ' .. ARGV[6] .. ' ' .. ARGV[7])
end
return {dup, redis.call('HGETALL', KEYS[1])}
";

pub fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// A flat `[field, value, …]` reply (HGETALL in RESP2, or a map in RESP3) as a map.
pub fn fields(value: &Value) -> HashMap<String, String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|pair| Some((text(pair.first()?)?, text(pair.get(1)?)?)))
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
            .collect(),
        _ => HashMap::new(),
    }
}

/// A job hash as the status view; `None` when a required field is missing (the hash is not a job).
pub fn job_view(queue: &QueueName, id: &str, hash: &HashMap<String, String>) -> Option<JobView> {
    let number = |name: &str| hash.get(name).and_then(|v| v.parse::<u64>().ok());
    Some(
        JobView {
            id: id.to_owned(),
            queue: queue.as_str().to_owned(),
            lane: Lane::parse(hash.get("lane")?)?,
            status: JobState::parse(hash.get("status")?)?,
            attempts: number("attempts")? as u32,
            completions: number("completions")? as u32,
            work_ms: number("work_ms")?,
            enqueued_at_us: number("enq")?,
            started_at_us: number("started"),
            completed_at_us: number("completed"),
            queue_wait_us: None,
            notify: hash.get("notify").and_then(|t| TopicName::parse(t).ok()),
            spooled: false,
        }
        .with_wait(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn a_job_hash_becomes_its_view() {
        let queue = TopicName::parse("q").unwrap_or_else(|e| panic!("{e}"));
        let reply = Value::Array(
            [
                "lane",
                "premium",
                "status",
                "done",
                "attempts",
                "2",
                "completions",
                "3",
                "work_ms",
                "5",
                "enq",
                "100",
                "started",
                "150",
                "completed",
                "170",
                "notify",
                "t",
            ]
            .map(bulk)
            .to_vec(),
        );
        let view = job_view(&queue, "a-1", &fields(&reply)).unwrap_or_else(|| panic!("no view"));
        assert_eq!(view.lane, Lane::Premium);
        assert_eq!(view.status, JobState::Done);
        assert_eq!((view.attempts, view.completions), (2, 3));
        assert_eq!(view.queue_wait_us, Some(50));
        assert_eq!(view.notify.map(|t| t.to_string()).as_deref(), Some("t"));
        assert!(job_view(&queue, "a-1", &HashMap::new()).is_none());
    }
}

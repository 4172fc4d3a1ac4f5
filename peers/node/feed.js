// The event feed every route shares: per topic a sequence number and the last HISTORY events, and
// an EventEmitter that tells the push routes about each new event. Payloads are relayed unchanged.
'use strict';

const { EventEmitter } = require('node:events');

const HISTORY = 1024;
const MAX_TOPICS = 1024;
const TOPIC = /^[A-Za-z0-9_-]{1,64}$/;

class FeedError extends Error {
  constructor(status, error, detail) {
    super(detail);
    this.status = status;
    this.error = error;
  }
}

class Feed extends EventEmitter {
  constructor() {
    super();
    // One listener per SSE stream and long poll is normal here.
    this.setMaxListeners(0);
    this.topics = new Map();
  }

  static checkTopic(topic) {
    if (typeof topic !== 'string' || !TOPIC.test(topic)) {
      throw new FeedError(400, 'bad_topic', `topic must match ${TOPIC}`);
    }
    return topic;
  }

  topic(name, create) {
    Feed.checkTopic(name);
    let topic = this.topics.get(name);
    if (!topic && create) {
      if (this.topics.size >= MAX_TOPICS) {
        throw new FeedError(429, 'topic_limit', `at most ${MAX_TOPICS} topics`);
      }
      topic = { seq: 0, history: [] };
      this.topics.set(name, topic);
    }
    return topic;
  }

  head(name) {
    const topic = this.topic(name, false);
    return topic ? topic.seq : 0;
  }

  publish(name, data) {
    const topic = this.topic(name, true);
    const event = { topic: name, seq: ++topic.seq, data };
    topic.history.push(event);
    if (topic.history.length > HISTORY) topic.history.shift();
    this.emit('event', event);
    return event;
  }

  // Events after the cursor, at most `limit`, with a gap when the cursor is older than history.
  read(name, after = 0, limit = 256) {
    const topic = this.topic(name, false) || { seq: 0, history: [] };
    if (after > topic.seq) {
      throw new FeedError(400, 'cursor_ahead', `cursor ${after} is ahead of the head ${topic.seq}`);
    }
    const oldest = topic.history.length ? topic.history[0].seq : topic.seq + 1;
    const gap = after + 1 < oldest && after < topic.seq ? { after, oldest } : null;
    const events = topic.history.filter((e) => e.seq > after);
    return {
      topic: name,
      head: topic.seq,
      more: events.length > limit,
      gap,
      events: events.slice(0, limit),
    };
  }

  latest(name) {
    const topic = this.topic(name, false);
    return topic && topic.history.length ? topic.history[topic.history.length - 1] : null;
  }
}

// A query or body number: a non-negative integer, or undefined when absent.
function cursor(value, name) {
  if (value === undefined || value === null || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new FeedError(400, 'bad_query', `${name} must be a non-negative integer`);
  }
  return n;
}

module.exports = { Feed, FeedError, cursor };

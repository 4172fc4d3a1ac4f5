// Socket.IO on the feed, the same contract as commbench's `/socket.io/`: emit `subscribe`
// {topic, after?} (ack {topic, after, head}; the backlog after the cursor follows), `unsubscribe`
// {topic}, `publish` {topic, payload} (ack {topic, seq}); events arrive as `event` with the event
// JSON. A topic is a room. With REDIS_URL the rooms span every instance through
// @socket.io/redis-adapter.
'use strict';

const { Server } = require('socket.io');
const { FeedError, cursor } = require('./feed');

async function attachSocketIo(server, feed, { redisUrl, maxPayload = 64 * 1024 } = {}) {
  const io = new Server(server, { serveClient: false, maxHttpBufferSize: maxPayload });
  const redis = [];
  if (redisUrl) {
    const { createClient } = require('redis');
    const { createAdapter } = require('@socket.io/redis-adapter');
    const pubClient = createClient({ url: redisUrl });
    const subClient = pubClient.duplicate();
    await Promise.all([pubClient.connect(), subClient.connect()]);
    io.adapter(createAdapter(pubClient, subClient));
    redis.push(pubClient, subClient);
  }

  // Answers with the ack when the client asked for one, else with an event.
  function reply(socket, ack, event, value) {
    if (typeof ack === 'function') ack(value);
    else socket.emit(event, value);
  }

  function guarded(socket, handler) {
    return (arg, ack) => {
      try {
        handler(arg || {}, ack);
      } catch (err) {
        const body = err instanceof FeedError
          ? { type: 'error', error: err.error, detail: err.message }
          : { type: 'error', error: 'bad_message', detail: String(err.message || err) };
        reply(socket, ack, 'error', body);
      }
    };
  }

  io.on('connection', (socket) => {
    socket.on('subscribe', guarded(socket, ({ topic, after }, ack) => {
      const start = cursor(after, 'after') ?? feed.head(topic);
      const page = feed.read(topic, start, Infinity);
      socket.join(topic);
      reply(socket, ack, 'subscribed', { topic, after: start, head: page.head });
      if (page.gap) socket.emit('gap', { topic, ...page.gap });
      for (const event of page.events) socket.emit('event', event);
    }));
    socket.on('unsubscribe', guarded(socket, ({ topic }, ack) => {
      socket.leave(topic);
      reply(socket, ack, 'unsubscribed', { topic });
    }));
    socket.on('publish', guarded(socket, ({ topic, payload }, ack) => {
      if (typeof payload !== 'string') throw new FeedError(400, 'bad_message', 'payload must be a string');
      const event = feed.publish(topic, payload);
      reply(socket, ack, 'published', { topic, seq: event.seq });
    }));
  });

  // Every event this instance publishes goes to its room, on every instance with the adapter.
  feed.on('event', (event) => io.to(event.topic).emit('event', event));

  return {
    async close() {
      await io.close();
      await Promise.all(redis.map((client) => client.quit().catch(() => {})));
    },
  };
}

module.exports = { attachSocketIo };

// The design notes' patterns the way a Node developer writes them: Express for request-response
// and polling, a held request for long polling, SSE, a `ws` chat broadcast and Socket.IO (with
// @socket.io/redis-adapter when REDIS_URL is set), all on one feed. `POST /publish/:topic` relays
// the body unchanged to every pattern. HOST/PORT from the environment (PORT=0: any free port); the
// bound address is printed as `listening on http://HOST:PORT`. SIGTERM/SIGINT stop it gracefully.
'use strict';

const http = require('node:http');
const express = require('express');
const { Feed, FeedError, cursor } = require('./feed');
const { attachChat } = require('./chat');
const { attachSocketIo } = require('./socketio');

const HOST = process.env.HOST || '127.0.0.1';
const PORT = Number(process.env.PORT ?? 8080);
const REDIS_URL = process.env.REDIS_URL || '';
const MAX_BODY = 64 * 1024;
const HEARTBEAT_MS = 15000;
const MAX_WAIT_MS = 60000;
const GRACE_MS = 5000;

const feed = new Feed();
const app = express();
app.disable('x-powered-by');

// Request-response: hello and ping-pong.
app.get('/hello', (req, res) => res.type('text').send('world'));
app.post('/hello', express.text({ type: () => true }), (req, res) => {
  if (req.body === 'ping') res.type('text').send('pong');
  else res.status(400).json({ error: 'bad_message', detail: 'send ping' });
});

// Publishing: the body is the payload, relayed unchanged.
app.post('/publish/:topic', express.text({ type: () => true, limit: MAX_BODY }), (req, res) => {
  const payload = typeof req.body === 'string' ? req.body : '';
  const event = feed.publish(req.params.topic, payload);
  res.json({ topic: event.topic, seq: event.seq });
});

// Short polling with a cursor.
app.get('/poll/:topic', (req, res) => {
  const limit = cursor(req.query.limit, 'limit') || 256;
  res.json(feed.read(req.params.topic, cursor(req.query.after, 'after') || 0, limit));
});

// Latest-state polling: no cursor, just the newest event (the `/bitcoin` price example).
app.get('/latest/:topic', (req, res) => {
  const topic = Feed.checkTopic(req.params.topic);
  res.json({ topic, latest: feed.latest(topic) });
});
app.get('/bitcoin', (req, res) => {
  const latest = feed.latest('bitcoin');
  res.json({ price: latest ? latest.data : null, seq: latest ? latest.seq : 0 });
});

// Long polling: held until an event after the cursor exists or the timeout passes.
const heldPolls = new Set();
app.get('/longpoll/:topic', (req, res) => {
  const topic = Feed.checkTopic(req.params.topic);
  const after = cursor(req.query.after, 'after') || 0;
  const timeout = Math.min(cursor(req.query.timeout_ms, 'timeout_ms') ?? 30000, MAX_WAIT_MS);
  const limit = cursor(req.query.limit, 'limit') || 256;
  const page = feed.read(topic, after, limit);
  if (page.events.length > 0 || page.gap) return res.json(page);
  const held = {
    answer: () => {
      clearTimeout(held.timer);
      feed.off('event', onEvent);
      heldPolls.delete(held);
      if (!res.writableEnded) res.json(feed.read(topic, after, limit));
    },
  };
  const onEvent = (event) => {
    if (event.topic === topic) held.answer();
  };
  held.timer = setTimeout(held.answer, timeout);
  feed.on('event', onEvent);
  heldPolls.add(held);
  res.on('close', () => {
    clearTimeout(held.timer);
    feed.off('event', onEvent);
    heldPolls.delete(held);
  });
});

// Server-sent events, resuming from Last-Event-ID (or ?after=).
const streams = new Set();
app.get('/sse/:topic', (req, res) => {
  const topic = Feed.checkTopic(req.params.topic);
  const resume = req.get('last-event-id') ?? req.query.after;
  const after = cursor(resume, 'Last-Event-ID') ?? feed.head(topic);
  const page = feed.read(topic, after, Infinity);
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    Connection: 'keep-alive',
  });
  res.write(`retry: 1000\nevent: subscribed\ndata: ${JSON.stringify({ topic, after, head: page.head })}\n\n`);
  if (page.gap) res.write(`event: gap\ndata: ${JSON.stringify({ topic, ...page.gap })}\n\n`);
  const send = (event) => res.write(`id: ${event.seq}\ndata: ${JSON.stringify(event)}\n\n`);
  page.events.forEach(send);
  const onEvent = (event) => {
    if (event.topic === topic) send(event);
  };
  const heartbeat = setInterval(() => res.write(': heartbeat\n\n'), HEARTBEAT_MS);
  feed.on('event', onEvent);
  streams.add(res);
  res.on('close', () => {
    clearInterval(heartbeat);
    feed.off('event', onEvent);
    streams.delete(res);
  });
});

app.use((req, res) => res.status(404).json({ error: 'not_found', detail: `no route for ${req.path}` }));
// Express's error handler signature needs all four arguments.
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => {
  if (err instanceof FeedError) return res.status(err.status).json({ error: err.error, detail: err.message });
  const status = err.status || err.statusCode || 500;
  res.status(status).json({ error: status === 413 ? 'payload_too_large' : 'bad_request', detail: err.message });
});

async function main() {
  const server = http.createServer(app);
  const chat = attachChat(server, feed, { maxPayload: MAX_BODY });
  const socketio = await attachSocketIo(server, feed, { redisUrl: REDIS_URL, maxPayload: MAX_BODY });
  server.listen(PORT, HOST, () => {
    const { address, port } = server.address();
    console.log(`listening on http://${address}:${port}`);
  });

  let stopping = false;
  async function stop() {
    if (stopping) return;
    stopping = true;
    server.close();
    for (const held of heldPolls) held.answer();
    for (const res of streams) res.end();
    // Whatever is still open after the grace period (a client that never answers a close) is cut.
    setTimeout(() => {
      server.closeAllConnections();
      process.exit(0);
    }, GRACE_MS).unref();
    chat.close();
    await socketio.close();
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});

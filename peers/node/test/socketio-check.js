// Drives a Socket.IO server with the real `socket.io-client`: subscribe with an ack, publish over a
// second socket, receive every event in order, leave, let more be published, resume after the
// cursor, and get an error ack for a bad topic. Works against commbench's server and this peer.
//
//   node test/socketio-check.js http://127.0.0.1:8080 [events] [publish-base]
//
// With a publish base (another instance of the peer on the same REDIS_URL) the publishing socket
// connects there and only the live part runs: the events reach the listener through the adapter.
//
// Prints one JSON line with what it saw; exits 1 with the reason on the first mismatch.
'use strict';

const { io } = require('socket.io-client');

const base = process.argv[2];
const N = Number(process.argv[3] || 50);
const publishBase = process.argv[4] || base;
const topic = `check-${process.pid}`;

function fail(reason) {
  console.error(`socketio-check: ${reason}`);
  process.exit(1);
}

function expect(condition, reason) {
  if (!condition) fail(reason);
}

// commbench's server speaks Engine.IO over WebSocket only, so no polling first.
function connect(url = base) {
  return new Promise((resolve, reject) => {
    const socket = io(url, { transports: ['websocket'], reconnection: false, timeout: 10000 });
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', reject);
  });
}

// Resolves with the next `count` events of the topic.
function collect(socket, count) {
  return new Promise((resolve) => {
    const seen = [];
    const onEvent = (event) => {
      if (event.topic !== topic) return;
      seen.push(event);
      if (seen.length === count) {
        socket.off('event', onEvent);
        resolve(seen);
      }
    };
    socket.on('event', onEvent);
  });
}

function checkRun(events, firstSeq, prefix) {
  events.forEach((event, i) => {
    expect(event.seq === firstSeq + i, `expected seq ${firstSeq + i}, got ${JSON.stringify(event)}`);
    expect(event.data === `${prefix} ${i}`, `wrong data ${JSON.stringify(event)}`);
  });
}

async function main() {
  expect(base, 'usage: socketio-check.js BASE_URL [events]');
  const timer = setTimeout(() => fail('timed out after 30 s'), 30000);

  const listener = await connect();
  const ack = await listener.timeout(5000).emitWithAck('subscribe', { topic });
  expect(ack.topic === topic && ack.after === 0 && ack.head === 0, `subscribe ack ${JSON.stringify(ack)}`);

  const talker = await connect(publishBase);
  const arriving = collect(listener, N);
  for (let i = 0; i < N; i++) {
    const published = await talker.timeout(5000).emitWithAck('publish', { topic, payload: `live ${i}` });
    expect(published.topic === topic && published.seq === i + 1, `publish ack ${JSON.stringify(published)}`);
  }
  const live = await arriving;
  checkRun(live, 1, 'live');
  const cursor = live[live.length - 1].seq;
  listener.disconnect();
  if (publishBase !== base) {
    talker.disconnect();
    clearTimeout(timer);
    console.log(JSON.stringify({ ok: true, live: live.length, across: publishBase }));
    return;
  }

  // Published while nobody listens; the resumed subscription replays it from the cursor.
  for (let i = 0; i < 5; i++) {
    await talker.timeout(5000).emitWithAck('publish', { topic, payload: `missed ${i}` });
  }
  const resumed = await connect();
  const replaying = collect(resumed, 5);
  const again = await resumed.timeout(5000).emitWithAck('subscribe', { topic, after: cursor });
  expect(again.after === cursor && again.head === cursor + 5, `resume ack ${JSON.stringify(again)}`);
  checkRun(await replaying, cursor + 1, 'missed');

  const refused = await resumed.timeout(5000).emitWithAck('subscribe', { topic: 'no spaces' });
  expect(refused.error === 'bad_topic' && refused.detail, `bad topic answer ${JSON.stringify(refused)}`);

  resumed.disconnect();
  talker.disconnect();
  clearTimeout(timer);
  console.log(JSON.stringify({ ok: true, live: live.length, resumed: 5, transport: 'websocket' }));
}

main().catch((err) => fail(err && err.stack ? err.stack : String(err)));

// Follows a commbench SSE stream through a reference EventSource (npm `eventsource`, on Node's own
// HTTP client), takes COUNT events, closes, and prints
// {"subscribed": {...}, "ids": [...], "events": [...]} as JSON (each event's data parsed).
// Usage: node sse.mjs http://127.0.0.1:PORT/sse/TOPIC COUNT
import { EventSource } from 'eventsource';

const [url, count] = process.argv.slice(2);
const wanted = Number(count);

// Bounded: a client that never gets its events fails instead of hanging the test.
const timer = setTimeout(() => {
  console.error('timed out waiting for events');
  process.exit(2);
}, 10_000);

const source = new EventSource(url);
let subscribed = null;
const ids = [];
const events = [];
await new Promise((resolve, reject) => {
  source.addEventListener('subscribed', (event) => {
    subscribed = JSON.parse(event.data);
  });
  source.onmessage = (event) => {
    ids.push(event.lastEventId);
    events.push(JSON.parse(event.data));
    if (events.length >= wanted) {
      resolve();
    }
  };
  // EventSource reconnects by itself; here any error is a failure.
  source.onerror = (error) => reject(new Error(`stream error: ${error.message ?? error.type}`));
});
source.close();
clearTimeout(timer);
console.log(JSON.stringify({ subscribed, ids, events }));

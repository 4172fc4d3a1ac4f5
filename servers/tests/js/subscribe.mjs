// Subscribes to a commbench topic through the reference graphql-transport-ws client (npm
// `graphql-ws`), takes COUNT events, completes, and prints {"seqs": [...], "data": [...]} as JSON.
// Usage: node subscribe.mjs ws://127.0.0.1:PORT/graphql/ws TOPIC COUNT
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, topic, count] = process.argv.slice(2);
const wanted = Number(count);
const query = 'subscription($t: String!) { events(topic: $t) { event { seq data } } }';

// Bounded: a client that never gets its events fails instead of hanging the test.
const timer = setTimeout(() => {
  console.error('timed out waiting for events');
  process.exit(2);
}, 10_000);

const client = createClient({ url, webSocketImpl: WebSocket, retryAttempts: 0 });
const seqs = [];
const data = [];
await new Promise((resolve, reject) => {
  const unsubscribe = client.subscribe(
    { query, variables: { t: topic } },
    {
      next: (result) => {
        if (result.errors) {
          reject(new Error(JSON.stringify(result.errors)));
          return;
        }
        seqs.push(result.data.events.event.seq);
        data.push(result.data.events.event.data);
        if (seqs.length >= wanted) {
          unsubscribe();
          resolve();
        }
      },
      error: (error) =>
        reject(error instanceof Error ? error : new Error(`closed: ${error.code} ${error.reason}`)),
      complete: resolve,
    },
  );
});
clearTimeout(timer);
await client.dispose();
console.log(JSON.stringify({ seqs, data }));

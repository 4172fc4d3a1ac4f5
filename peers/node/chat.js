// The `ws` chat broadcast: `/ws?topic=room` joins a room (default `lobby`). Everyone else in the
// room hears "UserN just connected" and "UserN says …" for each message; events published to the
// room's topic are broadcast as their JSON text. `joins=false` skips the join notices for that
// client (a pure listener, like commbench's push clients).
'use strict';

const { WebSocketServer, WebSocket } = require('ws');

function attachChat(server, feed, { path = '/ws', maxPayload = 64 * 1024 } = {}) {
  const wss = new WebSocketServer({ noServer: true, maxPayload });
  const rooms = new Map();
  let users = 0;

  function broadcast(room, text, except) {
    for (const client of rooms.get(room) || []) {
      if (client !== except && client.readyState === WebSocket.OPEN) {
        client.send(text);
      }
    }
  }

  // Only this path: Socket.IO handles its own upgrades on the same server.
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname !== path) return;
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, url));
  });

  wss.on('connection', (ws, url) => {
    const room = url.searchParams.get('topic') || 'lobby';
    const user = `User${++users}`;
    ws.joins = url.searchParams.get('joins') !== 'false';
    if (!rooms.has(room)) rooms.set(room, new Set());
    rooms.get(room).add(ws);
    for (const client of rooms.get(room)) {
      if (client !== ws && client.joins && client.readyState === WebSocket.OPEN) {
        client.send(`${user} just connected`);
      }
    }
    ws.on('message', (data) => broadcast(room, `${user} says ${data}`, ws));
    ws.on('close', () => {
      const members = rooms.get(room);
      members.delete(ws);
      if (members.size === 0) rooms.delete(room);
    });
    ws.on('error', () => ws.terminate());
  });

  feed.on('event', (event) => broadcast(event.topic, JSON.stringify(event)));

  return {
    close() {
      for (const client of wss.clients) client.close(1001, 'server shutting down');
      wss.close();
    },
  };
}

module.exports = { attachChat };

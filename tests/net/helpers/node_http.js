// tests/net/test_apps.sh: a node.js HTTP server and client (stock node, core modules only).
//   node node_http.js server IP PORT
//       GET / answers "hello\n" (fixed length, so ab counts no length failures) and counts
//       it; GET /count answers that count; GET /big?n=N answers N bytes, byte i = i*7 & 255;
//       POST /echo answers the request body. Prints "listening" once bound.
//   node node_http.js client IP PORT K C P
//       K GETs of / over a keep-alive agent (10 sockets), then C GETs each on a new
//       connection, then P parallel POSTs of 256 KiB of random bytes to /echo, each on its
//       own connection; prints "good G of T" (G answered 200 with the right body).
'use strict';
const http = require('http');
const crypto = require('crypto');
const [mode, ip, portArg] = process.argv.slice(2);
const port = Number(portArg);

function server() {
  let hellos = 0;
  http.createServer((req, res) => {
    if (req.method === 'POST') {
      const parts = [];
      req.on('data', (d) => parts.push(d));
      req.on('end', () => res.end(Buffer.concat(parts)));
      return;
    }
    const big = /^\/big\?n=(\d+)$/.exec(req.url);
    if (big) {
      const b = Buffer.alloc(Number(big[1]));
      for (let i = 0; i < b.length; i++) b[i] = (i * 7) & 255;
      res.end(b);
    } else if (req.url === '/count') {
      res.end(String(hellos));
    } else {
      hellos++;
      res.end('hello\n');
    }
  }).listen(port, ip, () => console.log('listening'));
}

function request(opts, body) {
  return new Promise((resolve, reject) => {
    const r = http.request({ host: ip, port, ...opts }, (res) => {
      const parts = [];
      res.on('data', (d) => parts.push(d));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(parts) }));
    });
    r.on('error', reject);
    r.setTimeout(15000, () => r.destroy(new Error('timeout')));
    r.end(body);
  });
}

async function client(k, c, p) {
  let good = 0;
  const hello = (r) => r.status === 200 && r.body.toString() === 'hello\n';
  const agent = new http.Agent({ keepAlive: true, maxSockets: 10 });
  const ka = await Promise.all(Array.from({ length: k }, () => request({ agent, path: '/' })));
  good += ka.filter(hello).length;
  agent.destroy();
  for (let i = 0; i < c; i++) if (hello(await request({ agent: false, path: '/' }))) good++;
  const bodies = Array.from({ length: p }, () => crypto.randomBytes(256 * 1024));
  const echoed = await Promise.all(
    bodies.map((b) => request({ method: 'POST', path: '/echo', agent: false }, b)));
  echoed.forEach((r, i) => { if (r.status === 200 && r.body.equals(bodies[i])) good++; });
  console.log(`good ${good} of ${k + c + p}`);
}

if (mode === 'server') {
  server();
} else {
  const [k, c, p] = process.argv.slice(5).map(Number);
  client(k, c, p).catch((e) => { console.log(`error ${e.message}`); process.exit(1); });
}

// A small Node.js HTTP service for Hearth's process upstream: it listens on
// the loopback port Hearth gives it in $PORT and answers which process
// served the request. /healthz is its readiness probe.
const http = require('http');

const port = Number(process.env.PORT);
if (!port) {
  console.error('PORT is not set: run me with `reverse_proxy { dynamic process node server.js }`');
  process.exit(2);
}

const server = http.createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.end('ok\n');
    return;
  }
  res.writeHead(200, { 'Content-Type': 'application/json' });
  res.end(JSON.stringify({ service: 'servicec', pid: process.pid, path: req.url }) + '\n');
});

server.listen(port, '127.0.0.1', () => console.log(`servicec listening on 127.0.0.1:${port}`));

// stop taking connections on SIGTERM, finish the requests in flight, exit
process.on('SIGTERM', () => server.close(() => process.exit(0)));

// tests/net/test_apps.sh: node.js's cluster module, as `node node_cluster.js IP PORT`.
// The primary starts two workers before it makes any socket (cluster.fork()); each worker
// listens on IP:PORT through the primary, which accepts the connections and passes them to
// the workers in turn (round robin, SCM_RIGHTS over the IPC channel). Each answers
// "worker N\n". The primary prints "listening" once both workers listen.
'use strict';
const cluster = require('cluster');
const http = require('http');
const [ip, port] = [process.argv[2], Number(process.argv[3])];
if (cluster.isPrimary) {
  if (!process.env.NODE_CLUSTER_SCHED_POLICY) cluster.schedulingPolicy = cluster.SCHED_RR;
  let up = 0;
  for (let i = 1; i <= 2; i++) cluster.fork({ WORKER_N: String(i) });
  cluster.on('listening', () => { if (++up === 2) console.log('listening'); });
  cluster.on('exit', (w, code) => console.log(`worker exited ${code}`));
} else {
  http.createServer((req, res) => res.end(`worker ${process.env.WORKER_N}\n`))
    .listen(port, ip);
}

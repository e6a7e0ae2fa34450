#!/usr/bin/env node
/**
 * The floor: the least a Node.js policy server can do. It frames requests (an empty line ends one)
 * and answers `action=DUNNO` without reading a single attribute: no decision, no metrics, no log.
 * What the daemon costs above this is the price of its real work.
 *
 *   node bench/floor.mjs PORT     (prints "ready" when listening on 127.0.0.1:PORT)
 */
import net from 'node:net';

const REPLY = Buffer.from('action=DUNNO\n\n');
const port = Number(process.argv[2] ?? 0);

const server = net.createServer({ allowHalfOpen: true }, (socket) => {
  socket.setNoDelay(true);
  // True when the last byte seen was a LF: a request ends at LF LF, possibly across chunks.
  let afterLf = false;
  socket.on('data', (chunk) => {
    let replies = 0;
    for (let i = chunk.indexOf(0x0a); i !== -1; i = chunk.indexOf(0x0a, i + 1)) {
      if (afterLf && i === 0) replies++;
      else if (i > 0 && chunk[i - 1] === 0x0a) replies++;
      afterLf = false;
    }
    afterLf = chunk[chunk.length - 1] === 0x0a;
    if (replies === 1) socket.write(REPLY);
    else if (replies > 1) socket.write(Buffer.concat(Array(replies).fill(REPLY)));
  });
  // Exim-style clients half-close after their request (already answered): close our side too.
  socket.on('end', () => socket.end());
  socket.on('error', () => {});
});

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`ready ${server.address().port}\n`);
});
process.on('SIGTERM', () => process.exit(0));

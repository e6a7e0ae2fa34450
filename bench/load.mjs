#!/usr/bin/env node
/**
 * Load generator: N connections, one request in flight per connection (as each Postfix smtpd process
 * does), or a new connection per request (as Exim's ${readsocket} does: write, half-close, read to
 * EOF). Every answer is checked against the expected first word. Latencies go into an HDR histogram.
 *
 *   node bench/load.mjs --config FILE.json      (keys: see DEFAULTS)
 *
 * Prints `{"event":"measure_start"}` when the warm-up ends and `{"event":"measure_end"}` when the
 * measured window ends (the orchestrator samples the server's CPU at those moments), then one JSON
 * result line. Stops by itself: bounded by duration and by maxRequests.
 */
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { createHistogram } from 'node:perf_hooks';

const DEFAULTS = {
  host: '127.0.0.1',
  port: 0,
  /** policy | milter | socketmap */
  protocol: 'policy',
  /** persistent | newconn */
  mode: 'persistent',
  connections: 16,
  durationMs: 8000,
  warmupMs: 1000,
  /** Also keep warming up until every corpus item was answered once (a request cache's first pass). */
  warmupFullPass: false,
  /**
   * Longest full-pass warm-up. A cache miss costs postfwd1 ~7 ms of CPU: its first pass over 1 000
   * requests needs minutes when the machine is busy, and a window opened before it ends measures misses.
   */
  warmupFullPassMaxMs: 600_000,
  /** Hard cap on requests in the measured window (0: none). */
  maxRequests: 0,
  /** Total requests per second across connections (0: as fast as answers come). */
  rate: 0,
  corpus: '',
  /** A request unanswered this long is a failure (the connection is dropped and reopened). */
  timeoutMs: 5000,
  /** Per-slot latency maxima and counts over the measured window. */
  timelineMs: 500,
};

const config = { ...DEFAULTS, ...JSON.parse(readFileSync(argValue('--config'), 'utf8')) };
if (!['127.0.0.1', 'localhost', '::1'].includes(config.host)) throw new Error('the benchmark only talks to the loopback');
const corpus = JSON.parse(readFileSync(config.corpus, 'utf8'));
const wire = corpus.wire.map((b) => Buffer.from(b, 'base64'));
const expect = corpus.expect;
const kinds = corpus.kinds ?? [];
const n = wire.length;
if (n === 0) throw new Error('empty corpus');

const OPTNEG = Buffer.from(corpus.optneg ?? '', 'base64');
const MILTER_TAIL = Buffer.from(corpus.milterTail ?? '', 'base64');

// Nanoseconds, up to 60 s: a slow answer must count, not fall off the scale.
const histogram = createHistogram({ lowest: 1, highest: 60_000_000_000, figures: 3 });
let phase = 'warmup';
let measuredStart = 0n;
let measuredEnd = 0n;
let cpuAtStart = null;
let cpuInWindow = null;
const slotNs = config.timelineMs * 1e6;
let answered = 0;
let wrong = 0;
let failed = 0;
let warmupAnswered = 0;
const wrongSamples = [];
const seen = new Uint8Array(n);
let seenCount = 0;
const timeline = [];
let stopped = false;
let open = 0;

function argValue(name) {
  const i = process.argv.indexOf(name);
  if (i < 0 || i + 1 >= process.argv.length) throw new Error(`usage: load.mjs ${name} FILE`);
  return process.argv[i + 1];
}

function now() {
  return process.hrtime.bigint();
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** Records one answer: `got` is its first word (DUNNO, 550, 451, ...). */
function record(item, got, startedAt) {
  const end = now();
  if (!seen[item]) {
    seen[item] = 1;
    seenCount++;
  }
  if (phase !== 'measure') {
    if (phase === 'warmup') warmupAnswered++;
    return;
  }
  const ns = end - startedAt;
  histogram.record(ns > 0n ? ns : 1n);
  answered++;
  if (got !== expect[item]) {
    wrong++;
    if (wrongSamples.length < 10) wrongSamples.push({ item, kind: kinds[item], expected: expect[item], got });
  }
  if (config.timelineMs > 0) {
    const slot = Math.floor(Number(end - measuredStart) / slotNs);
    const s = (timeline[slot] ??= { n: 0, maxUs: 0, failed: 0 });
    s.n++;
    const us = Number(ns / 1000n);
    if (us > s.maxUs) s.maxUs = us;
  }
  if (config.maxRequests > 0 && answered >= config.maxRequests) finish();
}

function recordFailure(why) {
  if (phase !== 'measure') return;
  failed++;
  if (wrongSamples.length < 10) wrongSamples.push({ failure: why });
  if (config.timelineMs > 0) {
    const slot = Math.floor(Number(now() - measuredStart) / slotNs);
    (timeline[slot] ??= { n: 0, maxUs: 0, failed: 0 }).failed++;
  }
}

/** Policy reply: `action=<word> ...\n\n` → its first word. */
function policyWord(buf) {
  if (buf.latin1Slice(0, 7) !== 'action=') return `?${buf.latin1Slice(0, 20)}`;
  let end = 7;
  while (end < buf.length && buf[end] !== 0x20 && buf[end] !== 0x0a) end++;
  return buf.latin1Slice(7, end);
}

/** Socketmap reply payload → its status word; `OK REJECT ...` → REJECT (a recipient refusal). */
function socketmapWord(payload) {
  const text = payload.latin1Slice(0, Math.min(payload.length, 16));
  if (text.startsWith('OK REJECT')) return 'REJECT';
  const space = text.indexOf(' ');
  return space < 0 ? text : text.slice(0, space);
}

/** Milter reply packet → the policy-style first word (CONTINUE = DUNNO). */
function milterWord(pkt) {
  const cmd = pkt[4];
  if (cmd === 0x63) return 'DUNNO'; // c
  if (cmd === 0x79) return pkt.latin1Slice(5, 8); // y: "550 5.7.1 ..."
  if (cmd === 0x74) return '451'; // t
  if (cmd === 0x72) return '550'; // r
  return `?${String.fromCharCode(cmd)}`;
}

let nextRateSlot = 0n;
function rateDelayMs() {
  if (config.rate <= 0) return 0;
  const interval = BigInt(Math.round(1e9 / config.rate));
  const t = now();
  if (nextRateSlot < t) nextRateSlot = t;
  const wait = nextRateSlot - t;
  nextRateSlot += interval;
  return Number(wait / 1_000_000n);
}

/** One persistent connection, one request at a time; reconnects after a failure. */
function persistent(index) {
  let item = Math.floor((index * n) / config.connections) % n;
  let current = -1;
  let startedAt = 0n;
  let buf = null;
  let timer = null;
  let negotiated = config.protocol !== 'milter';
  let firstTransaction = true;
  const socket = net.connect({ host: config.host, port: config.port });
  open++;
  socket.setNoDelay(true);
  socket.on('connect', () => (negotiated ? send() : socket.write(OPTNEG)));
  socket.on('error', () => {});
  socket.on('close', () => {
    open--;
    clearTimeout(timer);
    if (current >= 0) recordFailure('connection closed with a request in flight');
    if (!stopped) setTimeout(() => persistent(index), 10);
    else maybeExit();
  });
  socket.on('data', (chunk) => {
    buf = buf === null ? chunk : Buffer.concat([buf, chunk]);
    if (config.protocol === 'milter') {
      if (buf.length < 4) return;
      const len = buf.readUInt32BE(0);
      if (buf.length < 4 + len) return;
      const pkt = buf;
      buf = null;
      if (pkt.length > 4 + len) recordFailure('more than one reply');
      if (!negotiated) {
        negotiated = true;
        send();
        return;
      }
      complete(milterWord(pkt));
    } else if (config.protocol === 'socketmap') {
      const colon = buf.indexOf(0x3a);
      if (colon < 0) return;
      const len = Number(buf.latin1Slice(0, colon));
      if (buf.length < colon + len + 2) return;
      const reply = buf;
      buf = null;
      if (reply.length > colon + len + 2) recordFailure('more than one reply');
      complete(socketmapWord(reply.subarray(colon + 1, colon + 1 + len)));
    } else {
      if (buf.length < 2 || buf[buf.length - 1] !== 0x0a || buf[buf.length - 2] !== 0x0a) return;
      const reply = buf;
      buf = null;
      if (reply.indexOf('\n\n') !== reply.length - 2) recordFailure('more than one reply');
      complete(policyWord(reply));
    }
  });

  function complete(word) {
    clearTimeout(timer);
    const it = current;
    current = -1;
    record(it, word, startedAt);
    const delay = rateDelayMs();
    if (delay > 0) setTimeout(send, delay);
    else send();
  }

  function send() {
    if (stopped) {
      if (config.protocol === 'milter')
        socket.end(Buffer.from([0, 0, 0, 1, 0x51])); // QUIT
      else socket.end();
      return;
    }
    current = item;
    item = (item + 1) % n;
    startedAt = now();
    let payload = wire[current];
    if (config.protocol === 'milter' && !firstTransaction) payload = Buffer.concat([MILTER_TAIL, payload]);
    firstTransaction = false;
    socket.write(payload);
    timer = setTimeout(() => {
      recordFailure(`no answer within ${config.timeoutMs} ms`);
      current = -1;
      socket.destroy();
    }, config.timeoutMs);
  }
}

/** A new connection per request: write, half-close, read the answer to EOF (Exim's readsocket). */
function oneShot(index) {
  let item = Math.floor((index * n) / config.connections) % n;
  open++;
  const loop = () => {
    if (stopped) {
      open--;
      maybeExit();
      return;
    }
    const it = item;
    item = (item + 1) % n;
    const startedAt = now();
    const chunks = [];
    let done = false;
    const socket = net.connect({ host: config.host, port: config.port });
    const timer = setTimeout(() => {
      if (!done) {
        done = true;
        recordFailure(`no answer within ${config.timeoutMs} ms`);
        socket.destroy();
        setImmediate(loop);
      }
    }, config.timeoutMs);
    socket.setNoDelay(true);
    socket.on('connect', () => socket.end(wire[it]));
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => {});
    socket.on('close', () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const reply = Buffer.concat(chunks);
      if (reply.length < 2 || reply.indexOf('\n\n') !== reply.length - 2) recordFailure('no complete reply before EOF');
      else record(it, policyWord(reply), startedAt);
      const delay = rateDelayMs();
      if (delay > 0) setTimeout(loop, delay);
      else setImmediate(loop);
    });
  };
  loop();
}

function startMeasuring() {
  if (phase !== 'warmup') return;
  phase = 'measure';
  measuredStart = now();
  cpuAtStart = process.cpuUsage();
  emit({ event: 'measure_start' });
  setTimeout(finish, config.durationMs);
}

function finish() {
  if (phase !== 'measure') return;
  measuredEnd = now();
  cpuInWindow = process.cpuUsage(cpuAtStart);
  phase = 'done';
  emit({ event: 'measure_end' });
  stopped = true;
  // Connections finish their request in flight and close; a hard stop in case one does not.
  setTimeout(report, 2000).unref();
  maybeExit();
}

let reported = false;
function maybeExit() {
  if (stopped && open === 0) report();
}

function report() {
  if (reported) return;
  reported = true;
  const seconds = Number(measuredEnd - measuredStart) / 1e9;
  const ms = (p) => (answered === 0 ? null : histogram.percentile(p) / 1e6);
  emit({
    event: 'result',
    protocol: config.protocol,
    mode: config.mode,
    connections: config.connections,
    seconds,
    requests: answered,
    rps: answered / seconds,
    wrong,
    failed,
    wrongSamples,
    warmupAnswered,
    corpusCovered: seenCount / n,
    // Near 100: the generator, not the server, may be what limits this row.
    loadGenCpuPct: cpuInWindow === null ? null : (cpuInWindow.user + cpuInWindow.system) / 1e4 / seconds,
    latencyMs: {
      p50: ms(50),
      p90: ms(90),
      p99: ms(99),
      p999: ms(99.9),
      max: answered === 0 ? null : histogram.max / 1e6,
      mean: answered === 0 ? null : histogram.mean / 1e6,
    },
    timeline:
      config.timelineMs > 0
        ? { slotMs: config.timelineMs, slots: Array.from(timeline, (s) => s ?? { n: 0, maxUs: 0, failed: 0 }) }
        : null,
  });
  process.exit(0);
}

const startedAt = Date.now();
for (let i = 0; i < config.connections; i++) (config.mode === 'newconn' ? oneShot : persistent)(i);
const warmupCheck = setInterval(() => {
  const elapsed = Date.now() - startedAt;
  // Bounded: a cache warm-up pass that cannot finish in warmupFullPassMaxMs is given up (said) and measured anyway.
  if (elapsed >= config.warmupMs && (!config.warmupFullPass || seenCount === n || elapsed > config.warmupFullPassMaxMs)) {
    if (config.warmupFullPass && seenCount < n)
      process.stderr.write(
        `[load] warm-up pass cut short: ${seenCount}/${n} requests answered once; the window measures cache misses\n`,
      );
    clearInterval(warmupCheck);
    startMeasuring();
  }
}, 20);

import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  backoffDelay,
  debounce,
  DEFAULT_BACKOFF,
  eventsUrl,
  ISocket,
  ITimers,
  IWorkspaceEvent,
  parseEvent,
  staleAfter,
  WorkspaceEvents
} from '../src/events';

const NO_JITTER = { ...DEFAULT_BACKOFF, jitter: 0 };

test('the delay doubles from the first attempt and stops at the cap', () => {
  const delays = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(n => backoffDelay(n, NO_JITTER));
  assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoffDelay(1000, NO_JITTER), 30000);
  assert.equal(backoffDelay(-3, NO_JITTER), 500);
});

test('jitter takes a random share off each delay, never adds to it', () => {
  const half = { ...DEFAULT_BACKOFF, jitter: 0.5 };
  assert.equal(backoffDelay(3, half, () => 0), 4000);
  assert.equal(backoffDelay(3, half, () => 0.5), 3000);
  assert.equal(backoffDelay(3, half, () => 0.999999), 2000);
  for (let i = 0; i < 200; i++) {
    const d = backoffDelay(10, half);
    assert.ok(d >= 15000 && d <= 30000, String(d));
  }
});

test('two tabs that lost the server at the same time come back at different times', () => {
  const seen = new Set<number>();
  for (let i = 0; i < 50; i++) {
    seen.add(backoffDelay(4, DEFAULT_BACKOFF));
  }
  assert.ok(seen.size > 10, `only ${seen.size} distinct delays`);
});

test('the URL is under wsUrl, with the token only when the settings append it', () => {
  assert.equal(
    eventsUrl({ wsUrl: 'ws://h:8888/user/a/', token: 't k', appendToken: true }),
    'ws://h:8888/user/a/codeyard/api/events?token=t%20k'
  );
  assert.equal(
    eventsUrl({ wsUrl: 'wss://h/user/a', token: 'tok', appendToken: false }),
    'wss://h/user/a/codeyard/api/events'
  );
  assert.equal(
    eventsUrl({ wsUrl: 'ws://h/', token: '', appendToken: true }),
    'ws://h/codeyard/api/events'
  );
});

test('only well-formed events are passed on', () => {
  assert.deepEqual(parseEvent('{"event":"patch","data":{"patch_id":"p"},"time":"t"}'), {
    event: 'patch',
    data: { patch_id: 'p' },
    time: 't'
  });
  assert.equal(parseEvent('not json'), null);
  assert.equal(parseEvent('{"event":"patch"}'), null);
  assert.equal(parseEvent('{"data":{}}'), null);
  assert.equal(parseEvent(new Uint8Array(2)), null);
});

class FakeSocket implements ISocket {
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  closed: number | null = null;
  constructor(readonly url: string) {}
  close(code = 1000): void {
    this.closed = code;
  }
  serverCloses(code: number): void {
    this.onerror?.({});
    this.onclose?.({ code });
  }
}

class FakeTimers implements ITimers {
  pending: { fn: () => void; ms: number }[] = [];
  cleared = 0;
  set(fn: () => void, ms: number): unknown {
    const entry = { fn, ms };
    this.pending.push(entry);
    return entry;
  }
  clear(handle: unknown): void {
    this.pending = this.pending.filter(p => p !== handle);
    this.cleared++;
  }
  fire(): number {
    const next = this.pending.shift();
    assert.ok(next, 'no timer pending');
    next.fn();
    return next.ms;
  }
}

function harness() {
  const sockets: FakeSocket[] = [];
  const timers = new FakeTimers();
  const client = new WorkspaceEvents({
    settings: { wsUrl: 'ws://h/', token: 'x', appendToken: true },
    socket: url => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    backoff: NO_JITTER,
    timers
  });
  const log: string[] = [];
  const events: IWorkspaceEvent[] = [];
  client.subscribe({
    onOpen: again => log.push(again ? 'reopen' : 'open'),
    onClose: code => log.push(`close ${code}`),
    onEvent: e => events.push(e)
  });
  return { client, sockets, timers, log, events };
}

test('a closed socket is reopened after growing delays, reset once it opens', () => {
  const { client, sockets, timers, log } = harness();
  client.start();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, 'ws://h/codeyard/api/events?token=x');
  sockets[0].onopen?.({});
  sockets[0].serverCloses(1013); // dropped as a slow client
  assert.equal(client.pendingDelay, 500);
  assert.equal(timers.fire(), 500);
  sockets[1].serverCloses(1006); // the server is down: refused
  assert.equal(timers.fire(), 1000);
  sockets[2].serverCloses(1006);
  assert.equal(timers.fire(), 2000);
  sockets[3].onopen?.({});
  assert.equal(client.attempt, 0);
  assert.equal(client.connected, true);
  sockets[3].serverCloses(1001);
  assert.equal(timers.fire(), 500);
  assert.deepEqual(log, ['open', 'close 1013', 'close 1006', 'close 1006', 'reopen', 'close 1001']);
});

test('events reach every listener; a failing listener does not stop the others', () => {
  const { client, sockets, events } = harness();
  const second: string[] = [];
  client.subscribe({
    onEvent: () => {
      throw new Error('boom');
    }
  });
  client.subscribe({ onEvent: e => second.push(e.event) });
  const warn = console.warn;
  console.warn = () => undefined;
  try {
    client.start();
    sockets[0].onopen?.({});
    sockets[0].onmessage?.({ data: '{"event":"patch","data":{"action":"applied"},"time":"t"}' });
    sockets[0].onmessage?.({ data: 'garbage' });
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(
    events.map(e => e.event),
    ['patch']
  );
  assert.deepEqual(second, ['patch']);
});

test('stop closes the socket and cancels a pending reconnect', () => {
  const { client, sockets, timers } = harness();
  client.start();
  sockets[0].serverCloses(1006);
  assert.equal(timers.pending.length, 1);
  client.stop();
  assert.equal(timers.pending.length, 0);
  client.start();
  assert.equal(sockets.length, 2);
  client.stop();
  assert.equal(sockets[1].closed, 1000);
  assert.equal(timers.pending.length, 0, 'no reconnect after stop');
  assert.equal(client.connected, false);
});

test('a patch makes the history and git stale; others only what they change', () => {
  const ev = (event: string, data: Record<string, unknown> = {}): IWorkspaceEvent => ({ event, data, time: '' });
  assert.deepEqual(staleAfter(ev('patch', { action: 'applied' })), { history: true, git: true });
  assert.deepEqual(staleAfter(ev('files', { writer: 'external' })), { history: false, git: true });
  assert.deepEqual(staleAfter(ev('files', { writer: 'contents' })), { history: false, git: true });
  assert.deepEqual(staleAfter(ev('files', { writer: 'patch' })), { history: false, git: false });
  assert.deepEqual(staleAfter(ev('git', { operation: 'pull' })), { history: false, git: true });
  assert.deepEqual(staleAfter(ev('assist', { phase: 'start' })), { history: false, git: false });
});

test('a burst of calls costs one refresh, after the last', () => {
  const timers = new FakeTimers();
  let runs = 0;
  const soon = debounce(() => runs++, 100, timers);
  soon();
  soon();
  soon();
  assert.equal(timers.pending.length, 1);
  assert.equal(timers.fire(), 100);
  assert.equal(runs, 1);
  soon();
  timers.fire();
  assert.equal(runs, 2);
});

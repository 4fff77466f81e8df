import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { CodeyardInlineProvider, CompleteFn } from '../src/completion';
import { ApiError } from '../src/errors';

type Call = { prefix: string; signal: AbortSignal; resolve: (text: string) => void };

function fakeServer(): { complete: CompleteFn; calls: Call[] } {
  const calls: Call[] = [];
  const complete: CompleteFn = (body, signal) =>
    new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => {
        const err = new Error('aborted');
        err.name = 'AbortError';
        reject(err);
      });
      calls.push({ prefix: body.prefix, signal, resolve: text => resolve({ completion: text }) });
    });
  return { complete, calls };
}

const request = (text: string) => ({ text, offset: text.length, mimeType: 'text/x-python' });
const context = { widget: { context: { path: 'm.py' } }, triggerKind: 1 } as never;

test('a newer request aborts the one still in flight, which yields nothing', async () => {
  const server = fakeServer();
  const provider = new CodeyardInlineProvider(server.complete);
  const first = provider.fetch(request('def f('), context);
  const second = provider.fetch(request('def f(x'), context);
  assert.equal(server.calls.length, 2);
  assert.equal(server.calls[0].signal.aborted, true);
  assert.equal(server.calls[1].signal.aborted, false);
  server.calls[1].resolve('):\n    return x');
  assert.deepEqual(await first, { items: [] });
  assert.deepEqual(await second, { items: [{ insertText: '):\n    return x' }] });
});

test('switched off in settings: no request at all', async () => {
  const server = fakeServer();
  const provider = new CodeyardInlineProvider(server.complete);
  provider.enabled = false;
  assert.deepEqual(await provider.fetch(request('import o'), context), { items: [] });
  assert.equal(server.calls.length, 0);
});

test('blank prefixes are not sent', async () => {
  const server = fakeServer();
  const provider = new CodeyardInlineProvider(server.complete);
  assert.deepEqual(await provider.fetch(request('   \n'), context), { items: [] });
  assert.equal(server.calls.length, 0);
});

test('a missing endpoint is reported once, then the provider stops asking', async () => {
  let count = 0;
  const provider = new CodeyardInlineProvider(async () => {
    count++;
    throw new ApiError(404, { error: 'not_found', message: 'no such endpoint' });
  });
  const first = await provider.fetch(request('x = '), context);
  assert.equal(first.items.length, 1);
  assert.match(first.items[0].error?.message ?? '', /Not found/);
  assert.deepEqual(await provider.fetch(request('x = 1'), context), { items: [] });
  assert.equal(count, 1);
});

test('a rate limit is shown as an error on the suggestion, in words', async () => {
  const provider = new CodeyardInlineProvider(async () => {
    throw new ApiError(429, { error: 'rate_limited', message: 'slow down' });
  });
  const result = await provider.fetch(request('x = '), context);
  assert.match(result.items[0].error?.message ?? '', /Too many requests.*slow down/);
});

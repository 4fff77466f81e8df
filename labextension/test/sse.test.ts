import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { SSEParser } from '../src/sse';
import { prefixSuffix } from '../src/completionText';
import { ApiError, describeError } from '../src/errors';

test('events split across chunks are reassembled', () => {
  const p = new SSEParser();
  assert.deepEqual(p.push('data: {"del'), []);
  assert.deepEqual(p.push('ta": "Hel"}\n\ndata: {"delta": "lo"}\n'), [{ delta: 'Hel' }]);
  assert.deepEqual(p.push('\ndata: {"done": true, "usage": {"total_tokens": 3}}\n\n'), [
    { delta: 'lo' },
    { done: true, usage: { total_tokens: 3 } }
  ]);
});

test('CRLF framing, comments and event names are tolerated', () => {
  const p = new SSEParser();
  assert.deepEqual(p.push(': keep-alive\r\n\r\nevent: message\r\ndata: {"delta":"x"}\r\n\r\n'), [
    { delta: 'x' }
  ]);
});

test('an unreadable event becomes an error event instead of throwing', () => {
  const p = new SSEParser();
  const [event] = p.push('data: {not json\n\n') as { error: string }[];
  assert.equal(event.error, 'bad_event');
});

test('completion windows are bounded and cut at line boundaries', () => {
  const text = 'a'.repeat(50) + '\n' + 'b'.repeat(50) + '\nCURSOR' + '\n' + 'c'.repeat(50) + '\n' + 'd'.repeat(50);
  const at = text.indexOf('CURSOR') + 6;
  const { prefix, suffix } = prefixSuffix(text, at, 80, 60);
  assert.equal(prefix, 'b'.repeat(50) + '\nCURSOR');
  assert.equal(suffix, '\n' + 'c'.repeat(50) + '\n');
  assert.deepEqual(prefixSuffix('x = ', 4), { prefix: 'x = ', suffix: '' });
});

test('every server error the panel can meet is described in words', () => {
  const cases: [number, string][] = [
    [403, 'Not allowed'],
    [409, 'changed'],
    [413, 'Too large'],
    [422, 'could not produce'],
    [429, 'Too many requests'],
    [503, 'unavailable']
  ];
  for (const [status, words] of cases) {
    const text = describeError(new ApiError(status, { error: 'x', message: 'detail from server' }));
    assert.match(text, new RegExp(words));
    assert.match(text, /detail from server/);
  }
  assert.match(describeError(new ApiError(500, null)), /server failed/);
  const abort = new Error('aborted');
  abort.name = 'AbortError';
  assert.equal(describeError(abort), 'Stopped.');
});

import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { gatewayText, modelText, stateFromStatus } from '../src/gateway';

const at = new Date(2026, 0, 1, 9, 30, 0);

test('a healthy status names the model and the measured latency', () => {
  const state = stateFromStatus({ healthy: true, model: 'smollm2', latency_ms: 12.4 }, at);
  assert.equal(state.kind, 'healthy');
  assert.match(gatewayText(state), /^healthy \(answered in 12 ms at /);
  assert.equal(modelText(state, undefined, undefined), 'smollm2');
});

test('a 503 status body says why the gateway is down, in its own words', () => {
  const state = stateFromStatus(
    { healthy: false, model: 'smollm2', error: 'llm_unavailable', message: 'the LLM gateway is not reachable' },
    at
  );
  assert.equal(state.kind, 'down');
  assert.match(gatewayText(state), /^unavailable at .*: the LLM gateway is not reachable$/);
  assert.equal(modelText(state, undefined, undefined), 'smollm2');
});

test('a down status without a message falls back to its error code', () => {
  const state = stateFromStatus({ healthy: false, model: 'm', error: 'llm_timeout' }, at);
  assert.match(gatewayText(state), /llm_timeout$/);
});

test('the model of the last call wins, and its tokens are shown', () => {
  const state = stateFromStatus({ healthy: true, model: 'smollm2' }, at);
  assert.equal(modelText(state, 'other-model', 42), 'other-model · last call 42 tokens');
  assert.equal(gatewayText({ kind: 'unknown' }), 'not checked yet');
  assert.equal(modelText({ kind: 'checking' }, undefined, undefined), 'unknown yet');
});

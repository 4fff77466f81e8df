import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import type { IProposalChecks } from '../src/api';
import {
  ApplyGate,
  checksCoverage,
  errorWhere,
  halveRange,
  limitFromError,
  needsConfirmation,
  nextSteps,
  proposalWarnings,
  raisedMaxTokens
} from '../src/proposal';

const fine: IProposalChecks = {
  parses: true,
  parser: 'python-ast',
  error: null,
  parsed_before: true,
  outside_selection: false
};
const broken: IProposalChecks = {
  ...fine,
  parses: false,
  error: 'SyntaxError: from __future__ imports must occur at the beginning of the file (line 9)'
};

test('a proposal that breaks Python parsing is named with its line and needs confirmation', () => {
  assert.deepEqual(proposalWarnings(broken), ['This change breaks Python parsing (SyntaxError at line 9).']);
  assert.equal(needsConfirmation(broken), true);
  assert.equal(needsConfirmation(fine), false);
  assert.deepEqual(proposalWarnings(null), []);
});

test('a file that did not parse before is not blamed on the change', () => {
  const already = { ...broken, parsed_before: false };
  assert.deepEqual(proposalWarnings(already), []);
  assert.match(checksCoverage(already), /does not parse, before or after/);
});

test('a change outside the selection warns, with or without a parse error', () => {
  const outside = { ...fine, outside_selection: true };
  assert.deepEqual(proposalWarnings(outside), ['This change touches lines outside your selection.']);
  assert.equal(proposalWarnings({ ...broken, outside_selection: true }).length, 2);
});

test('JSON and notebook errors name their parser and cell', () => {
  const json: IProposalChecks = { ...fine, parser: 'json', parses: false, error: "JSONDecodeError: Expecting value (line 2)" };
  assert.deepEqual(proposalWarnings(json), ['This change breaks JSON parsing (JSONDecodeError at line 2).']);
  assert.equal(errorWhere('cell c0: SyntaxError: invalid syntax (line 1)'), 'SyntaxError at line 1 in cell c0');
  assert.match(checksCoverage({ ...fine, parser: null, parses: null }), /no parser for this file type/);
  assert.match(checksCoverage(fine), /Python parses .*stays inside the selection/);
});

test('the gate opens only after confirmation, and a new proposal closes it again', () => {
  const gate = new ApplyGate();
  gate.reset(fine);
  assert.equal(gate.open, true);
  gate.reset(broken);
  assert.equal(gate.open, false);
  gate.confirmed = true;
  assert.equal(gate.open, true);
  gate.reset(broken);
  assert.equal(gate.open, false, 'confirmation is per proposal');
  gate.reset(null);
  assert.equal(gate.open, true);
});

test('halving a selection keeps its start and at least one line', () => {
  const range = { path: 'm.py', start_line: 10, end_line: 19 };
  assert.deepEqual(halveRange(range), { path: 'm.py', start_line: 10, end_line: 14 });
  assert.deepEqual(halveRange({ ...range, end_line: 12 }), { path: 'm.py', start_line: 10, end_line: 11 });
  assert.equal(halveRange({ ...range, end_line: 10 }), null);
  const cell = { ...range, cell_id: 'c1' };
  assert.equal(halveRange(cell)?.cell_id, 'c1');
});

test('more tokens doubles up to the server bound and stops there', () => {
  assert.equal(raisedMaxTokens(200, 2048), 400);
  assert.equal(raisedMaxTokens(1500, 2048), 2048);
  assert.equal(raisedMaxTokens(2048, 2048), null);
  assert.equal(raisedMaxTokens(undefined, null), 512);
  const steps = nextSteps('length', { path: 'a.py', start_line: 1, end_line: 1 }, 400, 400, '  ');
  assert.deepEqual(steps, { why: 'length', smaller: null, moreTokens: null, raw: null });
});

test('the bound comes from a 400 that names max_tokens', () => {
  assert.equal(limitFromError({ error: 'bad_request', field: 'max_tokens', maximum: 400 }), 400);
  assert.equal(limitFromError({ error: 'bad_request', field: 'context_lines', maximum: 30 }), null);
  assert.equal(limitFromError(null), null);
});

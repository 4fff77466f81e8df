import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  decideApply,
  FlowState,
  historyFromAudit,
  makeReview,
  notebookCell,
  selectionLines,
  StaleBaseError
} from '../src/state';
import type { IAuditRecord } from '../src/api';

const range = { path: 'm.py', start_line: 1, end_line: 2 };
const rewrite = {
  diff: '--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n-x=1\n+x = 1\n y = 2\n',
  base: { 'm.py': 'aaa' },
  unchanged: false
};

test('a review holds the text before and after the proposed diff', () => {
  const review = makeReview(range, 'format', rewrite, { content: 'x=1\ny = 2\n', sha256: 'aaa' });
  assert.equal(review.before, 'x=1\ny = 2\n');
  assert.equal(review.after, 'x = 1\ny = 2\n');
  assert.deepEqual(review.stats, { files: 1, added: 1, removed: 1 });
});

test('a file that changed since the rewrite gives a stale-base error, not a review', () => {
  assert.throws(
    () => makeReview(range, 'format', rewrite, { content: 'x=1\ny = 2\n', sha256: 'bbb' }),
    StaleBaseError
  );
});

test('the flow allows review -> apply -> applied and refuses apply from idle', () => {
  const flow = new FlowState();
  assert.equal(flow.canMove('applying'), false);
  assert.throws(() => flow.move('applying'));
  flow.move('rewriting');
  flow.propose(makeReview(range, 'f', rewrite, { content: 'x=1\ny = 2\n', sha256: 'aaa' }));
  assert.equal(flow.phase, 'reviewing');
  assert.ok(flow.review);
  flow.move('applying');
  flow.move('applied');
  assert.equal(flow.review, null);
});

test('a conflict can be followed by a new rewrite', () => {
  const flow = new FlowState();
  flow.move('rewriting');
  flow.move('conflict');
  assert.ok(flow.canMove('rewriting'));
  assert.equal(flow.canMove('applying'), false);
});

test('apply is refused for a file or notebook with unsaved edits', () => {
  assert.deepEqual(decideApply(null, false), { ok: true });
  assert.deepEqual(decideApply({ dirty: false }, false), { ok: true });
  const dirty = decideApply({ dirty: true }, false);
  assert.equal(dirty.ok, false);
  assert.match((dirty as { reason: string }).reason, /unsaved changes/);
  assert.deepEqual(decideApply({ dirty: false }, true), { ok: true });
  const dirtyNotebook = decideApply({ dirty: true }, true);
  assert.equal(dirtyNotebook.ok, false);
  assert.match((dirtyNotebook as { reason: string }).reason, /notebook has unsaved changes/);
});

test('notebookCell finds a cell by id, joining list sources, with the kernel language', () => {
  const nb = JSON.stringify({
    metadata: { kernelspec: { language: 'python' } },
    cells: [
      { id: 'a', source: ['x = 1\n', 'y = 2'] },
      { id: 'b', source: 'print(x)' }
    ]
  });
  assert.deepEqual(notebookCell(nb, 'a'), { source: 'x = 1\ny = 2', language: 'python' });
  assert.deepEqual(notebookCell(nb, 'b'), { source: 'print(x)', language: 'python' });
  assert.equal(notebookCell(nb, 'c'), null);
  assert.equal(notebookCell('not json', 'a'), null);
});

function rec(seq: number, action: string, extra: Partial<IAuditRecord> = {}): IAuditRecord {
  return {
    seq,
    ts: 1700000000 + seq,
    user: 'u',
    action,
    paths: ['m.py'],
    sha256_before: {},
    sha256_after: {},
    patch_sha256: null,
    prev: '',
    hash: '',
    ...extra
  };
}

test('history lists applied patches newest first and marks reverted ones', () => {
  const entries = historyFromAudit([
    rec(1, 'patch.apply', { patch_id: 'p1' }),
    rec(2, 'patch.apply', { patch_id: 'p2' }),
    rec(3, 'patch.revert', { patch_id: 'p1' }),
    rec(4, 'tree.read')
  ]);
  assert.deepEqual(
    entries.map(e => [e.seq, e.patchId, e.isRevert, e.reverted]),
    [
      [3, 'p1', true, false],
      [2, 'p2', false, false],
      [1, 'p1', false, true]
    ]
  );
});

test('selection lines are 1-based, inclusive, and an empty selection means everything', () => {
  const text = 'a\nb\nc\nd\n';
  assert.deepEqual(selectionLines(text, { line: 1, column: 0 }, { line: 2, column: 1 }), {
    start_line: 2,
    end_line: 3,
    empty: false
  });
  // Ending at column 0 of the next line does not take that line.
  assert.equal(selectionLines(text, { line: 0, column: 0 }, { line: 2, column: 0 }).end_line, 2);
  // Backwards selections are normalised.
  assert.equal(selectionLines(text, { line: 3, column: 1 }, { line: 1, column: 0 }).start_line, 2);
  assert.deepEqual(selectionLines(text, { line: 2, column: 1 }, { line: 2, column: 1 }), {
    start_line: 1,
    end_line: 4,
    empty: true
  });
});

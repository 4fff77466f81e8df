import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { ApiError } from '../src/errors';
import {
  ago,
  blockedReason,
  branchLine,
  commitSaid,
  fileRows,
  filesSummary,
  gitProblem,
  IGitStatus,
  pullSaid,
  pushSaid
} from '../src/gitstate';

const base: IGitStatus = {
  branch: 'main',
  detached: false,
  head: 'a'.repeat(40),
  unborn: false,
  upstream: 'origin/main',
  upstream_remote: 'origin',
  upstream_branch: 'main',
  ahead: 0,
  behind: 0,
  remotes: ['origin'],
  operation: null,
  prefix: '',
  clean: true,
  files: [],
  truncated: false
};

test('the branch line says where the branch tracks and how far it is off', () => {
  assert.equal(branchLine(base), 'main · tracks origin/main, up to date');
  assert.equal(branchLine({ ...base, ahead: 2, behind: 1 }), 'main · tracks origin/main (2 to push, 1 to pull)');
  assert.equal(
    branchLine({ ...base, upstream: null, ahead: null, behind: null }),
    'main · not pushed yet (remotes: origin)'
  );
  assert.equal(branchLine({ ...base, upstream: null, remotes: [] }), 'main · no remote');
  assert.match(branchLine({ ...base, unborn: true, head: null }), /^main \(no commits yet\)/);
  assert.match(branchLine({ ...base, operation: 'merge' }), /a merge is in progress: finish it in a terminal$/);
});

test('a detached HEAD is named with its commit and what to do', () => {
  const line = branchLine({ ...base, branch: null, detached: true, head: 'abcdef1234567' });
  assert.equal(line, 'HEAD is detached at abcdef1: check out a branch in a terminal to commit, pull or push.');
});

test('actions are blocked for a reason the user can act on', () => {
  assert.equal(blockedReason(null, 'commit'), 'The repository state is not known yet; refresh.');
  assert.equal(blockedReason(base, 'commit'), 'Nothing to commit.');
  const dirty = { ...base, clean: false };
  assert.equal(blockedReason(dirty, 'commit'), null);
  assert.equal(blockedReason(dirty, 'pull'), null);
  assert.match(blockedReason({ ...dirty, detached: true, branch: null }, 'push') ?? '', /detached/);
  assert.equal(blockedReason({ ...dirty, remotes: [] }, 'pull'), 'This repository has no remote.');
  assert.equal(blockedReason({ ...dirty, remotes: [] }, 'commit'), null);
  assert.match(blockedReason({ ...dirty, unborn: true }, 'push') ?? '', /no commits yet/);
  assert.match(blockedReason({ ...dirty, operation: 'rebase' }, 'commit') ?? '', /rebase is in progress/);
});

test('changed files get git letters and words', () => {
  const rows = fileRows([
    { path: 'a.py', kind: 'changed', index: 'unmodified', worktree: 'modified', staged: false, unstaged: true },
    { path: 'b.py', kind: 'changed', index: 'added', worktree: 'unmodified', staged: true, unstaged: false },
    { path: 'c.py', kind: 'changed', index: 'unmodified', worktree: 'deleted', staged: false, unstaged: true },
    { path: 'new/', kind: 'untracked', index: 'untracked', worktree: 'untracked', staged: false, unstaged: true },
    { path: 'd.py', kind: 'renamed', index: 'renamed', worktree: 'unmodified', staged: true, unstaged: false, from: 'old.py' },
    { path: 'e.py', kind: 'unmerged', index: 'unmerged', worktree: 'unmerged', staged: true, unstaged: true },
    { path: 'f', kind: 'changed', index: 'unmodified', worktree: 'type_changed', staged: false, unstaged: true }
  ]);
  assert.deepEqual(
    rows.map(r => [r.letter, r.path]),
    [
      ['M', 'a.py'],
      ['A', 'b.py'],
      ['D', 'c.py'],
      ['?', 'new/'],
      ['R', 'old.py → d.py'],
      ['U', 'e.py'],
      ['T', 'f']
    ]
  );
  assert.equal(rows[4].title, 'd.py: renamed from old.py');
  assert.equal(rows[5].title, 'e.py: has merge conflicts');
  assert.equal(rows[6].title, 'f: type changed');
});

test('the file count says when the list was cut', () => {
  assert.equal(filesSummary(base), 'No changes.');
  const one = { ...base, clean: false, files: fileRowsInput(1) };
  assert.equal(filesSummary(one), '1 changed file');
  assert.equal(filesSummary({ ...one, files: fileRowsInput(3), truncated: true }), '3+ changed files');
});

function fileRowsInput(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    path: `f${i}`,
    kind: 'changed' as const,
    index: 'unmodified',
    worktree: 'modified',
    staged: false,
    unstaged: true
  }));
}

test('commit times read as how long ago', () => {
  const now = new Date('2026-12-05T12:00:00Z');
  assert.equal(ago('2026-12-05T11:59:30Z', now), 'just now');
  assert.equal(ago('2026-12-05T11:55:00+00:00', now), '5 min ago');
  assert.equal(ago('2026-12-05T09:00:00Z', now), '3 h ago');
  assert.equal(ago('2026-12-04T11:00:00Z', now), '1 day ago');
  assert.equal(ago('2026-10-01T11:00:00Z', now), '2026-10-01');
  assert.equal(ago('not a date', now), 'not a date');
});

test('results are one sentence each', () => {
  assert.equal(
    commitSaid({ commit: 'abcdef1234', parent: null, branch: 'main', author: 'a', files: 1, paths: ['x'] }),
    'Committed abcdef1 on main (1 file).'
  );
  const pull = { branch: 'main', remote: 'origin', remote_branch: 'main', before: 'a', after: 'b1234567', files: 2 };
  assert.equal(pullSaid({ ...pull, updated: false }), 'Already up to date with origin/main.');
  assert.equal(pullSaid({ ...pull, updated: true }), 'Pulled origin/main: main is now at b123456 (2 files changed).');
  const push = { branch: 'main', remote: 'origin', remote_branch: 'main', commit: 'c1234567', upstream_set: false };
  assert.equal(pushSaid({ ...push, created: false, up_to_date: false }), 'Pushed main to origin/main at c123456.');
  assert.equal(
    pushSaid({ ...push, created: true, up_to_date: false }),
    'Pushed main to origin/main (a new branch on the remote) at c123456.'
  );
  assert.equal(pushSaid({ ...push, created: false, up_to_date: true }), 'origin/main already has c123456; nothing to push.');
});

test("git's refusals read as what was not done, then the server's reason", () => {
  const diverged = new ApiError(409, {
    error: 'diverged',
    message:
      'this branch and origin/main have diverged (1 local and 1 remote commits): a fast-forward is not possible. Nothing was changed; merge or rebase in a terminal.',
    ahead: 1,
    behind: 1
  });
  const p = gitProblem('pull', diverged);
  assert.equal(p.code, 'diverged');
  assert.match(p.message, /^Not pulled\. This branch and origin\/main have diverged/);
  assert.doesNotMatch(p.message, /file changed since/);

  const rejected = gitProblem(
    'push',
    new ApiError(409, { error: 'push_rejected', message: "the remote 'origin' has commits this branch does not have; pull first. Nothing was pushed." })
  );
  assert.equal(rejected.message, "Not pushed. The remote 'origin' has commits this branch does not have; pull first. Nothing was pushed.");

  const local = gitProblem(
    'pull',
    new ApiError(409, {
      error: 'local_changes',
      message: 'the pull would overwrite local changes; commit them first. Nothing was changed.',
      paths: ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    })
  );
  assert.match(local.message, /Files: a, b, c, d, e, and 2 more\.$/);

  const hook = gitProblem(
    'commit',
    new ApiError(409, {
      error: 'hook_failed',
      message: 'a commit hook (pre-commit) refused the commit; nothing was committed and the index is as it was',
      hook_output: '  lint: 3 errors\n'
    })
  );
  assert.equal(hook.message, 'Not committed. A commit hook (pre-commit) refused the commit; nothing was committed and the index is as it was.');
  assert.equal(hook.detail, 'lint: 3 errors');

  const noRemote = gitProblem('push', new ApiError(409, { error: 'no_remote', message: 'this repository has no remote; add one (`git remote add origin <url>`)' }));
  assert.match(noRemote.message, /^Not pushed\. This repository has no remote/);
});

test('model and session errors keep the panel’s usual words', () => {
  const down = gitProblem('message', new ApiError(503, { error: 'llm_unavailable', message: 'the gateway did not answer' }));
  assert.equal(down.message, 'No message proposed: The model gateway is unavailable right now: the gateway did not answer');
  const nothing = gitProblem('message', new ApiError(409, { error: 'nothing_to_commit', message: 'there are no changes to commit' }));
  assert.equal(nothing.message, 'No message proposed. There are no changes to commit.');
  const session = gitProblem('commit', new ApiError(403, { message: 'Forbidden' }));
  assert.match(session.message, /^Not allowed/);
  const network = gitProblem('push', new TypeError('Failed to fetch'));
  assert.equal(network.code, null);
  assert.match(network.message, /Cannot reach the Jupyter server/);
});

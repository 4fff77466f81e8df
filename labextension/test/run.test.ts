import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  endText,
  failureLocation,
  failurePart,
  failureQuestion,
  isFailure,
  withoutWarnings
} from '../src/runstate';

const PYTEST_FAILURE = `F                                                                        [100%]
=================================== FAILURES ===================================
___________________________________ test_add ___________________________________

    def test_add():
>       assert add(1, 2) == 4
E       assert 3 == 4

tests/test_calc.py:14: AssertionError
=========================== short test summary info ============================
FAILED tests/test_calc.py::test_add - assert 3 == 4
1 failed in 0.01s
`;

test('a pytest failure points at the failing line and the lines above it', () => {
  assert.deepEqual(failureLocation(PYTEST_FAILURE, ''), {
    path: 'tests/test_calc.py',
    start_line: 5,
    end_line: 14
  });
});

test('a path in the output is taken relative to the run folder', () => {
  assert.deepEqual(failureLocation('x.py:3: in f', 'pkg/sub'), {
    path: 'pkg/sub/x.py',
    start_line: 1,
    end_line: 3
  });
  assert.equal(failureLocation('../../x.py:3: boom', 'pkg'), null);
});

test('a traceback location is found; absolute paths are not guessed at', () => {
  const trace = 'Traceback (most recent call last):\n  File "/usr/lib/x.py", line 9, in g\n  File "src/mod.py", line 30, in f\n';
  assert.deepEqual(failureLocation(trace, ''), { path: 'src/mod.py', start_line: 21, end_line: 30 });
  assert.equal(failureLocation('  File "/usr/lib/x.py", line 9', ''), null);
  assert.equal(failureLocation('make: *** [all] Error 2', ''), null);
});

test('the question fits the explain limit and keeps the end of the output', () => {
  const long = Array.from({ length: 500 }, (_, i) => `line ${i}`).join('\n') + '\nTHE END\n';
  const q = failureQuestion('pytest -q', 'exit code 1', long);
  assert.ok(q.length <= 2000, String(q.length));
  assert.ok(q.includes('`pytest -q` failed (exit code 1)'));
  assert.ok(q.includes('THE END'));
  assert.ok(!q.includes('line 0\n'));
  // It starts on a whole line.
  assert.match(q, /```\nline \d+\n/);
});

test('how a run ended, in words, and which ends are failures', () => {
  const base = { signal: null, duration: 1.234, truncated: false };
  assert.equal(endText({ ...base, state: 'exited', exit_code: 0 }), 'exit code 0 · 1.2 s');
  assert.equal(
    endText({ ...base, state: 'timeout', exit_code: null, signal: 'SIGTERM', truncated: true }),
    'timed out (stopped with SIGTERM) · 1.2 s · output truncated'
  );
  assert.equal(isFailure({ state: 'exited', exit_code: 0 }), false);
  assert.equal(isFailure({ state: 'exited', exit_code: 2 }), true);
  assert.equal(isFailure({ state: 'timeout', exit_code: null }), true);
  assert.equal(isFailure({ state: 'cancelled', exit_code: null }), false);
});

test("pytest's warnings summary is left out of the question", () => {
  const output =
    PYTEST_FAILURE.replace(
      '=========================== short test summary info',
      '=============================== warnings summary ===============================\n' +
        '../venv/site-packages/pytest_asyncio/plugin.py:208: PytestDeprecationWarning: unset\n\n' +
        '-- Docs: https://docs.pytest.org/en/stable/how-to/capture-warnings.html\n' +
        '=========================== short test summary info'
    );
  assert.ok(output.includes('PytestDeprecationWarning'));
  const kept = withoutWarnings(output);
  assert.ok(!kept.includes('PytestDeprecationWarning'));
  assert.ok(kept.includes('tests/test_calc.py:14: AssertionError'));
  assert.ok(kept.includes('short test summary info'));
  assert.ok(!failureQuestion('pytest -q', 'exit code 1', output).includes('Deprecation'));
});

test('the question quotes the failure report, not what was printed before it', () => {
  const output = 'plugin.py:306: PytestDeprecationWarning: unset\n  warnings.warn(x)\n' + PYTEST_FAILURE;
  assert.ok(failurePart(output).startsWith('=================================== FAILURES'));
  const q = failureQuestion('pytest -q', 'exit code 1', output);
  assert.ok(!q.includes('PytestDeprecationWarning'));
  assert.ok(q.includes('tests/test_calc.py:14: AssertionError'));
  const trace = 'noise\nTraceback (most recent call last):\n  File "a.py", line 1\nValueError: x\n';
  assert.ok(failurePart(trace).startsWith('Traceback'));
  assert.equal(failurePart('make: *** Error 2\n'), 'make: *** Error 2\n');
});

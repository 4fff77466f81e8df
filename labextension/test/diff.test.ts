import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import {
  applyFileDiff,
  DiffParseError,
  diffStats,
  HunkMismatchError,
  parseUnifiedDiff
} from '../src/diff';

const GIT_MODIFY = `diff --git a/pkg/mod.py b/pkg/mod.py
index 3b18e51..a9c2f4d 100644
--- a/pkg/mod.py
+++ b/pkg/mod.py
@@ -1,4 +1,5 @@
 import os
-def f(x):
-    return x+1
+def f(x: int) -> int:
+    """Add one."""
+    return x + 1
 
`;

test('a git diff of one modified file parses into one hunk with its counts', () => {
  const files = parseUnifiedDiff(GIT_MODIFY);
  assert.equal(files.length, 1);
  const [f] = files;
  assert.equal(f.path, 'pkg/mod.py');
  assert.equal(f.op, 'modify');
  assert.equal(f.hunks.length, 1);
  assert.deepEqual(
    [f.hunks[0].oldStart, f.hunks[0].oldLines, f.hunks[0].newStart, f.hunks[0].newLines],
    [1, 4, 1, 5]
  );
  assert.deepEqual(diffStats(files), { files: 1, added: 3, removed: 2 });
});

test('applying the parsed hunks gives the new text', () => {
  const before = 'import os\ndef f(x):\n    return x+1\n\nprint(f(1))\n';
  const after = applyFileDiff(before, parseUnifiedDiff(GIT_MODIFY)[0]);
  assert.equal(
    after,
    'import os\ndef f(x: int) -> int:\n    """Add one."""\n    return x + 1\n\nprint(f(1))\n'
  );
});

test('a hunk whose old side differs from the text is refused, not fuzzed', () => {
  const drifted = 'import os\ndef f(y):\n    return y+1\n\n';
  assert.throws(() => applyFileDiff(drifted, parseUnifiedDiff(GIT_MODIFY)[0]), HunkMismatchError);
});

test('new, deleted and renamed files from git diff -M are recognised', () => {
  const diff = `diff --git a/new.txt b/new.txt
new file mode 100644
index 0000000..ce01362
--- /dev/null
+++ b/new.txt
@@ -0,0 +1,2 @@
+hello
+world
diff --git a/old.txt b/old.txt
deleted file mode 100644
index ce01362..0000000
--- a/old.txt
+++ /dev/null
@@ -1 +0,0 @@
-bye
diff --git a/a.py b/b.py
similarity index 90%
rename from a.py
rename to b.py
index 1111111..2222222 100644
--- a/a.py
+++ b/b.py
@@ -1,2 +1,2 @@
 x = 1
-y = 2
+y = 3
`;
  const files = parseUnifiedDiff(diff);
  assert.deepEqual(
    files.map(f => [f.op, f.path, f.oldPath]),
    [
      ['create', 'new.txt', null],
      ['delete', 'old.txt', 'old.txt'],
      ['rename', 'b.py', 'a.py']
    ]
  );
  assert.equal(applyFileDiff('', files[0]), 'hello\nworld\n');
  assert.equal(applyFileDiff('bye\n', files[1]), '');
  assert.equal(applyFileDiff('x = 1\ny = 2\n', files[2]), 'x = 1\ny = 3\n');
});

test('"No newline at end of file" is honoured on both sides', () => {
  const diff = `--- a/f.txt
+++ b/f.txt
@@ -1,2 +1,2 @@
 a
-b
\\ No newline at end of file
+c
`;
  const [f] = parseUnifiedDiff(diff);
  assert.equal(applyFileDiff('a\nb', f), 'a\nc\n');
  const back = `--- a/f.txt
+++ b/f.txt
@@ -1,2 +1,2 @@
 a
-c
+b
\\ No newline at end of file
`;
  assert.equal(applyFileDiff('a\nc\n', parseUnifiedDiff(back)[0]), 'a\nb');
});

test('CRLF lines keep their carriage returns', () => {
  const diff = '--- a/w.txt\n+++ b/w.txt\n@@ -1,2 +1,2 @@\n one\r\n-two\r\n+TWO\r\n';
  const [f] = parseUnifiedDiff(diff);
  assert.equal(applyFileDiff('one\r\ntwo\r\n', f), 'one\r\nTWO\r\n');
});

test('plain diff -u output with timestamps and several files parses', () => {
  const diff = `--- x.txt\t2024-01-01 00:00:00.000000000 +0000
+++ x.txt\t2024-01-02 00:00:00.000000000 +0000
@@ -1 +1 @@
-1
+2
--- y.txt\t2024-01-01 00:00:00.000000000 +0000
+++ y.txt\t2024-01-02 00:00:00.000000000 +0000
@@ -2,0 +3 @@
+three
`;
  const files = parseUnifiedDiff(diff);
  assert.deepEqual(files.map(f => f.path), ['x.txt', 'y.txt']);
  assert.equal(applyFileDiff('one\ntwo\n', files[1]), 'one\ntwo\nthree\n');
});

test('several hunks apply in order and keep the text between them', () => {
  const before = Array.from({ length: 20 }, (_, i) => `l${i + 1}`).join('\n') + '\n';
  const diff = `--- a/n.txt
+++ b/n.txt
@@ -2,3 +2,3 @@
 l2
-l3
+L3
 l4
@@ -17,3 +17,4 @@
 l17
 l18
+inserted
 l19
`;
  const after = applyFileDiff(before, parseUnifiedDiff(diff)[0]);
  const lines = after.split('\n');
  assert.equal(lines[2], 'L3');
  assert.equal(lines[18], 'inserted');
  assert.equal(lines.length, 22);
});

test('malformed input is a DiffParseError naming the line', () => {
  assert.throws(() => parseUnifiedDiff('@@ -1 +1 @@\n-a\n+b\n'), DiffParseError);
  assert.throws(
    () => parseUnifiedDiff('--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n'),
    /shorter than its header/
  );
  assert.throws(() => parseUnifiedDiff('--- a/f\n+++ b/f\n@@ -x +1 @@\n'), /malformed hunk header/);
});

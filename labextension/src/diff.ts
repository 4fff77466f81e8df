/**
 * Unified diffs as the server produces them (`git diff`, `diff -u`): parsing, and applying
 * one file's hunks to a text so the panel can show "before" and "after" side by side.
 *
 * The server stays the only writer: this code never decides what lands on disk, it only
 * previews. Pure functions, no DOM, so they run under node's test runner.
 */

export type LineKind = ' ' | '-' | '+';

export interface IDiffLine {
  kind: LineKind;
  text: string;
  /** The line was followed by `\ No newline at end of file`. */
  noNewline?: boolean;
}

export interface IHunk {
  oldStart: number;
  oldLines: number;
  newStart: number;
  newLines: number;
  header: string;
  lines: IDiffLine[];
}

export type FileOp = 'modify' | 'create' | 'delete' | 'rename';

export interface IFileDiff {
  /** The path after the change (the old path for a delete). */
  path: string;
  oldPath: string | null;
  newPath: string | null;
  op: FileOp;
  hunks: IHunk[];
  binary: boolean;
}

export class DiffParseError extends Error {
  constructor(
    message: string,
    readonly lineNumber: number
  ) {
    super(`${message} (diff line ${lineNumber})`);
    this.name = 'DiffParseError';
  }
}

const HUNK_RE = /^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$/;

function stripPrefix(name: string): string | null {
  // `--- a/x`, `+++ b/x`, `--- /dev/null`, optional tab + timestamp from `diff -u`.
  let value = name.replace(/\t.*$/, '');
  if (value.startsWith('"') && value.endsWith('"')) {
    value = value.slice(1, -1);
  }
  if (value === '/dev/null') {
    return null;
  }
  return value.replace(/^[ab]\//, '');
}

/** Split into lines, keeping a CR that belongs to a CRLF file inside the line text. */
function splitDiffLines(diff: string): string[] {
  const lines = diff.split('\n');
  if (lines.length && lines[lines.length - 1] === '') {
    lines.pop();
  }
  return lines;
}

/** Parse a unified diff into files and hunks; throws `DiffParseError` on malformed input. */
export function parseUnifiedDiff(diff: string): IFileDiff[] {
  const lines = splitDiffLines(diff);
  const files: IFileDiff[] = [];
  let current: IFileDiff | null = null;
  let i = 0;

  const startFile = (): IFileDiff => {
    const file: IFileDiff = {
      path: '',
      oldPath: null,
      newPath: null,
      op: 'modify',
      hunks: [],
      binary: false
    };
    files.push(file);
    return file;
  };

  while (i < lines.length) {
    const line = lines[i];
    if (line.startsWith('diff --git ')) {
      current = startFile();
      const m = /^diff --git "?a\/(.+?)"? "?b\/(.+?)"?$/.exec(line);
      if (m) {
        current.oldPath = m[1];
        current.newPath = m[2];
        current.path = m[2];
      }
      i++;
      continue;
    }
    if (line.startsWith('--- ')) {
      if (!current || current.hunks.length > 0) {
        // A plain `diff -u` file (no `diff --git` line), or the next file of one.
        current = startFile();
      }
      const next = lines[i + 1];
      if (next === undefined || !next.startsWith('+++ ')) {
        throw new DiffParseError("'---' header without a '+++' line", i + 1);
      }
      current.oldPath = stripPrefix(line.slice(4));
      current.newPath = stripPrefix(next.slice(4));
      if (current.oldPath === null) {
        current.op = 'create';
      } else if (current.newPath === null) {
        current.op = 'delete';
      } else if (current.op !== 'rename' && current.oldPath !== current.newPath) {
        current.op = 'rename';
      }
      current.path = current.newPath ?? current.oldPath ?? '';
      i += 2;
      continue;
    }
    if (current && line.startsWith('new file mode')) {
      current.op = 'create';
      current.oldPath = null;
      i++;
      continue;
    }
    if (current && line.startsWith('deleted file mode')) {
      current.op = 'delete';
      current.path = current.oldPath ?? current.path;
      current.newPath = null;
      i++;
      continue;
    }
    if (current && line.startsWith('rename from ')) {
      current.op = 'rename';
      current.oldPath = line.slice('rename from '.length);
      i++;
      continue;
    }
    if (current && line.startsWith('rename to ')) {
      current.op = 'rename';
      current.newPath = line.slice('rename to '.length);
      current.path = current.newPath;
      i++;
      continue;
    }
    if (current && (line.startsWith('Binary files ') || line === 'GIT binary patch')) {
      current.binary = true;
      i++;
      continue;
    }
    if (line.startsWith('@@')) {
      if (!current) {
        throw new DiffParseError('hunk before any file header', i + 1);
      }
      const m = HUNK_RE.exec(line);
      if (!m) {
        throw new DiffParseError('malformed hunk header', i + 1);
      }
      const hunk: IHunk = {
        oldStart: Number(m[1]),
        oldLines: m[2] === undefined ? 1 : Number(m[2]),
        newStart: Number(m[3]),
        newLines: m[4] === undefined ? 1 : Number(m[4]),
        header: m[5].trim(),
        lines: []
      };
      i++;
      let oldSeen = 0;
      let newSeen = 0;
      while (i < lines.length && (oldSeen < hunk.oldLines || newSeen < hunk.newLines)) {
        const body = lines[i];
        const kind = body[0];
        if (body.startsWith('\\')) {
          const last = hunk.lines[hunk.lines.length - 1];
          if (last) {
            last.noNewline = true;
          }
          i++;
          continue;
        }
        if (kind !== ' ' && kind !== '-' && kind !== '+' && body !== '') {
          throw new DiffParseError('hunk is shorter than its header says', i + 1);
        }
        // An empty line inside a hunk is a context line whose space was stripped.
        const k: LineKind = body === '' ? ' ' : (kind as LineKind);
        hunk.lines.push({ kind: k, text: body.slice(1) });
        if (k !== '+') {
          oldSeen++;
        }
        if (k !== '-') {
          newSeen++;
        }
        i++;
      }
      if (oldSeen !== hunk.oldLines || newSeen !== hunk.newLines) {
        throw new DiffParseError('hunk is shorter than its header says', i);
      }
      // A trailing `\ No newline` marker belongs to the last line read.
      while (i < lines.length && lines[i].startsWith('\\')) {
        const last = hunk.lines[hunk.lines.length - 1];
        if (last) {
          last.noNewline = true;
        }
        i++;
      }
      current.hunks.push(hunk);
      continue;
    }
    // index lines, similarity index, mode lines, and free text before the first header.
    i++;
  }
  for (const file of files) {
    if (!file.path) {
      throw new DiffParseError('file without a path', 0);
    }
  }
  return files;
}

export class HunkMismatchError extends Error {
  constructor(
    readonly path: string,
    readonly hunkIndex: number
  ) {
    super(`hunk ${hunkIndex + 1} of ${path} does not match the text it should change`);
    this.name = 'HunkMismatchError';
  }
}

interface ISplitText {
  lines: string[];
  finalNewline: boolean;
}

function splitText(text: string): ISplitText {
  if (text === '') {
    return { lines: [], finalNewline: false };
  }
  const finalNewline = text.endsWith('\n');
  const lines = (finalNewline ? text.slice(0, -1) : text).split('\n');
  return { lines, finalNewline };
}

/**
 * Apply one file's hunks strictly (no fuzz, no offset), as the server does by default.
 * Returns the new text; throws `HunkMismatchError` when a hunk's old side differs.
 */
export function applyFileDiff(original: string, file: IFileDiff): string {
  if (file.op === 'delete') {
    return '';
  }
  const src = splitText(original);
  const out: string[] = [];
  let cursor = 0; // index into src.lines
  let finalNewline = src.finalNewline;
  file.hunks.forEach((hunk, index) => {
    // For an empty old side, git writes the line *after which* to insert.
    const start = hunk.oldLines === 0 ? hunk.oldStart : hunk.oldStart - 1;
    if (start < cursor || start > src.lines.length) {
      throw new HunkMismatchError(file.path, index);
    }
    out.push(...src.lines.slice(cursor, start));
    cursor = start;
    for (const line of hunk.lines) {
      if (line.kind === '+') {
        out.push(line.text);
        continue;
      }
      if (src.lines[cursor] !== line.text) {
        throw new HunkMismatchError(file.path, index);
      }
      if (line.kind === ' ') {
        out.push(line.text);
      }
      cursor++;
    }
    const last = [...hunk.lines].reverse().find(l => l.kind !== '-');
    const touchesEnd = cursor === src.lines.length;
    if (touchesEnd && last) {
      finalNewline = !last.noNewline;
    } else if (touchesEnd && !last) {
      // Deleting the tail leaves a line that was followed by a newline.
      finalNewline = out.length > 0;
    }
  });
  out.push(...src.lines.slice(cursor));
  if (out.length === 0) {
    return '';
  }
  return out.join('\n') + (finalNewline ? '\n' : '');
}

export interface IDiffStats {
  files: number;
  added: number;
  removed: number;
}

export function diffStats(files: IFileDiff[]): IDiffStats {
  let added = 0;
  let removed = 0;
  for (const f of files) {
    for (const h of f.hunks) {
      for (const l of h.lines) {
        if (l.kind === '+') {
          added++;
        } else if (l.kind === '-') {
          removed++;
        }
      }
    }
  }
  return { files: files.length, added, removed };
}

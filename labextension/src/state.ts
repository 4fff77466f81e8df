/**
 * The panel's state, kept out of the widget so the rules are testable: which phase the
 * rewrite flow is in, what may happen next, when applying must be refused, and how the
 * audit log becomes a history list.
 */
import { applyFileDiff, diffStats, IDiffStats, IFileDiff, parseUnifiedDiff } from './diff';
import type { IAuditRecord, ICodeRange, IRewriteResult } from './api';

export type Phase =
  | 'idle'
  | 'explaining'
  | 'rewriting'
  | 'reviewing'
  | 'applying'
  | 'applied'
  | 'conflict'
  | 'error';

/** A proposed rewrite the user is looking at. */
export interface IReview {
  range: ICodeRange;
  instruction: string;
  diff: string;
  base: Record<string, string>;
  files: IFileDiff[];
  path: string;
  before: string;
  after: string;
  stats: IDiffStats;
}

/** Build a review from the rewrite answer and the file's current text on disk. */
export function makeReview(
  range: ICodeRange,
  instruction: string,
  result: IRewriteResult,
  current: { content: string; sha256: string }
): IReview {
  const files = parseUnifiedDiff(result.diff);
  const file = files.find(f => f.path === range.path || f.oldPath === range.path) ?? files[0];
  if (!file) {
    throw new Error('the rewrite answer holds no file change');
  }
  const expected = result.base[file.oldPath ?? file.path];
  if (expected && expected !== current.sha256) {
    throw new StaleBaseError(file.path);
  }
  return {
    range,
    instruction,
    diff: result.diff,
    base: result.base,
    files,
    path: file.path,
    before: current.content,
    after: applyFileDiff(current.content, file),
    stats: diffStats(files)
  };
}

export class StaleBaseError extends Error {
  constructor(readonly path: string) {
    super(`${path} changed on disk after the rewrite was computed`);
    this.name = 'StaleBaseError';
  }
}

const NEXT: Record<Phase, Phase[]> = {
  idle: ['explaining', 'rewriting'],
  explaining: ['idle', 'error', 'explaining', 'rewriting'],
  rewriting: ['reviewing', 'idle', 'error', 'conflict'],
  reviewing: ['applying', 'idle', 'rewriting', 'explaining', 'conflict'],
  applying: ['applied', 'conflict', 'error', 'reviewing'],
  applied: ['idle', 'explaining', 'rewriting'],
  conflict: ['rewriting', 'idle', 'explaining'],
  error: ['idle', 'explaining', 'rewriting']
};

export class FlowState {
  private _phase: Phase = 'idle';
  private _review: IReview | null = null;
  message = '';

  get phase(): Phase {
    return this._phase;
  }

  get review(): IReview | null {
    return this._review;
  }

  canMove(to: Phase): boolean {
    return NEXT[this._phase].includes(to);
  }

  /** Move to `to`; throws on a transition the flow does not allow (a UI bug, not user input). */
  move(to: Phase, message = ''): void {
    if (!this.canMove(to)) {
      throw new Error(`cannot go from ${this._phase} to ${to}`);
    }
    this._phase = to;
    this.message = message;
    if (to === 'idle' || to === 'applied' || to === 'explaining') {
      this._review = null;
    }
  }

  propose(review: IReview): void {
    this.move('reviewing');
    this._review = review;
  }

  /** The last request, kept through a conflict so "Rewrite again" can repeat it. */
  lastRequest: { range: ICodeRange; instruction: string } | null = null;
}

export type ApplyDecision = { ok: true } | { ok: false; reason: string };

/**
 * Applying writes the file on disk and then reloads the open editor from disk. Reloading
 * a document with unsaved edits would throw those edits away, so refuse instead. A cell
 * patch rewrites the whole notebook file, so the notebook must be clean too.
 */
export function decideApply(editor: { dirty: boolean } | null, isNotebookCell: boolean): ApplyDecision {
  if (editor?.dirty) {
    return {
      ok: false,
      reason: isNotebookCell
        ? 'This notebook has unsaved changes. Applying would reload it from disk and lose them. Save the notebook, then rewrite the cell again.'
        : 'This file has unsaved changes. Applying would reload it from disk and lose them. Save (or revert) the file, then rewrite again.'
    };
  }
  return { ok: true };
}

/** One cell of a notebook file's JSON, with the notebook's language; null if absent. */
export function notebookCell(
  notebookJson: string,
  cellId: string
): { source: string; language: string } | null {
  let nb: {
    cells?: { id?: string; source?: string | string[] }[];
    metadata?: { language_info?: { name?: string }; kernelspec?: { language?: string } };
  };
  try {
    nb = JSON.parse(notebookJson);
  } catch {
    return null;
  }
  const cell = nb.cells?.find(c => c.id === cellId);
  if (!cell) {
    return null;
  }
  const source = Array.isArray(cell.source) ? cell.source.join('') : (cell.source ?? '');
  const language = nb.metadata?.language_info?.name ?? nb.metadata?.kernelspec?.language ?? 'python';
  return { source, language };
}

export interface IHistoryEntry {
  patchId: string;
  seq: number;
  when: Date;
  user: string;
  paths: string[];
  action: string;
  reverted: boolean;
  isRevert: boolean;
}

function patchIdOf(record: IAuditRecord): string | null {
  const id = record.patch_id ?? record['patch'];
  return typeof id === 'string' && id ? id : null;
}

function revertedIdOf(record: IAuditRecord): string | null {
  for (const key of ['reverts', 'reverted_patch_id', 'reverted']) {
    const id = record[key];
    if (typeof id === 'string' && id) {
      return id;
    }
  }
  return record.action.includes('revert') ? patchIdOf(record) : null;
}

/** The applied patches, newest first, each marked if a later record reverted it. */
export function historyFromAudit(records: IAuditRecord[]): IHistoryEntry[] {
  const reverted = new Set<string>();
  for (const r of records) {
    const id = revertedIdOf(r);
    if (id) {
      reverted.add(id);
    }
  }
  return records
    .filter(r => r.action.includes('apply') || r.action.includes('revert'))
    .map(r => {
      const isRevert = r.action.includes('revert');
      const id = isRevert ? revertedIdOf(r) : patchIdOf(r);
      return {
        patchId: id ?? '',
        seq: r.seq,
        when: new Date(r.ts * 1000),
        user: r.user,
        paths: r.paths,
        action: r.action,
        reverted: !isRevert && id !== null && reverted.has(id),
        isRevert
      };
    })
    .filter(e => e.patchId !== '')
    .sort((a, b) => b.seq - a.seq);
}

/** 1-based inclusive line range of a selection; an empty selection means the whole text. */
export function selectionLines(
  text: string,
  start: { line: number; column: number },
  end: { line: number; column: number }
): { start_line: number; end_line: number; empty: boolean } {
  const total = Math.max(1, text.split('\n').length - (text.endsWith('\n') ? 1 : 0));
  let [a, b] = start.line < end.line || (start.line === end.line && start.column <= end.column)
    ? [start, end]
    : [end, start];
  if (a.line === b.line && a.column === b.column) {
    return { start_line: 1, end_line: total, empty: true };
  }
  // A selection ending at column 0 does not include that line.
  if (b.column === 0 && b.line > a.line) {
    b = { line: b.line - 1, column: Number.MAX_SAFE_INTEGER };
  }
  a = a.line < 0 ? { line: 0, column: 0 } : a;
  return {
    start_line: a.line + 1,
    end_line: Math.min(b.line + 1, total),
    empty: false
  };
}

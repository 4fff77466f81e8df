/**
 * The panel's Rewrite section: an instruction, the proposed diff to review, Apply (through
 * `patch/apply`, or `patch/cell/apply` for a notebook cell) and Discard, and the 409 offer
 * to rewrite again when the file changed on disk in between.
 */
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';

import { api, ICodeRange, IModelOptions, IRewriteResult, IUsage } from './api';
import { OpenDocuments } from './documents';
import { button, el } from './dom';
import { ApiError, describeError, isConflict } from './errors';
import { ReviewBox } from './review';
import { decideApply, FlowState, makeReview, notebookCell, StaleBaseError } from './state';
import { ISnapshot } from './tracker';

/** What the section needs from the panel around it. */
export interface IRewriteHost {
  readonly flow: FlowState;
  say(message: string, kind?: 'info' | 'error' | 'ok'): void;
  requireSnapshot(): ISnapshot | null;
  options(): IModelOptions;
  noteGateway(error: unknown | null): void;
  noteUsage(usage: IUsage | undefined): void;
  lastTokens(): number | undefined;
  updateButtons(): void;
  renderContext(): void;
  /** A patch was applied: refresh the history. */
  applied(): void;
}

function conflictDetail(error: unknown): string {
  if (error instanceof StaleBaseError) {
    return error.message;
  }
  const message = error instanceof ApiError ? error.body?.message : undefined;
  return (message ?? 'it no longer matches the proposal').replace(/\.$/, '');
}

export class RewriteSection {
  readonly instruction = el('textarea', {
    className: 'cy-instruction jp-mod-styled',
    attrs: { rows: '3', placeholder: 'Instruction, e.g. "add type hints"', 'aria-label': 'Instruction' }
  });
  readonly rewriteBtn = button('Rewrite', 'jp-mod-accept cy-rewrite', () => void this.rewrite());
  readonly applyBtn = button('Apply', 'jp-mod-accept cy-apply', () => void this.apply());
  readonly discardBtn = button('Discard', 'jp-mod-reject cy-discard', () => this.discard());
  readonly node: HTMLElement;
  private conflictBox = el('div', { className: 'cy-conflict', attrs: { role: 'alert' } });
  private review: ReviewBox;
  private abort: AbortController | null = null;

  constructor(
    private host: IRewriteHost,
    private documents: OpenDocuments,
    languages: IEditorLanguageRegistry | null
  ) {
    this.review = new ReviewBox(languages, el('div', { className: 'cy-buttons' }, this.applyBtn, this.discardBtn));
    this.node = el(
      'section',
      { className: 'cy-section cy-section-rewrite' },
      el('h3', { text: 'Rewrite' }),
      this.instruction,
      el('div', { className: 'cy-buttons' }, this.rewriteBtn),
      this.conflictBox,
      this.review.node
    );
    this.conflictBox.hidden = true;
    this.instruction.addEventListener('keydown', ev => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        void this.rewrite();
      }
    });
  }

  focus(): void {
    this.instruction.focus();
  }

  stop(): void {
    this.abort?.abort();
  }

  async rewrite(again = false): Promise<void> {
    let range;
    let instruction: string;
    let snap: ISnapshot | null = null;
    if (again && this.host.flow.lastRequest) {
      ({ range, instruction } = this.host.flow.lastRequest);
    } else {
      snap = this.host.requireSnapshot();
      if (!snap) {
        return;
      }
      instruction = this.instruction.value.trim();
      if (!instruction) {
        this.host.say('Type an instruction for the rewrite first.', 'error');
        this.focus();
        return;
      }
      range = snap.range;
    }
    if (!this.host.flow.canMove('rewriting')) {
      return;
    }
    this.clearReview();
    this.host.flow.move('rewriting');
    this.host.flow.lastRequest = { range, instruction };
    this.conflictBox.hidden = true;
    this.host.updateButtons();
    this.host.say(`Rewriting ${range.path} lines ${range.start_line}–${range.end_line}…`);
    const ctrl = new AbortController();
    this.abort = ctrl;
    try {
      const result = await api.rewrite(range, instruction, this.host.options(), ctrl.signal);
      this.host.noteGateway(null);
      this.host.noteUsage(result.usage);
      if (result.unchanged || !result.diff) {
        this.host.flow.move('idle');
        this.host.say('The model proposed no change.', 'info');
        return;
      }
      if (range.cell_id) {
        await this.showCellReview(range, instruction, result);
        return;
      }
      const current = await api.readFile(range.path);
      const review = makeReview(range, instruction, result, current);
      this.host.flow.propose(review);
      const tokens = this.host.lastTokens();
      const summary = `${review.path}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
      await this.review.show(summary, review.path, review.before, review.after);
      this.host.say('Review the proposed change, then Apply or Discard.');
    } catch (error) {
      if (error instanceof StaleBaseError || isConflict(error)) {
        this.showConflict(conflictDetail(error));
      } else if (ctrl.signal.aborted) {
        this.host.flow.move('idle');
        this.host.say('Stopped.');
      } else {
        this.host.noteGateway(error);
        this.host.flow.move('error');
        this.host.say(describeError(error), 'error');
      }
    } finally {
      this.abort = null;
      this.host.updateButtons();
      this.host.renderContext();
    }
  }

  /**
   * A cell rewrite's diff is of the cell's source. The review shows it against that cell as
   * saved in the notebook file, which is what the server's `base` hash describes.
   */
  private async showCellReview(range: ICodeRange, instruction: string, result: IRewriteResult): Promise<void> {
    const notebook = await api.readFile(range.path);
    if (result.base[range.path] && result.base[range.path] !== notebook.sha256) {
      throw new StaleBaseError(range.path);
    }
    const cell = notebookCell(notebook.content, range.cell_id ?? '');
    if (!cell) {
      throw new StaleBaseError(range.path);
    }
    const review = {
      ...makeReview(range, instruction, result, { content: cell.source, sha256: notebook.sha256 }),
      path: range.path
    };
    this.host.flow.propose(review);
    const tokens = this.host.lastTokens();
    const summary = `${range.path} · cell ${range.cell_id}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
    await this.review.show(summary, range.path, review.before, review.after, cell.language);
    this.host.say('Review the proposed change to the cell, then Apply or Discard.');
  }

  private showConflict(detail: string): void {
    this.clearReview();
    this.host.flow.move('conflict');
    this.conflictBox.replaceChildren(
      el('div', {
        className: 'cy-conflict-text',
        text: `File changed on disk: ${detail}. Nothing was written; rewrite again to get a proposal for the current file.`
      }),
      button('Rewrite again', 'jp-mod-accept cy-rerun', () => void this.rewrite(true))
    );
    this.conflictBox.hidden = false;
    this.host.say('The file changed since the rewrite was computed; nothing was written.', 'error');
  }

  async apply(): Promise<void> {
    const review = this.host.flow.review;
    if (!review || this.host.flow.phase !== 'reviewing') {
      this.host.say('There is no proposed change to apply.', 'error');
      return;
    }
    const paths = Array.from(new Set([review.path, ...Object.keys(review.base)]));
    const dirty = this.documents.dirty(paths);
    const decision = decideApply(dirty ? { dirty: true } : null, Boolean(review.range.cell_id));
    if (!decision.ok) {
      this.host.say(decision.reason, 'error');
      return;
    }
    this.host.flow.move('applying');
    this.host.updateButtons();
    this.host.say(`Applying to ${review.path}…`);
    try {
      const cellId = review.range.cell_id;
      const result = cellId
        ? await api.applyCellPatch(review.path, cellId, review.diff, review.base)
        : await api.applyPatch(review.diff, review.base);
      this.host.flow.move('applied');
      this.clearReview();
      await this.documents.reloadUnlessDirty(result.files.map(f => f.path));
      const where = result.files.map(f => f.path).join(', ');
      this.host.say(`Applied patch ${result.patch_id} to ${cellId ? `cell ${cellId} of ` : ''}${where}.`, 'ok');
      this.host.applied();
    } catch (error) {
      if (isConflict(error)) {
        this.showConflict(conflictDetail(error));
      } else {
        this.host.flow.move('error');
        this.clearReview();
        this.host.say(describeError(error), 'error');
      }
    } finally {
      this.host.updateButtons();
    }
  }

  discard(): void {
    if (this.host.flow.phase !== 'reviewing') {
      return;
    }
    this.clearReview();
    this.host.flow.move('idle');
    this.host.say('Discarded the proposed change.');
    this.host.updateButtons();
  }

  clearReview(): void {
    this.review.clear();
    if (this.host.flow.phase !== 'conflict') {
      this.conflictBox.hidden = true;
    }
  }
}

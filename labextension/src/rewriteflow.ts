/**
 * The panel's Rewrite section: an instruction, the proposed diff to review, Apply (through
 * `patch/apply`, or `patch/cell/apply` for a notebook cell) and Discard, and the 409 offer
 * to rewrite again when the file changed on disk in between.
 *
 * The model is small, so two more things sit around the review. Before a proposal is shown
 * the server checks it (`patch/validate` with the selection): one that breaks parsing or
 * reaches outside the selection gets a warning, and Apply stays disabled until the user
 * ticks "Apply anyway". A rewrite that ran out of tokens or proposed nothing offers next
 * steps: a smaller selection, more tokens (up to the server's bound), the raw answer.
 */
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';

import { api, ICodeRange, IModelOptions, IProposalChecks, IRewriteResult, IUsage } from './api';
import { OpenDocuments } from './documents';
import { button, el } from './dom';
import { ApiError, describeError, isConflict } from './errors';
import {
  ApplyGate,
  breaksParsing,
  checksCoverage,
  INextSteps,
  limitFromError,
  nextSteps,
  proposalWarnings,
  Shortfall,
  shortfallText
} from './proposal';
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
  /** The server's bound on `max_tokens`, when known (from `GET status` or a 400). */
  maxTokensLimit(): number | null;
  noteMaxTokensLimit(limit: number): void;
}

/** What one rewrite request asks beyond the last one: another range, more tokens. */
export interface IRewriteOverride {
  range?: ICodeRange;
  maxTokens?: number;
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
  /** Apply waits for "Apply anyway" when the checks warn. */
  readonly gate = new ApplyGate();
  private warnings = el('div', { className: 'cy-checks', attrs: { role: 'alert' } });
  private coverage = el('div', { className: 'cy-checks-coverage' });
  readonly confirm = el('input', {
    className: 'cy-confirm',
    attrs: { type: 'checkbox', id: 'cy-confirm-apply' }
  });
  private confirmRow = el(
    'label',
    { className: 'cy-confirm-row', attrs: { for: 'cy-confirm-apply' } },
    this.confirm,
    'Apply anyway'
  );
  private nextBox = el('div', { className: 'cy-next', attrs: { role: 'group', 'aria-label': 'Next steps' } });
  private rawBox = el('pre', { className: 'cy-raw', attrs: { id: 'cy-raw-answer', tabindex: '0' } });

  constructor(
    private host: IRewriteHost,
    private documents: OpenDocuments,
    languages: IEditorLanguageRegistry | null
  ) {
    this.review = new ReviewBox(
      languages,
      el('div', { className: 'cy-buttons' }, this.applyBtn, this.discardBtn),
      el('div', { className: 'cy-checks-box' }, this.warnings, this.confirmRow, this.coverage)
    );
    this.node = el(
      'section',
      { className: 'cy-section cy-section-rewrite' },
      el('h3', { text: 'Rewrite' }),
      this.instruction,
      el('div', { className: 'cy-buttons' }, this.rewriteBtn),
      this.conflictBox,
      this.nextBox,
      this.review.node
    );
    this.conflictBox.hidden = true;
    this.nextBox.hidden = true;
    this.confirm.addEventListener('change', () => {
      this.gate.confirmed = this.confirm.checked;
      this.host.updateButtons();
    });
    this.instruction.addEventListener('keydown', ev => {
      // Ctrl+Alt+Enter is Apply (a command); only Ctrl+Enter sends.
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey) && !ev.altKey) {
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

  async rewrite(again = false, override: IRewriteOverride = {}): Promise<void> {
    let range;
    let instruction: string;
    let snap: ISnapshot | null = null;
    if (again && this.host.flow.lastRequest) {
      ({ range, instruction } = this.host.flow.lastRequest);
      range = override.range ?? range;
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
    const options = {
      ...this.host.options(),
      ...(override.maxTokens ? { max_tokens: override.maxTokens } : {})
    };
    try {
      const result = await api.rewrite(range, instruction, options, ctrl.signal);
      this.host.noteGateway(null);
      this.host.noteUsage(result.usage);
      const used = typeof result.usage?.max_tokens === 'number' ? result.usage.max_tokens : options.max_tokens;
      if (result.unchanged || !result.diff) {
        this.host.flow.move('idle');
        const why: Shortfall = result.finish_reason === 'length' ? 'length' : 'unchanged';
        this.showNextSteps(nextSteps(why, range, used, this.host.maxTokensLimit(), result.raw), used);
        const cut = why === 'length' ? ` ${shortfallText(why, used)}` : '';
        this.host.say(`The model proposed no change.${cut}`, 'info');
        return;
      }
      if (result.finish_reason === 'length') {
        // Cut off, yet it held code: offer the next steps next to the review.
        this.showNextSteps(nextSteps('length', range, used, this.host.maxTokensLimit(), result.raw), used);
      }
      if (range.cell_id) {
        await this.showCellReview(range, instruction, result);
        return;
      }
      const current = await api.readFile(range.path);
      const review = makeReview(range, instruction, result, current);
      this.host.flow.propose(review);
      const checks = await this.checksOf(range, result);
      const tokens = this.host.lastTokens();
      const summary = `${review.path}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
      this.showChecks(checks);
      await this.review.show(summary, review.path, review.before, review.after);
      this.host.say(this.reviewText('Review the proposed change, then Apply or Discard.', checks));
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
        this.offerAfterError(error, range, options.max_tokens);
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
    const checks = await this.checksOf(range, result);
    const tokens = this.host.lastTokens();
    const summary = `${range.path} · cell ${range.cell_id}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
    this.showChecks(checks);
    await this.review.show(summary, range.path, review.before, review.after, cell.language);
    this.host.say(this.reviewText('Review the proposed change to the cell, then Apply or Discard.', checks));
  }

  /**
   * The checks the gate goes by: the server's `patch/validate` (or `patch/cell/validate`)
   * of this diff against the selection, i.e. against the file as it is now; the rewrite
   * answer's own `checks` if validate cannot answer.
   */
  private async checksOf(range: ICodeRange, result: IRewriteResult): Promise<IProposalChecks | null> {
    try {
      const verdict = range.cell_id
        ? await api.validateCellPatch(range.path, range.cell_id, result.diff, result.base, range)
        : await api.validatePatch(result.diff, result.base, range);
      if (verdict.checks) {
        return verdict.checks;
      }
    } catch {
      // Validate refused (an older server, a 409 that Apply will report): use the answer's.
    }
    return result.checks ?? null;
  }

  private reviewText(lead: string, checks: IProposalChecks | null): string {
    if (!this.gate.needsConfirmation) {
      return lead;
    }
    const why = breaksParsing(checks) ? 'it breaks parsing' : 'it reaches outside your selection';
    return `${lead} Careful: ${why}; tick “Apply anyway” to apply it.`;
  }

  private showChecks(checks: IProposalChecks | null): void {
    this.gate.reset(checks);
    const warnings = proposalWarnings(checks);
    this.warnings.replaceChildren(...warnings.map(text => el('div', { className: 'cy-check-warning', text })));
    this.warnings.hidden = warnings.length === 0;
    this.confirm.checked = false;
    this.confirmRow.hidden = !this.gate.needsConfirmation;
    this.coverage.textContent = checksCoverage(checks);
    this.host.updateButtons();
  }

  /** A 422 without usable code, or a 400 naming the `max_tokens` bound: offer next steps. */
  private offerAfterError(error: unknown, range: ICodeRange, sent: number | undefined): void {
    if (!(error instanceof ApiError)) {
      return;
    }
    const body = error.body ?? {};
    const limit = limitFromError(body);
    if (limit !== null) {
      this.host.noteMaxTokensLimit(limit);
      return;
    }
    if (error.status !== 422) {
      return;
    }
    const usage = body.usage as IUsage | undefined;
    const used = typeof usage?.max_tokens === 'number' ? usage.max_tokens : sent;
    const why: Shortfall = body.error === 'answer_truncated' || body.finish_reason === 'length' ? 'length' : 'no_code';
    const raw = typeof body.raw === 'string' ? body.raw : undefined;
    this.showNextSteps(nextSteps(why, range, used, this.host.maxTokensLimit(), raw), used);
  }

  /**
   * The next-step box: retry with half the selection, retry with more tokens, the raw
   * answer. With `steps` null only the raw answer is offered (a proposal that came through).
   */
  private showNextSteps(steps: INextSteps | null, used: number | undefined, raw?: string): void {
    const children: HTMLElement[] = [];
    const rawText = steps ? steps.raw : raw && raw.trim() ? raw : null;
    if (steps) {
      children.push(el('div', { className: 'cy-next-text', text: shortfallText(steps.why, used) }));
      const buttons = el('div', { className: 'cy-buttons' });
      if (steps.smaller) {
        const half = steps.smaller;
        const b = button('Retry with a smaller selection', 'cy-retry-smaller', () => void this.rewrite(true, { range: half }));
        b.title = `Lines ${half.start_line}–${half.end_line}`;
        buttons.append(b);
      }
      if (steps.moreTokens !== null) {
        const more = steps.moreTokens;
        const b = button('Retry with more tokens', 'cy-retry-tokens', () => void this.rewrite(true, { maxTokens: more }));
        b.title = `max_tokens ${more}`;
        buttons.append(b);
      } else {
        children.push(
          el('div', {
            className: 'cy-next-note',
            text: `Already at this server's max_tokens bound (${this.host.maxTokensLimit() ?? used}).`
          })
        );
      }
      children.push(buttons);
    }
    if (rawText !== null) {
      this.rawBox.textContent = rawText;
      this.rawBox.hidden = true;
      const toggle = button('Show raw answer', 'cy-show-raw', () => {
        this.rawBox.hidden = !this.rawBox.hidden;
        toggle.textContent = this.rawBox.hidden ? 'Show raw answer' : 'Hide raw answer';
        toggle.setAttribute('aria-expanded', String(!this.rawBox.hidden));
      });
      toggle.setAttribute('aria-expanded', 'false');
      toggle.setAttribute('aria-controls', 'cy-raw-answer');
      const row = children.find(c => c.classList.contains('cy-buttons'));
      if (row) {
        row.append(toggle);
      } else {
        children.push(el('div', { className: 'cy-buttons' }, toggle));
      }
      children.push(this.rawBox);
    }
    this.nextBox.replaceChildren(...children);
    this.nextBox.hidden = children.length === 0;
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
    if (!this.gate.open) {
      this.host.say('This proposal has a warning: tick “Apply anyway” first, or Discard it.', 'error');
      this.confirm.focus();
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
    this.gate.reset(null);
    this.nextBox.hidden = true;
    this.nextBox.replaceChildren();
    if (this.host.flow.phase !== 'conflict') {
      this.conflictBox.hidden = true;
    }
  }
}

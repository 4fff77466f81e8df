/**
 * The "Codeyard AI" side panel: context, explain (streamed), rewrite as a reviewable diff
 * with apply/discard, and the workspace's patch history with revert.
 *
 * Plain DOM inside a Lumino widget: the panel is a handful of forms, and the one rich part
 * (the diff) is a CodeMirror view. The rules live in `state.ts`; this file wires them.
 */
import { EditorView } from '@codemirror/view';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { api, ICodeRange, IModelOptions, IRewriteResult, IUsage } from './api';
import { createDiffView } from './diffview';
import { ApiError, describeError, isConflict } from './errors';
import { decideApply, FlowState, historyFromAudit, makeReview, notebookCell, StaleBaseError } from './state';
import { ActiveCodeTracker, ISnapshot } from './tracker';

export interface IPanelSettings {
  contextLines: number;
  maxTokens: number;
  followSelection: boolean;
  inlineCompletion: boolean;
}

export const DEFAULT_SETTINGS: IPanelSettings = {
  contextLines: 20,
  maxTokens: 1024,
  followSelection: true,
  inlineCompletion: true
};

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; title?: string; attrs?: Record<string, string> } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  if (props.title) {
    node.title = props.title;
  }
  for (const [k, v] of Object.entries(props.attrs ?? {})) {
    node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

function conflictDetail(error: unknown): string {
  if (error instanceof StaleBaseError) {
    return error.message;
  }
  const message = error instanceof ApiError ? error.body?.message : undefined;
  return (message ?? 'it no longer matches the proposal').replace(/\.$/, '');
}

function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', {
    className: `jp-Button jp-mod-styled ${className}`,
    text: label,
    attrs: { type: 'button' }
  });
  b.addEventListener('click', onClick);
  return b;
}

export class CodeyardPanel extends Widget {
  settings: IPanelSettings = { ...DEFAULT_SETTINGS };
  readonly flow = new FlowState();

  private explainAbort: AbortController | null = null;
  private rewriteAbort: AbortController | null = null;
  private diffView: EditorView | null = null;
  private lastUsage: IUsage | null = null;
  private explainText = '';
  private renderPending = false;

  // DOM
  private contextBox = el('div', { className: 'cy-context' });
  private statusLine = el('div', { className: 'cy-status', attrs: { role: 'status', 'aria-live': 'polite' } });
  private questionInput = el('input', {
    className: 'cy-question jp-mod-styled',
    attrs: { type: 'text', placeholder: 'Optional question about the selection', 'aria-label': 'Question' }
  });
  private explainBtn = button('Explain', 'jp-mod-accept cy-explain', () => void this.explain());
  private stopBtn = button('Stop', 'jp-mod-warn cy-stop', () => this.stop());
  private explainOut = el('div', { className: 'cy-explain-output', attrs: { 'aria-live': 'polite' } });
  private instructionInput = el('textarea', {
    className: 'cy-instruction jp-mod-styled',
    attrs: { rows: '3', placeholder: 'Instruction, e.g. "add type hints"', 'aria-label': 'Instruction' }
  });
  private rewriteBtn = button('Rewrite', 'jp-mod-accept cy-rewrite', () => void this.rewrite());
  private review = el('div', { className: 'cy-review' });
  private reviewSummary = el('div', { className: 'cy-review-summary' });
  private diffBox = el('div', { className: 'cy-diff' });
  private applyBtn = button('Apply', 'jp-mod-accept cy-apply', () => void this.apply());
  private discardBtn = button('Discard', 'jp-mod-reject cy-discard', () => this.discard());
  private conflictBox = el('div', { className: 'cy-conflict', attrs: { role: 'alert' } });
  private historyList = el('ul', { className: 'cy-history-list' });
  private historyStatus = el('div', { className: 'cy-history-status' });

  constructor(
    private tracker: ActiveCodeTracker,
    private rendermime: IRenderMimeRegistry | null,
    private languages: IEditorLanguageRegistry | null,
    private docManager: IDocumentManager | null
  ) {
    super();
    this.id = 'codeyard-ai-panel';
    this.addClass('cy-Panel');
    this.title.caption = 'Codeyard AI';
    this.build();
    tracker.changed.connect(() => this.scheduleContext(), this);
    this.renderContext();
    this.updateButtons();
  }

  // ---- layout -------------------------------------------------------------------------

  private build(): void {
    const root = this.node;
    root.append(
      el('h2', { className: 'cy-title', text: 'Codeyard AI' }),
      this.contextBox,
      this.statusLine,
      el(
        'section',
        { className: 'cy-section cy-section-explain' },
        el('h3', { text: 'Explain' }),
        this.questionInput,
        el('div', { className: 'cy-buttons' }, this.explainBtn, this.stopBtn),
        this.explainOut
      ),
      el(
        'section',
        { className: 'cy-section cy-section-rewrite' },
        el('h3', { text: 'Rewrite' }),
        this.instructionInput,
        el('div', { className: 'cy-buttons' }, this.rewriteBtn),
        this.conflictBox,
        this.review
      ),
      el(
        'section',
        { className: 'cy-section cy-section-history' },
        el(
          'div',
          { className: 'cy-history-head' },
          el('h3', { text: 'History' }),
          button('Refresh', 'cy-history-refresh', () => void this.refreshHistory())
        ),
        this.historyStatus,
        this.historyList
      )
    );
    this.review.append(
      this.reviewSummary,
      this.diffBox,
      el('div', { className: 'cy-buttons' }, this.applyBtn, this.discardBtn)
    );
    this.review.hidden = true;
    this.conflictBox.hidden = true;
    this.instructionInput.addEventListener('keydown', ev => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        void this.rewrite();
      }
    });
    this.questionInput.addEventListener('keydown', ev => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        void this.explain();
      }
    });
  }

  focusInstruction(): void {
    this.instructionInput.focus();
  }

  private say(message: string, kind: 'info' | 'error' | 'ok' = 'info'): void {
    this.statusLine.textContent = message;
    this.statusLine.dataset.kind = kind;
    this.statusLine.setAttribute('role', kind === 'error' ? 'alert' : 'status');
  }

  private contextPending = false;
  private scheduleContext(): void {
    if (this.contextPending) {
      return;
    }
    this.contextPending = true;
    requestAnimationFrame(() => {
      this.contextPending = false;
      this.renderContext();
    });
  }

  private renderContext(): void {
    const snap = this.tracker.snapshot();
    const box = this.contextBox;
    box.replaceChildren();
    if (!snap) {
      box.append(el('div', { className: 'cy-context-empty', text: 'Open a file or a notebook cell.' }));
    } else {
      const where =
        snap.code.kind === 'cell'
          ? `${snap.code.path} · cell ${(snap.code.cellIndex ?? 0) + 1}`
          : snap.code.path;
      const lines = snap.selectionEmpty
        ? `whole ${snap.code.kind === 'cell' ? 'cell' : 'file'} (lines ${snap.range.start_line}–${snap.range.end_line})`
        : `lines ${snap.range.start_line}–${snap.range.end_line}`;
      box.append(
        el('div', { className: 'cy-context-path', text: where, title: where }),
        el('div', { className: 'cy-context-selection', text: `Selection: ${lines}` })
      );
      if (snap.dirty) {
        box.append(
          el('div', {
            className: 'cy-context-dirty',
            text: 'Unsaved changes: the model reads the saved file.'
          })
        );
      }
    }
    const u = this.lastUsage;
    const model = u?.model ?? (u ? 'workspace default (not named by the server)' : 'not used yet');
    const tokens = u ? ` · last call ${u.total_tokens ?? '?'} tokens` : '';
    box.append(el('div', { className: 'cy-context-model', text: `Model: ${model}${tokens}` }));
    box.append(el('div', { className: 'cy-context-gateway', text: `Gateway: ${this.gatewayText}` }));
  }

  /**
   * There is no health endpoint in the server contract yet, so the gateway's state is what
   * the last model call showed; probing a missing endpoint on every page load would only
   * add 404s.
   */
  private gatewayText = 'not checked yet (checked on the first explain or rewrite)';

  private noteGateway(error: unknown | null): void {
    const time = new Date().toLocaleTimeString();
    if (error === null) {
      this.gatewayText = `healthy (answered at ${time})`;
    } else if (error instanceof ApiError && [502, 503, 504].includes(error.status)) {
      this.gatewayText = `unavailable at ${time}: ${describeError(error)}`;
    } else {
      return;
    }
    this.renderContext();
  }

  private updateButtons(): void {
    const phase = this.flow.phase;
    const busy = phase === 'rewriting' || phase === 'applying';
    this.explainBtn.disabled = phase === 'explaining' || busy;
    this.stopBtn.disabled = phase !== 'explaining' && phase !== 'rewriting';
    this.rewriteBtn.disabled = busy || phase === 'explaining';
    this.applyBtn.disabled = phase !== 'reviewing';
    this.discardBtn.disabled = phase !== 'reviewing';
    this.node.dataset.phase = phase;
  }

  private options(): IModelOptions {
    return { max_tokens: this.settings.maxTokens, context_lines: this.settings.contextLines };
  }

  private requireSnapshot(): ISnapshot | null {
    const snap = this.tracker.snapshot();
    if (!snap) {
      this.say('Open a file or a notebook cell first, then select the code to work on.', 'error');
    }
    return snap;
  }

  // ---- explain ------------------------------------------------------------------------

  async explain(): Promise<void> {
    const snap = this.requireSnapshot();
    if (!snap || !this.flow.canMove('explaining')) {
      return;
    }
    this.clearReview();
    this.flow.move('explaining');
    this.updateButtons();
    const ctrl = new AbortController();
    this.explainAbort = ctrl;
    this.explainText = '';
    this.explainOut.replaceChildren();
    this.explainOut.dataset.state = 'streaming';
    this.say(`Explaining ${snap.range.path} lines ${snap.range.start_line}–${snap.range.end_line}…`);
    let failed: string | null = null;
    try {
      const question = this.questionInput.value.trim();
      await api.explain(
        { ...snap.range, ...(question ? { question } : {}) },
        this.options(),
        event => {
          if (event.error) {
            failed = event.message ?? event.error;
            return;
          }
          if (event.delta) {
            this.explainText += event.delta;
            this.scheduleMarkdown();
          }
          if (event.usage) {
            this.lastUsage = event.usage;
          }
        },
        ctrl.signal
      );
      this.noteGateway(null);
      if (failed) {
        this.say(`The explanation stopped with an error: ${failed}`, 'error');
      } else if (ctrl.signal.aborted) {
        this.say('Stopped.');
      } else {
        this.say(this.usageText('Explained'), 'ok');
      }
    } catch (error) {
      this.noteGateway(error);
      this.say(ctrl.signal.aborted ? 'Stopped.' : describeError(error), ctrl.signal.aborted ? 'info' : 'error');
    } finally {
      this.explainAbort = null;
      this.explainOut.dataset.state = ctrl.signal.aborted ? 'stopped' : 'done';
      await this.renderMarkdown();
      if (this.flow.phase === 'explaining') {
        this.flow.move('idle');
      }
      this.updateButtons();
      this.renderContext();
    }
  }

  stop(): void {
    this.explainAbort?.abort();
    this.rewriteAbort?.abort();
  }

  private usageText(verb: string): string {
    const u = this.lastUsage;
    if (!u) {
      return `${verb}.`;
    }
    const tokens = u.total_tokens ?? (u.prompt_tokens ?? 0) + (u.completion_tokens ?? 0);
    return `${verb} (${tokens} tokens${u.model ? `, ${u.model}` : ''}).`;
  }

  private scheduleMarkdown(): void {
    if (this.renderPending) {
      return;
    }
    this.renderPending = true;
    setTimeout(() => {
      this.renderPending = false;
      void this.renderMarkdown();
    }, 80);
  }

  private async renderMarkdown(): Promise<void> {
    const text = this.explainText;
    if (!this.rendermime) {
      this.explainOut.textContent = text;
      return;
    }
    const renderer = this.rendermime.createRenderer('text/markdown');
    await renderer.renderModel(new MimeModel({ data: { 'text/markdown': text } }));
    if (text === this.explainText) {
      this.explainOut.replaceChildren(renderer.node);
    }
  }

  // ---- rewrite / review / apply -------------------------------------------------------

  async rewrite(again = false): Promise<void> {
    let range;
    let instruction: string;
    let snap: ISnapshot | null = null;
    if (again && this.flow.lastRequest) {
      ({ range, instruction } = this.flow.lastRequest);
    } else {
      snap = this.requireSnapshot();
      if (!snap) {
        return;
      }
      instruction = this.instructionInput.value.trim();
      if (!instruction) {
        this.say('Type an instruction for the rewrite first.', 'error');
        this.focusInstruction();
        return;
      }
      range = snap.range;
    }
    if (!this.flow.canMove('rewriting')) {
      return;
    }
    this.clearReview();
    this.flow.move('rewriting');
    this.flow.lastRequest = { range, instruction };
    this.conflictBox.hidden = true;
    this.updateButtons();
    this.say(`Rewriting ${range.path} lines ${range.start_line}–${range.end_line}…`);
    const ctrl = new AbortController();
    this.rewriteAbort = ctrl;
    try {
      const result = await api.rewrite(range, instruction, this.options(), ctrl.signal);
      this.noteGateway(null);
      this.lastUsage = result.usage ?? this.lastUsage;
      if (result.unchanged || !result.diff) {
        this.flow.move('idle');
        this.say('The model proposed no change.', 'info');
        return;
      }
      if (range.cell_id) {
        await this.showCellReview(range, instruction, result);
        return;
      }
      const current = await api.readFile(range.path);
      const review = makeReview(range, instruction, result, current);
      this.flow.propose(review);
      const tokens = this.lastUsage?.total_tokens;
      this.reviewSummary.textContent = `${review.path}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
      this.review.hidden = false;
      this.diffView = await createDiffView(this.diffBox, review.path, review.before, review.after, this.languages);
      this.say('Review the proposed change, then Apply or Discard.');
    } catch (error) {
      if (error instanceof StaleBaseError || isConflict(error)) {
        this.showConflict(conflictDetail(error));
      } else if (ctrl.signal.aborted) {
        this.flow.move('idle');
        this.say('Stopped.');
      } else {
        this.noteGateway(error);
        this.flow.move('error');
        this.say(describeError(error), 'error');
      }
    } finally {
      this.rewriteAbort = null;
      this.updateButtons();
      this.renderContext();
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
    this.flow.propose(review);
    const tokens = this.lastUsage?.total_tokens;
    this.reviewSummary.textContent = `${range.path} · cell ${range.cell_id}: +${review.stats.added} −${review.stats.removed}${tokens ? ` · ${tokens} tokens` : ''}`;
    this.review.hidden = false;
    this.diffView = await createDiffView(this.diffBox, range.path, review.before, review.after, this.languages, cell.language);
    this.say('Review the proposed change to the cell, then Apply or Discard.');
  }

  private showConflict(detail: string): void {
    this.clearReview();
    this.flow.move('conflict');
    this.conflictBox.replaceChildren(
      el('div', {
        className: 'cy-conflict-text',
        text: `File changed on disk: ${detail}. Nothing was written; rewrite again to get a proposal for the current file.`
      }),
      button('Rewrite again', 'jp-mod-accept cy-rerun', () => void this.rewrite(true))
    );
    this.conflictBox.hidden = false;
    this.say('The file changed since the rewrite was computed; nothing was written.', 'error');
  }

  private openContexts(paths: string[]) {
    const out = [];
    for (const path of paths) {
      const widget = this.docManager?.findWidget(path);
      const context = widget ? this.docManager?.contextForWidget(widget) : undefined;
      if (context) {
        out.push(context);
      }
    }
    return out;
  }

  async apply(): Promise<void> {
    const review = this.flow.review;
    if (!review || this.flow.phase !== 'reviewing') {
      this.say('There is no proposed change to apply.', 'error');
      return;
    }
    const paths = Array.from(new Set([review.path, ...Object.keys(review.base)]));
    const contexts = this.openContexts(paths);
    const dirty = contexts.find(c => c.model.dirty) ?? null;
    const decision = decideApply(dirty ? { dirty: true } : null, Boolean(review.range.cell_id));
    if (!decision.ok) {
      this.say(decision.reason, 'error');
      return;
    }
    this.flow.move('applying');
    this.updateButtons();
    this.say(`Applying to ${review.path}…`);
    try {
      const cellId = review.range.cell_id;
      const result = cellId
        ? await api.applyCellPatch(review.path, cellId, review.diff, review.base)
        : await api.applyPatch(review.diff, review.base);
      this.flow.move('applied');
      this.clearReview();
      await this.reloadUnlessDirty(result.files.map(f => f.path));
      const where = result.files.map(f => f.path).join(', ');
      this.say(`Applied patch ${result.patch_id} to ${cellId ? `cell ${cellId} of ` : ''}${where}.`, 'ok');
      void this.refreshHistory();
    } catch (error) {
      if (isConflict(error)) {
        this.showConflict(conflictDetail(error));
      } else {
        this.flow.move('error');
        this.clearReview();
        this.say(describeError(error), 'error');
      }
    } finally {
      this.updateButtons();
    }
  }

  private async reloadUnlessDirty(paths: string[]): Promise<string[]> {
    const skipped: string[] = [];
    for (const context of this.openContexts(paths)) {
      if (context.model.dirty) {
        skipped.push(context.path);
      } else {
        // Reloading a notebook selects its first cell; keep the user on the cell they were in.
        const widget = this.docManager?.findWidget(context.path) as { content?: { activeCellIndex?: unknown } } | undefined;
        const notebook = widget?.content;
        const active = typeof notebook?.activeCellIndex === 'number' ? notebook.activeCellIndex : null;
        await context.revert();
        if (notebook && active !== null) {
          notebook.activeCellIndex = active;
        }
      }
    }
    return skipped;
  }

  discard(): void {
    if (this.flow.phase !== 'reviewing') {
      return;
    }
    this.clearReview();
    this.flow.move('idle');
    this.say('Discarded the proposed change.');
    this.updateButtons();
  }

  private clearReview(): void {
    this.diffView?.destroy();
    this.diffView = null;
    this.diffBox.replaceChildren();
    this.review.hidden = true;
    if (this.flow.phase !== 'conflict') {
      this.conflictBox.hidden = true;
    }
  }

  // ---- history ------------------------------------------------------------------------

  async refreshHistory(): Promise<void> {
    this.historyStatus.textContent = 'Loading…';
    try {
      const page = await api.audit(50);
      const entries = historyFromAudit(page.records);
      this.historyStatus.textContent = page.chain_ok
        ? `${entries.length} change${entries.length === 1 ? '' : 's'} · audit chain intact`
        : 'Warning: the audit log chain is broken (a record was altered or removed).';
      this.historyStatus.dataset.kind = page.chain_ok ? 'ok' : 'error';
      this.historyList.replaceChildren(
        ...entries.map(entry => {
          const item = el(
            'li',
            { className: 'cy-history-item', attrs: { 'data-patch-id': entry.patchId } },
            el('span', { className: 'cy-history-seq', text: `#${entry.seq}` }),
            el('span', {
              className: 'cy-history-what',
              text: `${entry.isRevert ? '↶ ' : ''}${entry.paths.join(', ')}`,
              title: `${entry.isRevert ? 'revert of' : 'patch'} ${entry.patchId} · ${entry.user} · ${entry.when.toLocaleString()}`
            }),
            el('span', { className: 'cy-history-when', text: entry.when.toLocaleTimeString() })
          );
          if (entry.reverted) {
            item.append(el('span', { className: 'cy-history-reverted', text: 'reverted' }));
          } else if (!entry.isRevert) {
            item.append(button('Revert', 'jp-mod-warn cy-revert', () => void this.revert(entry.patchId, entry.paths)));
          }
          return item;
        })
      );
      if (!entries.length) {
        this.historyList.append(el('li', { className: 'cy-history-empty', text: 'No changes applied yet.' }));
      }
    } catch (error) {
      this.historyStatus.textContent = describeError(error);
      this.historyStatus.dataset.kind = 'error';
    }
  }

  async revert(patchId: string, paths: string[]): Promise<void> {
    const dirty = this.openContexts(paths).find(c => c.model.dirty);
    if (dirty) {
      this.say(
        `${dirty.path} has unsaved changes. Reverting would reload it from disk and lose them. Save or revert the file first.`,
        'error'
      );
      return;
    }
    this.say(`Reverting patch ${patchId}…`);
    try {
      const result = await api.revertPatch(patchId);
      await this.reloadUnlessDirty(result.files.map(f => f.path));
      this.say(`Reverted patch ${patchId}: ${result.files.map(f => f.path).join(', ')} restored.`, 'ok');
    } catch (error) {
      this.say(
        isConflict(error)
          ? `Cannot revert: ${(error as ApiError).body?.message ?? 'the files changed since that patch'}.`
          : describeError(error),
        'error'
      );
    }
    await this.refreshHistory();
  }

  protected onAfterShow(): void {
    this.renderContext();
    void this.refreshHistory();
  }

  dispose(): void {
    this.stop();
    this.diffView?.destroy();
    super.dispose();
  }
}

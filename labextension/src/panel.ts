/**
 * The "Codeyard AI" side panel: context, explain (streamed), rewrite as a reviewable diff
 * with apply/discard, and the workspace's patch history with revert.
 *
 * Plain DOM inside a Lumino widget: the panel is a handful of forms, and the one rich part
 * (the diff) is a CodeMirror view. The rules live in `state.ts`; this file wires them.
 */
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ServerConnection } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

import { api, ICodeRange, IGatewayStatus, IModelOptions, IUsage } from './api';
import { renderContextBox } from './contextview';
import { OpenDocuments } from './documents';
import { button, el } from './dom';
import { ApiError, describeError } from './errors';
import { debounce, IWorkspaceEvent, staleAfter, WorkspaceEvents } from './events';
import { GatewayState, stateFromStatus } from './gateway';
import { GitSection } from './git';
import { HistorySection } from './history';
import { MarkdownOutput } from './markdown';
import { RewriteSection } from './rewriteflow';
import { IExecEvent, RunSection } from './run';
import { FlowState } from './state';
import { ActiveCodeTracker, ISnapshot } from './tracker';

/** How often a visible panel asks the server whether the gateway answers. */
const STATUS_INTERVAL_MS = 60_000;

export interface IPanelSettings {
  contextLines: number;
  /** 0: the server's default (explain_max_tokens / rewrite_max_tokens). */
  maxTokens: number;
  followSelection: boolean;
  inlineCompletion: boolean;
  /** The Run section's command until the user types another. */
  runCommand: string;
}

export const DEFAULT_SETTINGS: IPanelSettings = {
  contextLines: 20,
  maxTokens: 0,
  followSelection: true,
  inlineCompletion: true,
  runCommand: 'pytest -q'
};

export class CodeyardPanel extends Widget {
  settings: IPanelSettings = { ...DEFAULT_SETTINGS };
  readonly flow = new FlowState();

  private explainAbort: AbortController | null = null;
  private lastUsage: IUsage | null = null;

  // DOM
  private contextBox = el('div', { className: 'cy-context' });
  private statusLine = el('div', { className: 'cy-status', attrs: { role: 'status', 'aria-live': 'polite' } });
  private questionInput = el('input', {
    className: 'cy-question jp-mod-styled',
    attrs: { type: 'text', placeholder: 'Optional question about the selection', 'aria-label': 'Question' }
  });
  private explainBtn = button('Explain', 'jp-mod-accept cy-explain', () => void this.explain());
  private stopBtn = button('Stop', 'jp-mod-warn cy-stop', () => this.stop());
  private explainOut: MarkdownOutput;
  private rewriter: RewriteSection;
  private documents: OpenDocuments;
  private history: HistorySection;
  readonly runner: RunSection;
  readonly git = new GitSection(() => void this.history.refresh());
  private gateway: GatewayState = { kind: 'unknown' };
  /** The workspace's live events (`codeyard/api/events`); open for the panel's lifetime. */
  readonly events = new WorkspaceEvents({ settings: ServerConnection.makeSettings() });
  private refreshGitSoon = debounce(() => void this.git.refresh(), 300);
  /** `c.CodeyardLLM.max_tokens_limit`, from `GET status` (or a 400 that names it). */
  private tokenLimit: number | null = null;
  private statusTimer: ReturnType<typeof setInterval> | null = null;

  constructor(
    private tracker: ActiveCodeTracker,
    rendermime: IRenderMimeRegistry | null,
    languages: IEditorLanguageRegistry | null,
    docManager: IDocumentManager | null
  ) {
    super();
    this.documents = new OpenDocuments(docManager);
    this.explainOut = new MarkdownOutput(rendermime);
    this.rewriter = new RewriteSection(this, this.documents, languages);
    this.history = new HistorySection(this.documents, (message, kind) => this.say(message, kind));
    this.runner = new RunSection({
      defaultCommand: () => this.settings.runCommand,
      currentRange: () => this.tracker.snapshot()?.range ?? null,
      explain: (range, question) => {
        // The Run section sits below Explain: bring the explanation into view.
        this.explainOut.node.scrollIntoView({ block: 'nearest' });
        return this.explain({ range, question });
      }
    });
    this.id = 'codeyard-ai-panel';
    this.addClass('cy-Panel');
    this.title.caption = 'Codeyard AI';
    this.build();
    tracker.changed.connect(() => this.scheduleContext(), this);
    this.renderContext();
    this.updateButtons();
    this.listen();
  }

  /** Follow the events socket: refresh what an event makes stale, everything after a
   * reconnect (events sent meanwhile are lost), and the model's status as it changes. */
  private listen(): void {
    this.events.subscribe({
      onEvent: event => this.onWorkspaceEvent(event),
      onOpen: reconnected => {
        this.node.dataset.events = 'open';
        if (reconnected && this.isVisible) {
          this.history.refreshSoon();
          this.refreshGitSoon();
        }
      },
      onClose: () => (this.node.dataset.events = 'closed')
    });
    this.runner.useEvents({
      onExec: listener =>
        this.events.subscribe({
          onEvent: e => e.event === 'exec' && listener(e.data as unknown as IExecEvent)
        }),
      connected: () => this.events.connected
    });
    this.events.start();
  }

  private onWorkspaceEvent(event: IWorkspaceEvent): void {
    if (event.event === 'model') {
      this.gateway = stateFromStatus(event.data as unknown as IGatewayStatus, new Date());
      this.renderContext();
    }
    if (!this.isVisible) {
      return; // showing the panel refreshes every section anyway
    }
    const stale = staleAfter(event);
    if (stale.history) {
      this.history.refreshSoon();
    }
    if (stale.git) {
      this.refreshGitSoon();
    }
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
        this.explainOut.node
      ),
      this.rewriter.node,
      this.history.node,
      this.git.node,
      this.runner.node
    );
    this.questionInput.addEventListener('keydown', ev => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        void this.explain();
      }
    });
  }

  focusInstruction(): void {
    this.rewriter.focus();
  }

  rewrite(again = false): Promise<void> {
    return this.rewriter.rewrite(again);
  }

  apply(): Promise<void> {
    return this.rewriter.apply();
  }

  discard(): void {
    this.rewriter.discard();
  }

  applied(): void {
    void this.history.refresh();
    void this.git.refresh();
  }

  noteUsage(usage: IUsage | undefined): void {
    this.lastUsage = usage ?? this.lastUsage;
  }

  lastTokens(): number | undefined {
    return this.lastUsage?.total_tokens;
  }

  say(message: string, kind: 'info' | 'error' | 'ok' = 'info'): void {
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

  renderContext(): void {
    renderContextBox(this.contextBox, this.tracker.snapshot(), this.lastUsage, this.gateway);
  }

  /** Ask the server (`GET status`) whether the gateway answers, and show it. */
  async checkGateway(): Promise<void> {
    if (this.gateway.kind === 'unknown') {
      this.gateway = { kind: 'checking' };
      this.renderContext();
    }
    try {
      const status = await api.status();
      if (typeof status.max_tokens_limit === 'number') {
        this.tokenLimit = status.max_tokens_limit;
      }
      this.gateway = stateFromStatus(status, new Date());
    } catch (error) {
      this.gateway = { kind: 'down', model: null, reason: describeError(error), at: new Date() };
    }
    this.renderContext();
  }

  /** What a model call showed about the gateway, between status checks. */
  noteGateway(error: unknown | null): void {
    const at = new Date();
    const known = this.gateway.kind === 'healthy' || this.gateway.kind === 'down' ? this.gateway.model : null;
    const model = this.lastUsage?.model || known || '';
    if (error === null) {
      this.gateway = { kind: 'healthy', model, latencyMs: null, at };
    } else if (error instanceof ApiError && [502, 503, 504].includes(error.status)) {
      // The server's own words; the status line above already says "unavailable".
      const reason = error.body?.message ?? describeError(error);
      this.gateway = { kind: 'down', model: model || null, reason, at };
    } else {
      return;
    }
    this.renderContext();
  }

  maxTokensLimit(): number | null {
    return this.tokenLimit;
  }

  noteMaxTokensLimit(limit: number): void {
    this.tokenLimit = limit;
  }

  updateButtons(): void {
    const phase = this.flow.phase;
    const busy = phase === 'rewriting' || phase === 'applying';
    this.explainBtn.disabled = phase === 'explaining' || busy;
    this.stopBtn.disabled = phase !== 'explaining' && phase !== 'rewriting';
    this.rewriter.rewriteBtn.disabled = busy || phase === 'explaining';
    this.rewriter.applyBtn.disabled = phase !== 'reviewing' || !this.rewriter.gate.open;
    this.rewriter.discardBtn.disabled = phase !== 'reviewing';
    this.node.dataset.phase = phase;
  }

  options(): IModelOptions {
    const { maxTokens, contextLines } = this.settings;
    return { ...(maxTokens > 0 ? { max_tokens: maxTokens } : {}), context_lines: contextLines };
  }

  requireSnapshot(): ISnapshot | null {
    const snap = this.tracker.snapshot();
    if (!snap) {
      this.say('Open a file or a notebook cell first, then select the code to work on.', 'error');
    }
    return snap;
  }

  // ---- explain ------------------------------------------------------------------------

  /** Explain the selection with the question typed, or `target` (a failed run's). */
  async explain(target?: { range: ICodeRange; question: string }): Promise<void> {
    const snap = target ? { range: target.range } : this.requireSnapshot();
    if (!snap || !this.flow.canMove('explaining')) {
      return;
    }
    this.rewriter.clearReview();
    this.flow.move('explaining');
    this.updateButtons();
    const ctrl = new AbortController();
    this.explainAbort = ctrl;
    this.explainOut.reset();
    this.explainOut.state = 'streaming';
    this.say(`Explaining ${snap.range.path} lines ${snap.range.start_line}–${snap.range.end_line}…`);
    let failed: string | null = null;
    try {
      const question = target ? target.question : this.questionInput.value.trim();
      await api.explain(
        { ...snap.range, ...(question ? { question } : {}) },
        this.options(),
        event => {
          if (event.error) {
            failed = event.message ?? event.error;
            return;
          }
          if (event.delta) {
            this.explainOut.append(event.delta);
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
      this.explainOut.state = ctrl.signal.aborted ? 'stopped' : 'done';
      await this.explainOut.render();
      if (this.flow.phase === 'explaining') {
        this.flow.move('idle');
      }
      this.updateButtons();
      this.renderContext();
    }
  }

  stop(): void {
    this.explainAbort?.abort();
    this.rewriter.stop();
  }

  private usageText(verb: string): string {
    const u = this.lastUsage;
    if (!u) {
      return `${verb}.`;
    }
    const tokens = u.total_tokens ?? (u.prompt_tokens ?? 0) + (u.completion_tokens ?? 0);
    return `${verb} (${tokens} tokens${u.model ? `, ${u.model}` : ''}).`;
  }

  // ---- history ------------------------------------------------------------------------

  refreshHistory(): Promise<void> {
    return this.history.refresh();
  }

  protected onAfterShow(): void {
    this.renderContext();
    void this.refreshHistory();
    void this.git.refresh();
    this.runner.showDefault();
    void this.checkGateway();
    if (this.statusTimer === null) {
      this.statusTimer = setInterval(() => void this.checkGateway(), STATUS_INTERVAL_MS);
    }
  }

  protected onAfterHide(): void {
    if (this.statusTimer !== null) {
      clearInterval(this.statusTimer);
      this.statusTimer = null;
    }
  }

  dispose(): void {
    this.onAfterHide();
    this.stop();
    this.rewriter.clearReview();
    this.runner.dispose();
    this.events.stop();
    super.dispose();
  }
}

/**
 * The panel's Run section: run a command in the workspace (`codeyard/api/exec`), watch its
 * output live, see its exit code, cancel it, and send a failure to Explain.
 *
 * Output arrives as `exec` events on the events socket when the panel has an events client
 * (`IExecEventSource`); otherwise, and to fill any gap a dropped socket left, the section
 * polls `GET exec/<run_id>?since=<seq>`. Every chunk carries the run's `seq`, so the view
 * shows each exactly once and in order whichever way it came.
 */
import type { ICodeRange } from './api';
import { button, el } from './dom';
import { ApiError, describeError } from './errors';
import { requestAPI } from './request';
import {
  endText,
  ExecState,
  ExecStream,
  failureLocation,
  failureQuestion,
  FINAL,
  IExecChunk,
  IExecEvent,
  IExecEventSource,
  IExecRun,
  isFailure
} from './runstate';

export * from './runstate';

/** How often a run is polled when there is no events socket (ms). */
const POLL_MS = 500;
/** With an events socket, a slow poll still fills any gap a reconnect left (ms). */
const SAFETY_POLL_MS = 3000;

export const execApi = {
  start(command: string | string[], cwd = '', timeout?: number): Promise<IExecRun> {
    return requestAPI<IExecRun>('exec', {
      method: 'POST',
      body: JSON.stringify({ command, cwd, ...(timeout ? { timeout } : {}) }),
      headers: { 'Content-Type': 'application/json' }
    });
  },
  get(runId: string, since = 0): Promise<IExecRun> {
    return requestAPI<IExecRun>(`exec/${encodeURIComponent(runId)}?since=${since}`);
  },
  cancel(runId: string): Promise<{ run_id: string; state: ExecState; cancelling: boolean }> {
    return requestAPI(`exec/${encodeURIComponent(runId)}`, { method: 'DELETE' });
  }
};

export interface IRunHooks {
  /** The `runCommand` setting. */
  defaultCommand(): string;
  /** The selection in the active editor, if any. */
  currentRange(): ICodeRange | null;
  /** Start the panel's Explain flow on `range` with `question`. */
  explain(range: ICodeRange, question: string): Promise<void>;
}

export class RunSection {
  readonly node: HTMLElement;
  readonly input = el('input', {
    className: 'cy-run-command jp-mod-styled',
    attrs: { type: 'text', 'aria-label': 'Command to run', spellcheck: 'false' }
  });
  readonly runBtn = button('Run', 'jp-mod-accept cy-run', () => void this.run());
  readonly cancelBtn = button('Cancel', 'jp-mod-warn cy-run-cancel', () => void this.cancel());
  readonly explainBtn = button('Explain this failure', 'cy-run-explain', () => void this.explainFailure());
  private stateLine = el('div', { className: 'cy-run-state', attrs: { role: 'status', 'aria-live': 'polite' } });
  private output = el('pre', { className: 'cy-run-output', attrs: { 'aria-label': 'Command output', tabindex: '0' } });

  private run_: { id: string; command: string; cwd: string; nextSeq: number; ended: boolean } | null = null;
  private pending = new Map<number, IExecEvent | IExecChunk>();
  private text = '';
  private last: IExecRun | null = null;
  private edited = false;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(
    private hooks: IRunHooks,
    private events: IExecEventSource | null = null
  ) {
    Object.assign(this.output.style, {
      maxHeight: '18em',
      minHeight: '2em',
      overflow: 'auto',
      whiteSpace: 'pre-wrap',
      overflowWrap: 'anywhere',
      fontFamily: 'var(--jp-code-font-family)',
      fontSize: 'var(--jp-code-font-size)',
      background: 'var(--jp-layout-color2)',
      padding: '4px',
      margin: '4px 0'
    });
    Object.assign(this.input.style, { width: '100%', boxSizing: 'border-box', fontFamily: 'var(--jp-code-font-family)' });
    this.explainBtn.hidden = true;
    this.cancelBtn.disabled = true;
    this.node = el(
      'section',
      { className: 'cy-section cy-section-run' },
      el('h3', { text: 'Run' }),
      this.input,
      el('div', { className: 'cy-buttons' }, this.runBtn, this.cancelBtn, this.explainBtn),
      this.stateLine,
      this.output
    );
    this.input.addEventListener('input', () => (this.edited = true));
    this.input.addEventListener('keydown', ev => {
      if (ev.key === 'Enter') {
        ev.preventDefault();
        void this.run();
      }
    });
    this.showDefault();
  }

  /** Put the `runCommand` setting in the box unless the user typed something. */
  showDefault(): void {
    if (!this.edited) {
      this.input.value = this.hooks.defaultCommand();
    }
  }

  /** Use the events socket from now on (the section polls until it has one). */
  useEvents(source: IExecEventSource | null): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.events = source;
    if (source && this.run_ && !this.run_.ended) {
      this.subscribe();
    }
  }

  private say(message: string, kind: 'info' | 'error' | 'ok' = 'info'): void {
    this.stateLine.textContent = message;
    this.stateLine.dataset.kind = kind;
    this.stateLine.style.color =
      kind === 'error' ? 'var(--jp-error-color1)' : kind === 'ok' ? 'var(--jp-success-color1)' : '';
  }

  async run(): Promise<void> {
    if (this.run_ && !this.run_.ended) {
      return;
    }
    const command = this.input.value.trim() || this.hooks.defaultCommand();
    this.input.value = command;
    this.reset();
    this.runBtn.disabled = true;
    this.say(`Starting ${command}…`);
    let started: IExecRun;
    try {
      started = await execApi.start(command);
    } catch (error) {
      this.runBtn.disabled = false;
      this.say(error instanceof ApiError && error.body?.message ? error.body.message : describeError(error), 'error');
      return;
    }
    this.run_ = { id: started.run_id, command, cwd: started.cwd, nextSeq: 1, ended: false };
    this.node.dataset.runId = started.run_id;
    this.node.dataset.state = 'running';
    this.cancelBtn.disabled = false;
    this.say('running…');
    if (this.events) {
      this.subscribe();
    }
    this.schedulePoll(0);
  }

  async cancel(): Promise<void> {
    const current = this.run_;
    if (!current || current.ended) {
      return;
    }
    this.cancelBtn.disabled = true;
    this.say('cancelling…');
    try {
      await execApi.cancel(current.id);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 409)) {
        this.say(describeError(error), 'error');
      }
    }
    this.schedulePoll(0);
  }

  private reset(): void {
    this.stopFollowing();
    this.run_ = null;
    this.last = null;
    this.pending.clear();
    this.text = '';
    this.output.replaceChildren();
    this.explainBtn.hidden = true;
    delete this.node.dataset.exitCode;
    this.node.dataset.state = 'starting';
  }

  private subscribe(): void {
    if (!this.events || this.unsubscribe) {
      return;
    }
    this.unsubscribe = this.events.onExec(event => {
      if (this.run_ && event.run_id === this.run_.id) {
        this.take(event);
      }
    });
  }

  private stopFollowing(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private schedulePoll(delay: number): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
    }
    this.timer = setTimeout(() => void this.poll(), delay);
  }

  private async poll(): Promise<void> {
    this.timer = null;
    const current = this.run_;
    if (!current || current.ended) {
      return;
    }
    try {
      const run = await execApi.get(current.id, current.nextSeq - 1);
      if (this.run_ !== current) {
        return;
      }
      this.last = run;
      // Numbers up to `run.seq` that are not output chunks are the start (and exit) events.
      const chunks = new Map(run.chunks.map(c => [c.seq, c]));
      for (let seq = current.nextSeq; seq <= run.seq; seq++) {
        this.take(chunks.get(seq) ?? { run_id: current.id, kind: 'start', seq });
      }
      if (FINAL.includes(run.state) && !current.ended) {
        this.end(run);
      }
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        this.say('The server no longer knows this run (was it restarted?).', 'error');
        current.ended = true;
        this.finishButtons();
        return;
      }
      this.say(`Cannot follow the run: ${describeError(error)}`, 'error');
    }
    if (!current.ended) {
      const live = this.events !== null && this.events.connected?.() !== false;
      this.schedulePoll(live ? SAFETY_POLL_MS : POLL_MS);
    }
  }

  /** Show one event or polled chunk, in `seq` order; later ones wait for the gap. */
  private take(item: IExecEvent | IExecChunk): void {
    const current = this.run_;
    if (!current || item.seq < current.nextSeq) {
      return;
    }
    this.pending.set(item.seq, item);
    while (this.pending.has(current.nextSeq)) {
      const next = this.pending.get(current.nextSeq)!;
      this.pending.delete(current.nextSeq);
      current.nextSeq += 1;
      const kind = 'kind' in next ? next.kind : 'output';
      if (kind === 'output' && next.text !== undefined) {
        this.append(next.stream ?? 'stdout', next.text);
      } else if (kind === 'exit' && 'kind' in next) {
        this.end({
          state: next.state ?? 'failed',
          exit_code: next.exit_code ?? null,
          signal: next.signal ?? null,
          duration: next.duration ?? null,
          truncated: next.truncated ?? false
        });
      }
    }
    if (this.pending.size && !current.ended) {
      this.schedulePoll(0); // a gap: ask the server for what is missing
    }
  }

  private append(stream: ExecStream, text: string): void {
    const atBottom = this.output.scrollTop + this.output.clientHeight >= this.output.scrollHeight - 4;
    const last = this.output.lastElementChild as HTMLElement | null;
    if (last && last.dataset.stream === stream) {
      last.textContent += text;
    } else {
      const span = el('span', { className: `cy-run-${stream}`, text });
      span.dataset.stream = stream;
      if (stream === 'stderr') {
        span.style.color = 'var(--jp-error-color1)';
      } else if (stream === 'notice') {
        span.style.fontStyle = 'italic';
        span.style.color = 'var(--jp-ui-font-color2)';
      }
      this.output.append(span);
    }
    this.text += text;
    if (atBottom) {
      this.output.scrollTop = this.output.scrollHeight;
    }
  }

  private end(run: Pick<IExecRun, 'state' | 'exit_code' | 'signal' | 'duration' | 'truncated'>): void {
    const current = this.run_;
    if (!current || current.ended) {
      return;
    }
    current.ended = true;
    this.stopFollowing();
    this.node.dataset.state = run.state;
    if (run.exit_code !== null) {
      this.node.dataset.exitCode = String(run.exit_code);
    }
    const failed = isFailure(run);
    this.say(endText(run), failed || run.state === 'cancelled' ? 'error' : 'ok');
    this.explainBtn.hidden = !failed;
    this.lastEnd = endText(run);
    this.finishButtons();
  }

  private lastEnd = '';

  private finishButtons(): void {
    this.runBtn.disabled = false;
    this.cancelBtn.disabled = true;
  }

  async explainFailure(): Promise<void> {
    const current = this.run_;
    if (!current) {
      return;
    }
    const output = this.text || this.last?.tail || '';
    const range = failureLocation(output, current.cwd) ?? this.hooks.currentRange();
    if (!range) {
      this.say(
        'The output names no file of the workspace: open the file the failure is about, select the code, then click "Explain this failure" again.',
        'error'
      );
      return;
    }
    await this.hooks.explain(range, failureQuestion(current.command, this.lastEnd, output));
  }

  dispose(): void {
    this.stopFollowing();
  }
}

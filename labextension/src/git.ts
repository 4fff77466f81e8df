/**
 * The panel's Git section: the branch, the changed files (written by anyone: the panel, the
 * editor, a terminal, a kernel), a commit whose message the model proposes and the user
 * edits, pull, push, and the last commits.
 *
 * Everything goes through `codeyard/api/git/*` (the same auth, errors and audit as the rest
 * of the API); `gitstate.ts` holds the wording. One action at a time: the buttons are off
 * while one runs, and every action ends with a refresh, so what is shown is what git says.
 */
import { button, el } from './dom';
import {
  ago,
  blockedReason,
  branchLine,
  commitSaid,
  fileRows,
  filesSummary,
  GitAction,
  gitProblem,
  ICommitResult,
  IGitLog,
  IGitStatus,
  IPullResult,
  IPushResult,
  pullSaid,
  pushSaid
} from './gitstate';
import { requestAPI } from './request';
import { IUsage } from './api';

/** How many commits the section lists. */
export const LOG_LIMIT = 10;

const post = (body: unknown): RequestInit => ({
  method: 'POST',
  body: JSON.stringify(body),
  headers: { 'Content-Type': 'application/json' }
});

/** `GET git/repository`: whether the workspace is in a git repository (200 either way). */
export interface IGitRepository {
  repository: boolean;
  error?: string;
  message?: string;
}

export const gitApi = {
  repository(): Promise<IGitRepository> {
    return requestAPI<IGitRepository>('git/repository');
  },
  status(): Promise<IGitStatus> {
    return requestAPI<IGitStatus>('git/status');
  },
  log(limit = LOG_LIMIT): Promise<IGitLog> {
    return requestAPI<IGitLog>(`git/log?limit=${limit}`);
  },
  commitMessage(): Promise<{ message: string; files: number; usage?: IUsage }> {
    return requestAPI('git/commit-message', post({}));
  },
  commit(message: string): Promise<ICommitResult> {
    return requestAPI<ICommitResult>('git/commit', post({ message }));
  },
  pull(): Promise<IPullResult> {
    return requestAPI<IPullResult>('git/pull', post({}));
  },
  push(): Promise<IPushResult> {
    return requestAPI<IPushResult>('git/push', post({}));
  }
};

type Kind = 'info' | 'error' | 'ok';

export class GitSection {
  readonly node: HTMLElement;
  private branch = el('div', { className: 'cy-git-branch' });
  private summary = el('div', { className: 'cy-git-summary' });
  private files = el('ul', { className: 'cy-git-files' });
  private status = el('div', { className: 'cy-git-status', attrs: { role: 'status', 'aria-live': 'polite' } });
  private detail = el('pre', { className: 'cy-git-detail' });
  private message = el('textarea', {
    className: 'cy-git-message jp-mod-styled',
    attrs: { rows: '3', placeholder: 'Commit message', 'aria-label': 'Commit message' }
  });
  private log = el('ol', { className: 'cy-git-log' });
  readonly refreshBtn = button('Refresh', 'cy-git-refresh', () => void this.refresh());
  readonly proposeBtn = button('Propose message', 'cy-git-propose', () => void this.propose());
  readonly commitBtn = button('Commit', 'jp-mod-accept cy-git-commit', () => void this.commit());
  readonly pullBtn = button('Pull', 'cy-git-pull', () => void this.pull());
  readonly pushBtn = button('Push', 'cy-git-push', () => void this.push());
  private state: IGitStatus | null = null;
  private busy: GitAction | null = null;
  private refreshing: Promise<void> | null = null;

  /** `onChanged`: a commit or pull moved HEAD (the panel's other sections may care). */
  constructor(private onChanged: () => void = () => undefined) {
    this.detail.hidden = true;
    this.node = el(
      'section',
      { className: 'cy-section cy-section-git' },
      el('div', { className: 'cy-git-head' }, el('h3', { text: 'Git' }), this.refreshBtn),
      this.branch,
      this.summary,
      this.files,
      this.message,
      el('div', { className: 'cy-buttons' }, this.proposeBtn, this.commitBtn, this.pullBtn, this.pushBtn),
      this.status,
      this.detail,
      el('h4', { className: 'cy-git-log-title', text: 'Recent commits' }),
      this.log
    );
    this.message.addEventListener('input', () => this.updateButtons());
    this.updateButtons();
  }

  /** Read status and log again; concurrent calls share one round trip. */
  refresh(): Promise<void> {
    if (!this.refreshing) {
      this.refreshing = this.load().finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  private async load(): Promise<void> {
    try {
      // Asked first, so that a workspace without git is an answer, not two failed requests.
      const where = await gitApi.repository();
      if (!where.repository) {
        this.state = null;
        this.node.dataset.repository = 'no';
        this.branch.textContent = where.message
          ? `No repository: ${where.message}.`
          : 'No repository.';
        this.summary.textContent = '';
        this.files.replaceChildren();
        this.log.replaceChildren();
        this.updateButtons();
        return;
      }
      const [status, log] = await Promise.all([gitApi.status(), gitApi.log()]);
      this.state = status;
      this.renderStatus(status);
      this.renderLog(log);
      this.node.dataset.repository = 'yes';
    } catch (error) {
      this.state = null;
      const problem = gitProblem('status', error);
      this.node.dataset.repository = problem.code === 'not_a_repository' ? 'no' : 'unknown';
      this.branch.textContent = problem.message;
      this.summary.textContent = '';
      this.files.replaceChildren();
      this.log.replaceChildren();
    }
    this.updateButtons();
  }

  private renderStatus(status: IGitStatus): void {
    this.branch.textContent = branchLine(status);
    this.branch.dataset.detached = String(status.detached);
    this.summary.textContent = filesSummary(status);
    this.files.replaceChildren(
      ...fileRows(status.files).map(row =>
        el(
          'li',
          { className: 'cy-git-file', title: row.title, attrs: { 'data-letter': row.letter } },
          el('span', { className: 'cy-git-letter', text: row.letter }),
          el('span', { className: 'cy-git-path', text: row.path })
        )
      )
    );
  }

  private renderLog(log: IGitLog): void {
    const now = new Date();
    this.log.replaceChildren(
      ...log.commits.map(c =>
        el(
          'li',
          { className: 'cy-git-commit-row', title: `${c.hash}\n${c.author} <${c.email}>\n${c.date}`, attrs: { 'data-hash': c.hash } },
          el('code', { className: 'cy-git-short', text: c.short }),
          el('span', { className: 'cy-git-subject', text: c.subject }),
          el('span', { className: 'cy-git-when', text: `${c.author}, ${ago(c.date, now)}` })
        )
      )
    );
    if (!log.commits.length) {
      this.log.append(el('li', { className: 'cy-git-empty', text: 'No commits yet.' }));
    }
  }

  private updateButtons(): void {
    const busy = this.busy !== null;
    const reason = (action: 'commit' | 'pull' | 'push') => blockedReason(this.state, action);
    const set = (b: HTMLButtonElement, why: string | null) => {
      b.disabled = busy || why !== null;
      b.title = why ?? '';
    };
    set(this.commitBtn, reason('commit') ?? (this.message.value.trim() ? null : 'Write or propose a message first.'));
    set(this.proposeBtn, reason('commit'));
    set(this.pullBtn, reason('pull'));
    set(this.pushBtn, reason('push'));
    this.refreshBtn.disabled = busy;
    this.message.disabled = busy;
    this.node.dataset.busy = this.busy ?? '';
  }

  private say(message: string, kind: Kind, detail: string | null = null): void {
    this.status.textContent = message;
    this.status.dataset.kind = kind;
    this.status.setAttribute('role', kind === 'error' ? 'alert' : 'status');
    this.detail.textContent = detail ?? '';
    this.detail.hidden = !detail;
  }

  /** Run one action with the buttons off; say its result or its problem; refresh after. */
  private async run<T>(action: GitAction, working: string, work: () => Promise<T>, done: (r: T) => string): Promise<T | null> {
    if (this.busy) {
      return null;
    }
    this.busy = action;
    this.updateButtons();
    this.say(working, 'info');
    let result: T | null = null;
    try {
      result = await work();
      this.say(done(result), 'ok');
    } catch (error) {
      const problem = gitProblem(action, error);
      this.say(problem.message, 'error', problem.detail);
    } finally {
      this.busy = null;
      this.updateButtons();
    }
    await this.refresh();
    return result;
  }

  async propose(): Promise<void> {
    const answer = await this.run(
      'message',
      'Asking the model for a commit message…',
      async () => {
        const proposal = await gitApi.commitMessage();
        // In the box before the status line says so.
        this.message.value = proposal.message;
        return proposal;
      },
      r => `Proposed a message for ${r.files} file${r.files === 1 ? '' : 's'}; edit it as you like, then Commit.`
    );
    if (answer) {
      this.message.focus();
    }
  }

  async commit(): Promise<void> {
    const message = this.message.value;
    const result = await this.run(
      'commit',
      'Committing…',
      async () => {
        const done = await gitApi.commit(message);
        this.message.value = '';
        return done;
      },
      commitSaid
    );
    if (result) {
      this.onChanged();
    }
  }

  async pull(): Promise<void> {
    const result = await this.run('pull', 'Pulling…', () => gitApi.pull(), pullSaid);
    if (result?.updated) {
      this.onChanged();
    }
  }

  async push(): Promise<void> {
    await this.run('push', 'Pushing…', () => gitApi.push(), pushSaid);
  }
}

/**
 * The words and rows of the panel's git section, from the answers of `codeyard/api/git/*`.
 * No DOM and no requests, so each rule is unit-tested (test/git.test.ts); `git.ts` draws.
 */
import { ApiError, describeError } from './errors';

export interface IGitFile {
  path: string;
  kind: 'changed' | 'renamed' | 'copied' | 'unmerged' | 'untracked';
  index: string;
  worktree: string;
  staged: boolean;
  unstaged: boolean;
  from?: string;
}

export interface IGitStatus {
  branch: string | null;
  detached: boolean;
  head: string | null;
  unborn: boolean;
  upstream: string | null;
  upstream_remote: string | null;
  upstream_branch: string | null;
  ahead: number | null;
  behind: number | null;
  remotes: string[];
  operation: string | null;
  prefix: string;
  clean: boolean;
  files: IGitFile[];
  truncated: boolean;
}

export interface IGitCommit {
  hash: string;
  short: string;
  author: string;
  email: string;
  date: string;
  subject: string;
}

export interface IGitLog {
  branch: string | null;
  head: string | null;
  commits: IGitCommit[];
}

export interface ICommitResult {
  commit: string;
  parent: string | null;
  branch: string;
  author: string;
  files: number;
  paths: string[];
}

export interface IPullResult {
  branch: string;
  remote: string;
  remote_branch: string;
  before: string | null;
  after: string | null;
  updated: boolean;
  files: number;
}

export interface IPushResult {
  branch: string;
  remote: string;
  remote_branch: string;
  commit: string;
  created: boolean;
  up_to_date: boolean;
  upstream_set: boolean;
}

export type GitAction = 'status' | 'log' | 'commit' | 'message' | 'pull' | 'push';

/** One line of the branch: name, where it tracks, how far ahead and behind. */
export function branchLine(status: IGitStatus): string {
  if (status.detached) {
    const at = status.head ? ` at ${status.head.slice(0, 7)}` : '';
    return `HEAD is detached${at}: check out a branch in a terminal to commit, pull or push.`;
  }
  const name = status.branch ?? '?';
  const parts = [status.unborn ? `${name} (no commits yet)` : name];
  if (status.upstream) {
    const counts: string[] = [];
    if (status.ahead) {
      counts.push(`${status.ahead} to push`);
    }
    if (status.behind) {
      counts.push(`${status.behind} to pull`);
    }
    parts.push(`tracks ${status.upstream}${counts.length ? ` (${counts.join(', ')})` : ', up to date'}`);
  } else if (status.remotes.length) {
    parts.push(`not pushed yet (remotes: ${status.remotes.join(', ')})`);
  } else {
    parts.push('no remote');
  }
  if (status.operation) {
    parts.push(`a ${status.operation} is in progress: finish it in a terminal`);
  }
  return parts.join(' · ');
}

/** Why commit, pull or push cannot run now, or null when it can (the server checks again). */
export function blockedReason(status: IGitStatus | null, action: 'commit' | 'pull' | 'push'): string | null {
  if (!status) {
    return 'The repository state is not known yet; refresh.';
  }
  if (status.detached) {
    return 'HEAD is detached: check out a branch first.';
  }
  if (status.operation) {
    return `A ${status.operation} is in progress: finish or abort it in a terminal first.`;
  }
  if (action === 'commit' && status.clean) {
    return 'Nothing to commit.';
  }
  if ((action === 'pull' || action === 'push') && !status.remotes.length) {
    return 'This repository has no remote.';
  }
  if (action === 'push' && status.unborn) {
    return 'Nothing to push: this branch has no commits yet.';
  }
  return null;
}

const LETTERS: Record<string, string> = {
  modified: 'M',
  added: 'A',
  deleted: 'D',
  renamed: 'R',
  copied: 'C',
  type_changed: 'T',
  unmerged: 'U',
  untracked: '?'
};

export interface IFileRow {
  /** One letter, as `git status --short` shows it: M, A, D, R, C, T, U or ?. */
  letter: string;
  path: string;
  title: string;
}

/** The changed files as rows: what happened to each, in git's letters and in words. */
export function fileRows(files: IGitFile[]): IFileRow[] {
  return files.map(f => {
    if (f.kind === 'untracked') {
      return { letter: '?', path: f.path, title: `${f.path}: new, not yet in git` };
    }
    if (f.kind === 'unmerged') {
      return { letter: 'U', path: f.path, title: `${f.path}: has merge conflicts` };
    }
    const state = f.worktree !== 'unmodified' ? f.worktree : f.index;
    const letter = LETTERS[state] ?? 'M';
    const what = state.replace('_', ' ');
    const from = f.from ? ` from ${f.from}` : '';
    return { letter, path: f.from ? `${f.from} → ${f.path}` : f.path, title: `${f.path}: ${what}${from}` };
  });
}

/** "3 changed files", "1 changed file", "No changes", with a note when the list is cut. */
export function filesSummary(status: IGitStatus): string {
  const n = status.files.length;
  if (!n) {
    return 'No changes.';
  }
  return `${n}${status.truncated ? '+' : ''} changed file${n === 1 ? '' : 's'}`;
}

/** "just now", "5 min ago", "3 h ago", "2 days ago", else the date. */
export function ago(iso: string, now: Date): string {
  const then = new Date(iso);
  const seconds = Math.round((now.getTime() - then.getTime()) / 1000);
  if (Number.isNaN(seconds)) {
    return iso;
  }
  if (seconds < 60) {
    return 'just now';
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  if (seconds < 86_400) {
    return `${Math.floor(seconds / 3600)} h ago`;
  }
  if (seconds < 30 * 86_400) {
    const days = Math.floor(seconds / 86_400);
    return `${days} day${days === 1 ? '' : 's'} ago`;
  }
  return then.toISOString().slice(0, 10);
}

export function commitSaid(result: ICommitResult): string {
  return `Committed ${result.commit.slice(0, 7)} on ${result.branch} (${result.files} file${result.files === 1 ? '' : 's'}).`;
}

export function pullSaid(result: IPullResult): string {
  const from = `${result.remote}/${result.remote_branch}`;
  if (!result.updated) {
    return `Already up to date with ${from}.`;
  }
  return `Pulled ${from}: ${result.branch} is now at ${(result.after ?? '').slice(0, 7)} (${result.files} file${
    result.files === 1 ? '' : 's'
  } changed).`;
}

export function pushSaid(result: IPushResult): string {
  const to = `${result.remote}/${result.remote_branch}`;
  if (result.up_to_date) {
    return `${to} already has ${result.commit.slice(0, 7)}; nothing to push.`;
  }
  const created = result.created ? ' (a new branch on the remote)' : '';
  return `Pushed ${result.branch} to ${to}${created} at ${result.commit.slice(0, 7)}.`;
}

const VERBS: Record<GitAction, string> = {
  status: 'Cannot read the repository',
  log: 'Cannot read the history',
  commit: 'Not committed',
  message: 'No message proposed',
  pull: 'Not pulled',
  push: 'Not pushed'
};

function sentence(text: string): string {
  const t = text.trim();
  return t ? t[0].toUpperCase() + t.slice(1) : t;
}

export interface IGitProblem {
  /** One sentence for the section's status line. */
  message: string;
  /** Output of a hook that refused (the user's own text), shown below the message. */
  detail: string | null;
  /** The server's code (`diverged`, `push_rejected`, ...), or null for a network failure. */
  code: string | null;
}

/**
 * What a failed git action means, in a sentence. The git endpoints already word their
 * refusals (conflict, rejected push, detached head, no remote, failing hook); the panel
 * puts what was not done in front and the paths or hook output after. A 409 here is a
 * refusal of git's, not "the file changed" as for patches; the model's own errors (for a
 * proposed message) and the session's (401/403) keep the panel's usual words.
 */
export function gitProblem(action: GitAction, error: unknown): IGitProblem {
  if (!(error instanceof ApiError) || !error.body?.message || [401, 403].includes(error.status)) {
    return { message: describeError(error), detail: null, code: error instanceof ApiError ? error.code : null };
  }
  const body = error.body;
  const code = error.code;
  if (action === 'message' && error.status !== 409) {
    return { message: `${VERBS.message}: ${describeError(error)}`, detail: null, code };
  }
  let message = `${VERBS[action]}. ${sentence(body.message ?? '')}`;
  if (!/[.!?]$/.test(message)) {
    message += '.';
  }
  const paths = Array.isArray(body.paths) ? (body.paths as string[]) : [];
  if (code === 'local_changes' && paths.length) {
    const shown = paths.slice(0, 5).join(', ');
    message += ` Files: ${shown}${paths.length > 5 ? `, and ${paths.length - 5} more` : ''}.`;
  }
  const output = typeof body.hook_output === 'string' ? body.hook_output.trim() : '';
  return { message, detail: output || null, code };
}

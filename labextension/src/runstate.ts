/**
 * The Run section's contract and rules, kept out of the widget so they are testable: the
 * shapes of `codeyard/api/exec` and of its events, how a run's end is worded, and what
 * "Explain this failure" sends (the code a failure names, the question around the output).
 */
import type { ICodeRange } from './api';

export type ExecStream = 'stdout' | 'stderr' | 'notice';
export type ExecState = 'starting' | 'running' | 'exited' | 'timeout' | 'cancelled' | 'failed';

export interface IExecChunk {
  seq: number;
  stream: ExecStream;
  text: string;
}

/** `POST exec` and `GET exec/<run_id>` (server: `exec/runs.py`, `Run.to_json`). */
export interface IExecRun {
  run_id: string;
  state: ExecState;
  command: string;
  command_sha256: string;
  cwd: string;
  timeout: number;
  started: number;
  exit_code: number | null;
  signal: string | null;
  duration: number | null;
  /** The number of the run's latest event. */
  seq: number;
  output_bytes: number;
  output_cap: number;
  truncated: boolean;
  chunks: IExecChunk[];
  /** GET only: the last characters of kept output. */
  tail?: string;
}

/** An event of the `https://codeyard.dev/events/exec/v1` schema (events/schemas/exec.yaml). */
export interface IExecEvent {
  run_id: string;
  kind: 'start' | 'output' | 'exit';
  seq: number;
  stream?: ExecStream;
  text?: string;
  state?: ExecState;
  exit_code?: number | null;
  signal?: string | null;
  duration?: number;
  output_bytes?: number;
  truncated?: boolean;
}

export const EXEC_SCHEMA = 'https://codeyard.dev/events/exec/v1';

/** What the section needs of an events socket client: exec events as they come. */
export interface IExecEventSource {
  /** Call `listener` with every exec event; returns the function that stops it. */
  onExec(listener: (event: IExecEvent) => void): () => void;
  /** Whether the socket is open now; while it is not, the section polls at full speed. */
  connected?(): boolean;
}

export const FINAL: ExecState[] = ['exited', 'timeout', 'cancelled', 'failed'];
/** Longest question the explain endpoint accepts (`MAX_QUESTION_CHARS`). */
const QUESTION_CHARS = 2000;
/** Lines of code above the failing line that Explain gets as the selection. */
const CONTEXT_LINES = 9;

/** The state line's words for a run that ended. */
export function endText(run: Pick<IExecRun, 'state' | 'exit_code' | 'signal' | 'duration' | 'truncated'>): string {
  const took = run.duration !== null && run.duration !== undefined ? ` · ${run.duration.toFixed(1)} s` : '';
  const cut = run.truncated ? ' · output truncated' : '';
  switch (run.state) {
    case 'exited':
      return `exit code ${run.exit_code}${took}${cut}`;
    case 'timeout':
      return `timed out (stopped with ${run.signal ?? 'a signal'})${took}${cut}`;
    case 'cancelled':
      return `cancelled${took}${cut}`;
    default:
      return `failed${took}${cut}`;
  }
}

/** Whether a run that ended calls for "Explain this failure". */
export function isFailure(run: Pick<IExecRun, 'state' | 'exit_code'>): boolean {
  return run.state === 'timeout' || run.state === 'failed' || (run.state === 'exited' && run.exit_code !== 0);
}

function joinPath(cwd: string, rel: string): string | null {
  const parts: string[] = cwd ? cwd.split('/') : [];
  for (const part of rel.split('/')) {
    if (part === '' || part === '.') {
      continue;
    }
    if (part === '..') {
      if (!parts.length) {
        return null;
      }
      parts.pop();
    } else {
      parts.push(part);
    }
  }
  return parts.length ? parts.join('/') : null;
}

/**
 * The code a failure is about: a `path:line` the output names inside the workspace, as the
 * lines up to it. pytest's `tests/test_x.py:12: AssertionError` comes first (the first one
 * is the test that failed); else a traceback's `File "src/x.py", line 3` (the last one is
 * the innermost frame). Absolute paths are left out: the browser does not know where the
 * workspace is on the server's disk.
 */
export function failureLocation(output: string, cwd: string): ICodeRange | null {
  const searches: [RegExp, boolean][] = [
    [/^([^\s:"'][^\s:"']*\.[A-Za-z0-9]+):(\d+):/gm, false],
    [/File "([^"]+)", line (\d+)/g, true]
  ];
  for (const [pattern, innermost] of searches) {
    const found: ICodeRange[] = [];
    for (const match of output.matchAll(pattern)) {
      const path = match[1].startsWith('/') ? null : joinPath(cwd, match[1]);
      const line = Number(match[2]);
      if (path && line > 0) {
        found.push({ path, start_line: Math.max(1, line - CONTEXT_LINES), end_line: line });
      }
    }
    if (found.length) {
      return innermost ? found[found.length - 1] : found[0];
    }
  }
  return null;
}

/**
 * The output without pytest's "warnings summary" section: deprecation warnings of plugins
 * fill the end of a test run's output, and a small model then explains them instead of
 * the failure.
 */
export function withoutWarnings(output: string): string {
  return output.replace(/^=+ warnings summary =+\n[\s\S]*?(?=^=+ .+ =+$)/m, '');
}

/**
 * The part of the output that reports the failure: from pytest's FAILURES (or ERRORS)
 * header, else from the last Python traceback, else all of it. What a command printed
 * before (plugin warnings, progress) would only lead a small model away.
 */
export function failurePart(output: string): string {
  let start = -1;
  for (const match of output.matchAll(/^=+ (?:FAILURES|ERRORS) =+$/gm)) {
    start = start < 0 ? match.index ?? -1 : start;
  }
  if (start < 0) {
    start = output.lastIndexOf('Traceback (most recent call last):');
  }
  return start > 0 ? output.slice(start) : output;
}

/** The question Explain gets: the command, how it ended, and its failure report's end. */
export function failureQuestion(command: string, how: string, output: string): string {
  output = withoutWarnings(failurePart(output));
  const head = `The command \`${command.slice(0, 200)}\` failed (${how}). The end of its output:\n\`\`\`\n`;
  const foot = '\n```\nWhy did it fail, and what change would fix it?';
  const room = QUESTION_CHARS - head.length - foot.length;
  let tail = output.trimEnd().slice(-Math.max(0, room));
  const firstBreak = tail.indexOf('\n');
  if (tail.length >= room && firstBreak >= 0 && firstBreak < tail.length - 1) {
    tail = tail.slice(firstBreak + 1); // start on a whole line
  }
  return head + tail + foot;
}

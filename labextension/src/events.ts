/**
 * The workspace's live events (`codeyard/api/events`, a WebSocket): patches applied or
 * reverted, files changed by any writer, explain/rewrite progress, model status, git
 * operations and command output, each as `{event, data, time}`.
 *
 * The socket's URL and token come from `ServerConnection` settings, the way JupyterLab's
 * own kernel and event sockets build theirs (`wsUrl`, `token` when `appendToken`); behind
 * JupyterHub the browser's cookie authenticates it. A closed socket is reopened after an
 * exponential back-off with jitter, so many tabs do not all come back in the same instant
 * after a server restart. Events missed while closed are not replayed: listeners get
 * `onOpen(reconnected=true)` and reload what they show.
 *
 * Kept free of JupyterLab imports at run time so the back-off is unit-tested under node.
 */
import type { ServerConnection } from '@jupyterlab/services';

export const EVENTS_ENDPOINT = 'codeyard/api/events';

/** What every event looks like on the socket; `data` follows the event's schema. */
export interface IWorkspaceEvent {
  event: string;
  data: Record<string, unknown>;
  time: string;
}

export interface IBackoff {
  /** Delay before the first reconnect. */
  initialMs: number;
  /** The delay never grows past this. */
  maxMs: number;
  /** Each failed attempt multiplies the delay by this. */
  factor: number;
  /** Share of each delay that is random (0: none, 1: anywhere from 0 to the delay). */
  jitter: number;
}

export const DEFAULT_BACKOFF: IBackoff = { initialMs: 500, maxMs: 30_000, factor: 2, jitter: 0.5 };

/**
 * How long to wait before reconnect attempt `attempt` (0 for the first after a close):
 * `initialMs * factor^attempt`, capped at `maxMs`, of which a random `jitter` share is
 * taken off. `random` returns [0, 1), like `Math.random`.
 */
export function backoffDelay(
  attempt: number,
  backoff: IBackoff = DEFAULT_BACKOFF,
  random: () => number = Math.random
): number {
  const exponent = Math.max(0, Math.floor(attempt));
  const ceiling = Math.min(backoff.maxMs, backoff.initialMs * Math.pow(backoff.factor, exponent));
  const jitter = Math.min(1, Math.max(0, backoff.jitter));
  return Math.round(ceiling * (1 - jitter * random()));
}

type SocketSettings = Pick<ServerConnection.ISettings, 'wsUrl' | 'token' | 'appendToken'>;

/** The socket's URL under the server's `wsUrl`, with the token as JupyterLab appends it. */
export function eventsUrl(settings: SocketSettings): string {
  const base = settings.wsUrl.endsWith('/') ? settings.wsUrl : `${settings.wsUrl}/`;
  let url = `${base}${EVENTS_ENDPOINT}`;
  if (settings.appendToken && settings.token) {
    url += `?token=${encodeURIComponent(settings.token)}`;
  }
  return url;
}

/** Parse one socket message; null for anything that is not an event. */
export function parseEvent(text: unknown): IWorkspaceEvent | null {
  if (typeof text !== 'string') {
    return null;
  }
  try {
    const value = JSON.parse(text);
    if (
      value &&
      typeof value === 'object' &&
      typeof value.event === 'string' &&
      value.data &&
      typeof value.data === 'object'
    ) {
      return { event: value.event, data: value.data, time: String(value.time ?? '') };
    }
  } catch {
    // Not JSON: ignored, like any other message the client does not understand.
  }
  return null;
}

export interface IEventsListener {
  onEvent?(event: IWorkspaceEvent): void;
  /** The socket opened; `reconnected`: after a close, so events may have been missed. */
  onOpen?(reconnected: boolean): void;
  onClose?(code: number): void;
}

/** The part of the browser's `WebSocket` the client uses (a fake one in tests). */
export interface ISocket {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(code?: number, reason?: string): void;
}

export type SocketFactory = (url: string) => ISocket;

export interface ITimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const REAL_TIMERS: ITimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: handle => clearTimeout(handle as ReturnType<typeof setTimeout>)
};

export interface IEventsOptions {
  settings: SocketSettings & { WebSocket?: typeof WebSocket };
  /** Default: `new settings.WebSocket(url)`. */
  socket?: SocketFactory;
  backoff?: IBackoff;
  random?: () => number;
  timers?: ITimers;
}

/** One socket per panel, reopened with back-off until `stop()`. */
export class WorkspaceEvents {
  readonly url: string;
  /** Reconnect attempts since the socket was last open. */
  attempt = 0;
  /** The delay of the reconnect now waiting, if any (for the status line and tests). */
  pendingDelay: number | null = null;
  private socket: ISocket | null = null;
  private timer: unknown = null;
  private listeners = new Set<IEventsListener>();
  private running = false;
  /** Opened at least once: a later open is a reconnect. */
  private wasOpen = false;
  private isOpen = false;
  private readonly open: SocketFactory;
  private readonly backoff: IBackoff;
  private readonly random: () => number;
  private readonly timers: ITimers;

  constructor(options: IEventsOptions) {
    this.url = eventsUrl(options.settings);
    const Socket = options.settings.WebSocket;
    this.open =
      options.socket ??
      ((url: string) => {
        if (!Socket) {
          throw new Error('no WebSocket implementation');
        }
        return new Socket(url) as unknown as ISocket;
      });
    this.backoff = options.backoff ?? DEFAULT_BACKOFF;
    this.random = options.random ?? Math.random;
    this.timers = options.timers ?? REAL_TIMERS;
  }

  /** Whether the socket is open now. */
  get connected(): boolean {
    return this.isOpen;
  }

  /** Add a listener; returns the function that removes it. */
  subscribe(listener: IEventsListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    if (this.running) {
      return;
    }
    this.running = true;
    this.connect();
  }

  stop(): void {
    this.running = false;
    if (this.timer !== null) {
      this.timers.clear(this.timer);
      this.timer = null;
    }
    this.pendingDelay = null;
    const socket = this.socket;
    this.socket = null;
    this.isOpen = false;
    if (socket) {
      socket.onclose = null;
      socket.close(1000, 'closed by the client');
    }
  }

  private connect(): void {
    this.timer = null;
    this.pendingDelay = null;
    let socket: ISocket;
    try {
      socket = this.open(this.url);
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      const reconnected = this.wasOpen;
      this.wasOpen = true;
      this.isOpen = true;
      this.attempt = 0;
      this.emit(l => l.onOpen?.(reconnected));
    };
    socket.onmessage = ev => {
      const event = parseEvent(ev.data);
      if (event) {
        this.emit(l => l.onEvent?.(event));
      }
    };
    socket.onerror = () => {
      // A close always follows; the retry is scheduled there.
    };
    socket.onclose = ev => {
      if (this.socket !== socket) {
        return;
      }
      this.socket = null;
      this.isOpen = false;
      this.emit(l => l.onClose?.(ev.code));
      this.retry();
    };
  }

  private retry(): void {
    if (!this.running) {
      return;
    }
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    this.attempt += 1;
    this.pendingDelay = delay;
    this.timer = this.timers.set(() => this.connect(), delay);
  }

  private emit(call: (listener: IEventsListener) => void): void {
    for (const listener of [...this.listeners]) {
      try {
        call(listener);
      } catch (error) {
        console.warn('Codeyard events: a listener failed', error);
      }
    }
  }
}

/** What a panel shows that an event makes stale. */
export interface IStale {
  /** The History section (applied and reverted patches). */
  history: boolean;
  /** The Git section (branch, changed files, commits). */
  git: boolean;
}

/**
 * Which sections `event` makes stale. A patch changes the history and the working tree; a
 * file written by anyone else, or a git operation, changes what git shows. A patch's own
 * `files` event is covered by its `patch` event.
 */
export function staleAfter(event: IWorkspaceEvent): IStale {
  switch (event.event) {
    case 'patch':
      return { history: true, git: true };
    case 'files':
      return { history: false, git: event.data.writer !== 'patch' };
    case 'git':
      return { history: false, git: true };
    default:
      return { history: false, git: false };
  }
}

/**
 * `fn` at most once per `ms`, after the last call: a burst of events (a pull that rewrites
 * fifty files) costs one refresh, not fifty.
 */
export function debounce(fn: () => void, ms: number, timers: ITimers = REAL_TIMERS): () => void {
  let handle: unknown = null;
  return () => {
    if (handle !== null) {
      timers.clear(handle);
    }
    handle = timers.set(() => {
      handle = null;
      fn();
    }, ms);
  };
}

/**
 * Errors from the server, and the words the panel shows for them. Every endpoint answers
 * errors as `{"error": code, "message": text}`; the status decides the sentence around it.
 */
export interface IErrorBody {
  error?: string;
  message?: string;
  [key: string]: unknown;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: IErrorBody | null,
    readonly cause?: unknown
  ) {
    super(body?.message || `request failed with HTTP ${status}`);
    this.name = 'ApiError';
  }

  get code(): string {
    return this.body?.error ?? `http_${this.status}`;
  }
}

const LEADS: Record<number, string> = {
  400: 'The request was not accepted',
  401: 'You are not logged in (the session may have expired); reload the page',
  403: 'Not allowed',
  404: 'Not found',
  409: 'The file changed since this was prepared',
  413: 'Too large for the model',
  415: 'This file is not text',
  422: 'The model could not produce a usable answer',
  429: 'Too many requests: the model is busy or your quota is used up; try again shortly',
  502: 'The model gateway failed',
  503: 'The model gateway is unavailable right now',
  504: 'The model took too long to answer'
};

/** One sentence a user can act on, for any error thrown by the API helpers. */
export function describeError(error: unknown): string {
  if (error instanceof ApiError) {
    const lead =
      LEADS[error.status] ??
      (error.status >= 500 ? 'The server failed' : `The request failed (HTTP ${error.status})`);
    const detail = error.body?.message;
    return detail && detail !== lead ? `${lead}: ${detail}` : `${lead}.`;
  }
  const err = error as Error | undefined;
  if (err?.name === 'AbortError') {
    return 'Stopped.';
  }
  if (err?.name === 'NetworkError' || err instanceof TypeError) {
    return 'Cannot reach the Jupyter server; check your connection.';
  }
  if (err?.name === 'DiffParseError' || err?.name === 'HunkMismatchError') {
    return `The proposed diff cannot be shown: ${err.message}`;
  }
  return err?.message ? `Unexpected error: ${err.message}` : 'Unexpected error.';
}

export function isConflict(error: unknown): boolean {
  return error instanceof ApiError && error.status === 409;
}

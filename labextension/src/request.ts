/**
 * Every call to Codeyard's server API goes through here, so auth (the Jupyter token and
 * XSRF cookie that `ServerConnection` adds), base URL and error shapes live in one place.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { ApiError, IErrorBody } from './errors';
import { SSEParser } from './sse';

const API_NAMESPACE = 'codeyard/api';

function apiUrl(endpoint: string, settings: ServerConnection.ISettings): string {
  return URLExt.join(settings.baseUrl, API_NAMESPACE, endpoint);
}

async function errorFrom(response: Response): Promise<ApiError> {
  let body: IErrorBody | null = null;
  const text = await response.text().catch(() => '');
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed === 'object') {
      body = parsed as IErrorBody;
    }
  } catch {
    // Not JSON (a proxy's HTML page, for instance): keep the status alone.
  }
  return new ApiError(response.status, body, new ServerConnection.ResponseError(response));
}

async function send(
  endpoint: string,
  init: RequestInit,
  settings: ServerConnection.ISettings
): Promise<Response> {
  try {
    return await ServerConnection.makeRequest(apiUrl(endpoint, settings), init, settings);
  } catch (error) {
    if ((error as Error)?.name === 'AbortError' || init.signal?.aborted) {
      throw error;
    }
    throw new ServerConnection.NetworkError(error as TypeError);
  }
}

/** Call a JSON endpoint; throws `ApiError` (with the server's code and message) on non-2xx. */
export async function requestAPI<T>(
  endpoint: string,
  init: RequestInit = {},
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<T> {
  const response = await send(endpoint, init, settings);
  if (!response.ok) {
    throw await errorFrom(response);
  }
  const text = await response.text();
  return (text ? JSON.parse(text) : null) as T;
}

/**
 * POST and read a server-sent event stream, calling `onEvent` with each parsed `data:`
 * payload. Aborting `signal` closes the connection, which the server sees and uses to
 * cancel the model request.
 */
export async function requestStream(
  endpoint: string,
  body: unknown,
  onEvent: (data: unknown) => void,
  signal: AbortSignal,
  settings: ServerConnection.ISettings = ServerConnection.makeSettings()
): Promise<void> {
  const response = await send(
    endpoint,
    {
      method: 'POST',
      body: JSON.stringify(body),
      headers: { Accept: 'text/event-stream', 'Content-Type': 'application/json' },
      signal
    },
    settings
  );
  if (!response.ok) {
    throw await errorFrom(response);
  }
  const type = response.headers.get('Content-Type') ?? '';
  if (!type.includes('text/event-stream') || !response.body) {
    // A server that answered in one piece (no streaming support): treat it as one event.
    onEvent(await response.json());
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) {
      break;
    }
    for (const event of parser.push(decoder.decode(value, { stream: true }))) {
      onEvent(event);
    }
  }
  for (const event of parser.push(decoder.decode() + '\n\n')) {
    onEvent(event);
  }
}

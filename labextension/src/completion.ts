/**
 * Inline completion (ghost text) through JupyterLab's inline completer API, backed by the
 * model gateway's `/v1/completions` via the server endpoint `codeyard/api/complete`.
 *
 * JupyterLab's manager already debounces (our `debouncerDelay` default) and ignores stale
 * answers; this provider also aborts the HTTP request of a superseded fetch, so the
 * gateway stops generating for text the user has typed past.
 */
import type {
  CompletionHandler,
  IInlineCompletionContext,
  IInlineCompletionItem,
  IInlineCompletionList,
  IInlineCompletionProvider
} from '@jupyterlab/completer';
import type { DocumentWidget } from '@jupyterlab/docregistry';
import type { NotebookPanel } from '@jupyterlab/notebook';

import type { ICompleteResult } from './api';
import { ApiError, describeError } from './errors';
import { prefixSuffix } from './completionText';

/** The server call, injected so the provider's rules are testable without a server. */
export type CompleteFn = (
  body: { path: string; prefix: string; suffix: string; max_tokens?: number },
  signal: AbortSignal
) => Promise<ICompleteResult>;

export class CodeyardInlineProvider implements IInlineCompletionProvider {
  readonly name = 'Codeyard';
  readonly identifier = 'codeyard';
  readonly schema = {
    default: { debouncerDelay: 300, timeout: 15000 }
  };

  enabled = true;
  maxTokens = 64;
  private inflight: AbortController | null = null;
  /** Set when the server lacks the endpoint, so we stop asking on every keystroke. */
  private missingEndpoint = false;

  constructor(private complete: CompleteFn) {}

  async fetch(
    request: CompletionHandler.IRequest,
    context: IInlineCompletionContext
  ): Promise<IInlineCompletionList<IInlineCompletionItem>> {
    this.inflight?.abort();
    this.inflight = null;
    if (!this.enabled || this.missingEndpoint) {
      return { items: [] };
    }
    const { prefix, suffix } = prefixSuffix(request.text, request.offset);
    if (!prefix.trim()) {
      return { items: [] };
    }
    const ctrl = new AbortController();
    this.inflight = ctrl;
    const widget = context.widget as DocumentWidget | NotebookPanel;
    const path = (widget as DocumentWidget).context?.path ?? '';
    try {
      const result = await this.complete(
        { path, prefix, suffix, max_tokens: this.maxTokens },
        ctrl.signal
      );
      return { items: result.completion ? [{ insertText: result.completion }] : [] };
    } catch (error) {
      if (ctrl.signal.aborted) {
        return { items: [] };
      }
      if (error instanceof ApiError && error.status === 404) {
        this.missingEndpoint = true;
      }
      return { items: [{ insertText: '', error: { message: describeError(error) } }] };
    } finally {
      if (this.inflight === ctrl) {
        this.inflight = null;
      }
    }
  }
}

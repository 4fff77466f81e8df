/**
 * The server contracts this extension uses, declared once. Shapes follow the server
 * extension (files, patch, audit) and the model endpoints (explain, rewrite, status).
 */
import { ApiError } from './errors';
import { requestAPI, requestStream } from './request';

export interface IFileRead {
  path: string;
  content: string;
  encoding: 'utf-8' | 'base64';
  sha256: string;
  size: number;
  mtime: number;
}

export interface IPatchFileResult {
  path: string;
  op: 'modify' | 'create' | 'delete' | 'rename';
  sha256_before: string | null;
  sha256_after: string | null;
}

export interface IPatchResult {
  patch_id: string;
  files: IPatchFileResult[];
}

export interface IAuditRecord {
  seq: number;
  ts: number;
  user: string;
  action: string;
  paths: string[];
  sha256_before: Record<string, string | null>;
  sha256_after: Record<string, string | null>;
  patch_sha256: string | null;
  patch_id?: string;
  reverts?: string;
  [key: string]: unknown;
}

export interface IAuditPage {
  records: IAuditRecord[];
  chain_ok: boolean;
}

export interface IUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  model?: string;
  [key: string]: unknown;
}

/** Where a request points: a file's line range, or a range inside one notebook cell. */
export interface ICodeRange {
  path: string;
  start_line: number;
  end_line: number;
  cell_id?: string;
}

/** The server's checks of a proposal (`llm/proposal_checks.py`). */
export interface IProposalChecks {
  /** null: no parser for this file type. */
  parses: boolean | null;
  parser: 'python-ast' | 'json' | 'notebook' | null;
  /** "SyntaxError: invalid syntax (line 3)"; never code text. */
  error: string | null;
  /** The same check on the text before the change. */
  parsed_before?: boolean | null;
  /** null when no selection was given. */
  outside_selection: boolean | null;
}

export interface IRewriteResult {
  /** For a cell (`cell_id` set): a diff of the cell's source, for `patch/cell/apply`. */
  diff: string;
  base: Record<string, string>;
  unchanged: boolean;
  usage?: IUsage;
  cell_id?: string;
  /** "length" when `max_tokens` cut the answer off. */
  finish_reason?: string;
  /** The model's answer as it came. */
  raw?: string;
  checks?: IProposalChecks;
}

/** `patch/validate` (and `patch/cell/validate`) with a `selection`. */
export interface IValidateResult {
  ok: boolean;
  files: unknown[];
  checks?: IProposalChecks | null;
}

export interface ICellPatchResult extends IPatchResult {
  cell_id: string;
}

export interface IExplainEvent {
  delta?: string;
  done?: boolean;
  usage?: IUsage;
  error?: string;
  message?: string;
}

export interface ICompleteResult {
  completion: string;
  usage?: IUsage;
}

/** `GET status`: 200 when healthy, else a 503 whose body has the same fields. */
export interface IGatewayStatus {
  healthy: boolean;
  model: string;
  latency_ms?: number;
  error?: string;
  message?: string;
  /** The largest `max_tokens` a request may ask for (`c.CodeyardLLM.max_tokens_limit`). */
  max_tokens_limit?: number;
  rewrite_max_tokens?: number;
  explain_max_tokens?: number;
}

export interface IModelOptions {
  max_tokens?: number;
  context_lines?: number;
}

const json = (body: unknown): RequestInit => ({
  method: 'POST',
  body: JSON.stringify(body),
  headers: { 'Content-Type': 'application/json' }
});

export const api = {
  readFile(path: string): Promise<IFileRead> {
    return requestAPI<IFileRead>(`files?path=${encodeURIComponent(path)}`);
  },
  applyPatch(diff: string, base: Record<string, string>): Promise<IPatchResult> {
    return requestAPI<IPatchResult>('patch/apply', json({ diff, base }));
  },
  /** A diff of one cell's source, applied by the server as a whole-notebook patch. */
  applyCellPatch(
    path: string,
    cellId: string,
    diff: string,
    base: Record<string, string>
  ): Promise<ICellPatchResult> {
    return requestAPI<ICellPatchResult>(
      'patch/cell/apply',
      json({ path, cell_id: cellId, diff, base })
    );
  },
  /** Whether the diff applies now, and (with `selection`) the parse/selection checks. */
  validatePatch(diff: string, base: Record<string, string>, selection: ICodeRange): Promise<IValidateResult> {
    const { path, start_line, end_line } = selection;
    return requestAPI<IValidateResult>(
      'patch/validate',
      json({ diff, base, selection: { path, start_line, end_line } })
    );
  },
  validateCellPatch(
    path: string,
    cellId: string,
    diff: string,
    base: Record<string, string>,
    selection: ICodeRange
  ): Promise<IValidateResult> {
    const { start_line, end_line } = selection;
    return requestAPI<IValidateResult>(
      'patch/cell/validate',
      json({ path, cell_id: cellId, diff, base, selection: { start_line, end_line } })
    );
  },
  revertPatch(patchId: string): Promise<IPatchResult> {
    return requestAPI<IPatchResult>(`patch/${encodeURIComponent(patchId)}/revert`, {
      method: 'POST'
    });
  },
  audit(limit = 50): Promise<IAuditPage> {
    return requestAPI<IAuditPage>(`audit?limit=${limit}`);
  },
  rewrite(
    range: ICodeRange,
    instruction: string,
    options: IModelOptions,
    signal?: AbortSignal
  ): Promise<IRewriteResult> {
    return requestAPI<IRewriteResult>('rewrite', {
      ...json({ ...range, instruction, ...options }),
      signal
    });
  },
  explain(
    range: ICodeRange & { question?: string },
    options: IModelOptions,
    onEvent: (event: IExplainEvent) => void,
    signal: AbortSignal
  ): Promise<void> {
    return requestStream(
      'explain',
      { ...range, ...options },
      data => onEvent(data as IExplainEvent),
      signal
    );
  },
  /** The gateway's health; a 503 that carries a status body is an answer, not a failure. */
  async status(): Promise<IGatewayStatus> {
    try {
      return await requestAPI<IGatewayStatus>('status');
    } catch (error) {
      if (error instanceof ApiError && error.status === 503 && error.body && 'healthy' in error.body) {
        return error.body as unknown as IGatewayStatus;
      }
      throw error;
    }
  },
  complete(
    body: { path: string; prefix: string; suffix: string; max_tokens?: number },
    signal: AbortSignal
  ): Promise<ICompleteResult> {
    return requestAPI<ICompleteResult>('complete', { ...json(body), signal });
  }
};

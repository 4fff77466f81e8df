/**
 * What the panel does with a weak model's proposal, as pure functions the unit tests check:
 * the warnings for a proposal that breaks parsing or reaches outside the selection, the
 * confirmation Apply then needs, and the next steps offered when a rewrite ran out of
 * tokens or proposed nothing.
 */
import type { ICodeRange, IProposalChecks } from './api';

const PARSER_NAMES: Record<string, string> = {
  'python-ast': 'Python',
  json: 'JSON',
  notebook: 'notebook'
};

/** "SyntaxError at line 9" from the server's "SyntaxError: … (line 9)". */
export function errorWhere(error: string | null | undefined): string {
  if (!error) {
    return 'an error';
  }
  const kind = /^(?:cell \S+: )?(\w+Error)/.exec(error)?.[1] ?? 'an error';
  const line = /\(line (\d+)\)\s*$/.exec(error)?.[1];
  const cell = /^cell (\S+):/.exec(error)?.[1];
  return `${kind}${line ? ` at line ${line}` : ''}${cell ? ` in cell ${cell}` : ''}`;
}

/** True when the change turns a file that parsed into one that does not. */
export function breaksParsing(checks: IProposalChecks | null | undefined): boolean {
  return Boolean(checks && checks.parses === false && checks.parsed_before !== false);
}

/** The sentences of the warning block; empty when the proposal needs no confirmation. */
export function proposalWarnings(checks: IProposalChecks | null | undefined): string[] {
  if (!checks) {
    return [];
  }
  const out: string[] = [];
  if (breaksParsing(checks)) {
    const what = PARSER_NAMES[checks.parser ?? ''] ?? 'the file’s';
    out.push(`This change breaks ${what} parsing (${errorWhere(checks.error)}).`);
  }
  if (checks.outside_selection) {
    out.push('This change touches lines outside your selection.');
  }
  return out;
}

/** Apply needs an explicit "Apply anyway" when there is any warning. */
export function needsConfirmation(checks: IProposalChecks | null | undefined): boolean {
  return proposalWarnings(checks).length > 0;
}

/** What the checks covered, in one line under the diff, so "no warning" is not overread. */
export function checksCoverage(checks: IProposalChecks | null | undefined): string {
  if (!checks) {
    return 'Not checked: the server did not report checks for this proposal.';
  }
  const parts: string[] = [];
  switch (checks.parser) {
    case 'python-ast':
      parts.push(
        checks.parses === false && checks.parsed_before === false
          ? 'Python does not parse, before or after this change'
          : `Python ${checks.parses ? 'parses' : 'does not parse'} (ast + compile, nothing run)`
      );
      break;
    case 'json':
      parts.push(`JSON ${checks.parses ? 'parses' : 'does not parse'}`);
      break;
    case 'notebook':
      parts.push(`notebook JSON and changed Python cells ${checks.parses ? 'parse' : 'do not parse'}`);
      break;
    default:
      parts.push('no parser for this file type');
  }
  if (checks.outside_selection !== null && checks.outside_selection !== undefined) {
    parts.push(checks.outside_selection ? 'reaches outside the selection' : 'stays inside the selection');
  }
  return `Checked: ${parts.join('; ')}.`;
}

/**
 * The "Apply anyway" gate: open when the proposal has no warning, else only after the
 * user confirmed. A new proposal resets it.
 */
export class ApplyGate {
  private required = false;
  private confirmedFlag = false;

  reset(checks: IProposalChecks | null | undefined): void {
    this.required = needsConfirmation(checks);
    this.confirmedFlag = false;
  }

  get needsConfirmation(): boolean {
    return this.required;
  }

  get confirmed(): boolean {
    return this.confirmedFlag;
  }

  set confirmed(value: boolean) {
    this.confirmedFlag = value;
  }

  get open(): boolean {
    return !this.required || this.confirmedFlag;
  }
}

/** Why a rewrite gave nothing to review, from its answer or its 422. */
export type Shortfall = 'length' | 'unchanged' | 'no_code';

export interface INextSteps {
  smaller: ICodeRange | null;
  /** The `max_tokens` a retry would ask for; null when already at the bound. */
  moreTokens: number | null;
  raw: string | null;
  why: Shortfall;
}

/** The first half of the selection (at least one line); null for a one-line selection. */
export function halveRange(range: ICodeRange): ICodeRange | null {
  const count = range.end_line - range.start_line + 1;
  if (count <= 1) {
    return null;
  }
  return { ...range, end_line: range.start_line + Math.ceil(count / 2) - 1 };
}

/**
 * The next `max_tokens`: double what the last call had, never above the server's bound.
 * `used` is the call's `usage.max_tokens` (the server's default when the panel sent none).
 */
export function raisedMaxTokens(used: number | undefined, limit: number | null): number | null {
  const base = used && used > 0 ? used : 256;
  const want = base * 2;
  if (limit === null) {
    return want;
  }
  if (base >= limit) {
    return null;
  }
  return Math.min(want, limit);
}

/** The next steps to offer after a rewrite that gave nothing to review. */
export function nextSteps(
  why: Shortfall,
  range: ICodeRange,
  usedMaxTokens: number | undefined,
  limit: number | null,
  raw: string | undefined
): INextSteps {
  return {
    why,
    smaller: halveRange(range),
    moreTokens: raisedMaxTokens(usedMaxTokens, limit),
    raw: raw && raw.trim() ? raw : null
  };
}

/** The sentence above the next-step buttons. */
export function shortfallText(why: Shortfall, usedMaxTokens: number | undefined): string {
  switch (why) {
    case 'length':
      return `The model ran out of tokens${usedMaxTokens ? ` (max_tokens ${usedMaxTokens})` : ''} before it finished.`;
    case 'unchanged':
      return 'The model proposed no change.';
    case 'no_code':
      return 'The model’s answer held no usable code.';
  }
}

/** The bound a 400 for `max_tokens` names (`maximum`), if that is what it is. */
export function limitFromError(body: { [key: string]: unknown } | null | undefined): number | null {
  if (body && body.field === 'max_tokens' && typeof body.maximum === 'number') {
    return body.maximum;
  }
  return null;
}

/**
 * The model's name and the gateway's health, as the panel shows them.
 *
 * The source is the server's `GET codeyard/api/status` (a quick `/v1/models` through the
 * gateway), asked when the panel is shown and then every minute while it stays visible; the
 * outcome of each explain or rewrite updates it in between. The wording is pure functions so
 * the unit tests can check it without a browser.
 */
import type { IGatewayStatus } from './api';

export type GatewayState =
  | { kind: 'unknown' }
  | { kind: 'checking' }
  | { kind: 'healthy'; model: string; latencyMs: number | null; at: Date }
  | { kind: 'down'; model: string | null; reason: string; at: Date };

/** The state a status answer (200 or 503 body) means. */
export function stateFromStatus(status: IGatewayStatus, at: Date): GatewayState {
  if (status.healthy) {
    return { kind: 'healthy', model: status.model, latencyMs: status.latency_ms ?? null, at };
  }
  return {
    kind: 'down',
    model: status.model ?? null,
    reason: status.message ?? status.error ?? 'the gateway did not answer',
    at
  };
}

/** "Gateway: …" line. */
export function gatewayText(state: GatewayState): string {
  switch (state.kind) {
    case 'unknown':
      return 'not checked yet';
    case 'checking':
      return 'checking…';
    case 'healthy': {
      const ms = state.latencyMs === null ? '' : ` in ${Math.round(state.latencyMs)} ms`;
      return `healthy (answered${ms} at ${state.at.toLocaleTimeString()})`;
    }
    case 'down':
      return `unavailable at ${state.at.toLocaleTimeString()}: ${state.reason}`;
  }
}

/** "Model: …" line: the server's model, else the one the last call named. */
export function modelText(state: GatewayState, usageModel: string | undefined, tokens: number | undefined): string {
  const named =
    usageModel || (state.kind === 'healthy' || state.kind === 'down' ? state.model : null) || 'unknown yet';
  return tokens === undefined ? named : `${named} · last call ${tokens} tokens`;
}

/**
 * The panel's context box: which file or cell and lines a request is about, whether the
 * editor has unsaved edits, the model, and whether the gateway answers.
 */
import type { IUsage } from './api';
import { el } from './dom';
import { GatewayState, gatewayText, modelText } from './gateway';
import type { ISnapshot } from './tracker';

export function renderContextBox(
  box: HTMLElement,
  snap: ISnapshot | null,
  usage: IUsage | null,
  gateway: GatewayState
): void {
  box.replaceChildren();
  if (!snap) {
    box.append(el('div', { className: 'cy-context-empty', text: 'Open a file or a notebook cell.' }));
  } else {
    const where =
      snap.code.kind === 'cell' ? `${snap.code.path} · cell ${(snap.code.cellIndex ?? 0) + 1}` : snap.code.path;
    const lines = snap.selectionEmpty
      ? `whole ${snap.code.kind === 'cell' ? 'cell' : 'file'} (lines ${snap.range.start_line}–${snap.range.end_line})`
      : `lines ${snap.range.start_line}–${snap.range.end_line}`;
    box.append(
      el('div', { className: 'cy-context-path', text: where, title: where }),
      el('div', { className: 'cy-context-selection', text: `Selection: ${lines}` })
    );
    if (snap.dirty) {
      box.append(
        el('div', {
          className: 'cy-context-dirty',
          text: 'Unsaved changes: the model reads the saved file.'
        })
      );
    }
  }
  const tokens = usage ? (usage.total_tokens ?? (usage.prompt_tokens ?? 0) + (usage.completion_tokens ?? 0)) : undefined;
  box.append(
    el('div', { className: 'cy-context-model', text: `Model: ${modelText(gateway, usage?.model, tokens)}` })
  );
  const health = el('div', { className: 'cy-context-gateway', text: `Gateway: ${gatewayText(gateway)}` });
  health.dataset.state = gateway.kind;
  box.append(health);
}

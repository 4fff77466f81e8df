/**
 * The panel's History section: the workspace's applied patches from the audit log, newest
 * first, each with Revert. Reverting reloads the open files it restored, unless one has
 * unsaved edits (then it refuses and says why).
 *
 * Patches applied or reverted anywhere (another tab, the notebook client) arrive as `patch`
 * events on the events socket; the panel then calls `refreshSoon()`, so the list follows
 * without a reload or a click on Refresh.
 */
import { api } from './api';
import { button, el } from './dom';
import { OpenDocuments } from './documents';
import { ApiError, describeError, isConflict } from './errors';
import { debounce } from './events';
import { historyFromAudit } from './state';

export type Say = (message: string, kind?: 'info' | 'error' | 'ok') => void;

export class HistorySection {
  readonly node: HTMLElement;
  private list = el('ul', { className: 'cy-history-list' });
  private status = el('div', { className: 'cy-history-status' });
  /** Counts refreshes, so an older answer arriving late never replaces a newer one. */
  private generation = 0;
  /** `refresh()` once a burst of events is over. */
  readonly refreshSoon = debounce(() => void this.refresh(), 150);

  constructor(
    private documents: OpenDocuments,
    private say: Say
  ) {
    this.node = el(
      'section',
      { className: 'cy-section cy-section-history' },
      el(
        'div',
        { className: 'cy-history-head' },
        el('h3', { text: 'History' }),
        button('Refresh', 'cy-history-refresh', () => void this.refresh())
      ),
      this.status,
      this.list
    );
  }

  async refresh(): Promise<void> {
    const generation = ++this.generation;
    this.status.textContent = 'Loading…';
    try {
      const page = await api.audit(50);
      if (generation !== this.generation) {
        return;
      }
      const entries = historyFromAudit(page.records);
      this.status.textContent = page.chain_ok
        ? `${entries.length} change${entries.length === 1 ? '' : 's'} · audit chain intact`
        : 'Warning: the audit log chain is broken (a record was altered or removed).';
      this.status.dataset.kind = page.chain_ok ? 'ok' : 'error';
      this.list.replaceChildren(
        ...entries.map(entry => {
          const item = el(
            'li',
            { className: 'cy-history-item', attrs: { 'data-patch-id': entry.patchId } },
            el('span', { className: 'cy-history-seq', text: `#${entry.seq}` }),
            el('span', {
              className: 'cy-history-what',
              text: `${entry.isRevert ? '↶ ' : ''}${entry.paths.join(', ')}`,
              title: `${entry.isRevert ? 'revert of' : 'patch'} ${entry.patchId} · ${entry.user} · ${entry.when.toLocaleString()}`
            }),
            el('span', { className: 'cy-history-when', text: entry.when.toLocaleTimeString() })
          );
          if (entry.reverted) {
            item.append(el('span', { className: 'cy-history-reverted', text: 'reverted' }));
          } else if (!entry.isRevert) {
            item.append(button('Revert', 'jp-mod-warn cy-revert', () => void this.revert(entry.patchId, entry.paths)));
          }
          return item;
        })
      );
      if (!entries.length) {
        this.list.append(el('li', { className: 'cy-history-empty', text: 'No changes applied yet.' }));
      }
    } catch (error) {
      if (generation !== this.generation) {
        return;
      }
      this.status.textContent = describeError(error);
      this.status.dataset.kind = 'error';
    }
  }

  async revert(patchId: string, paths: string[]): Promise<void> {
    const dirty = this.documents.dirty(paths);
    if (dirty) {
      this.say(
        `${dirty.path} has unsaved changes. Reverting would reload it from disk and lose them. Save or revert the file first.`,
        'error'
      );
      return;
    }
    this.say(`Reverting patch ${patchId}…`);
    try {
      const result = await api.revertPatch(patchId);
      await this.documents.reloadUnlessDirty(result.files.map(f => f.path));
      this.say(`Reverted patch ${patchId}: ${result.files.map(f => f.path).join(', ')} restored.`, 'ok');
    } catch (error) {
      this.say(
        isConflict(error)
          ? `Cannot revert: ${(error as ApiError).body?.message ?? 'the files changed since that patch'}.`
          : describeError(error),
        'error'
      );
    }
    await this.refresh();
  }
}

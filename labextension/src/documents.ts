/**
 * The open documents a patch touches: whether any has unsaved edits (then apply and revert
 * refuse, as reloading would lose them), and reloading the others after the server wrote.
 */
import { IDocumentManager } from '@jupyterlab/docmanager';

export class OpenDocuments {
  constructor(private docManager: IDocumentManager | null) {}

  /** The document contexts open for `paths` (none when the path is not open). */
  contexts(paths: string[]) {
    const out = [];
    for (const path of paths) {
      const widget = this.docManager?.findWidget(path);
      const context = widget ? this.docManager?.contextForWidget(widget) : undefined;
      if (context) {
        out.push(context);
      }
    }
    return out;
  }

  /** The first open document among `paths` with unsaved edits, or null. */
  dirty(paths: string[]) {
    return this.contexts(paths).find(c => c.model.dirty) ?? null;
  }

  /** Reload the open documents of `paths` from disk, except those with unsaved edits. */
  async reloadUnlessDirty(paths: string[]): Promise<string[]> {
    const skipped: string[] = [];
    for (const context of this.contexts(paths)) {
      if (context.model.dirty) {
        skipped.push(context.path);
      } else {
        // Reloading a notebook selects its first cell; keep the user on the cell they were in.
        const widget = this.docManager?.findWidget(context.path) as { content?: { activeCellIndex?: unknown } } | undefined;
        const notebook = widget?.content;
        const active = typeof notebook?.activeCellIndex === 'number' ? notebook.activeCellIndex : null;
        await context.revert();
        if (notebook && active !== null) {
          notebook.activeCellIndex = active;
        }
      }
    }
    return skipped;
  }
}

/**
 * The review box of a proposed rewrite: a one-line summary, the checks' notice (warnings and
 * the "Apply anyway" confirmation), the diff in a CodeMirror merge view, and the
 * Apply/Discard buttons the panel passes in.
 */
import { EditorView } from '@codemirror/view';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';

import { createDiffView } from './diffview';
import { el } from './dom';

export class ReviewBox {
  readonly node = el('div', { className: 'cy-review' });
  private summary = el('div', { className: 'cy-review-summary' });
  private diffBox = el('div', { className: 'cy-diff' });
  private diffView: EditorView | null = null;

  constructor(
    private languages: IEditorLanguageRegistry | null,
    buttons: HTMLElement,
    notice: HTMLElement
  ) {
    this.node.append(this.summary, notice, this.diffBox, buttons);
    this.node.hidden = true;
  }

  async show(summary: string, path: string, before: string, after: string, language?: string): Promise<void> {
    this.summary.textContent = summary;
    this.node.hidden = false;
    this.diffView = await createDiffView(this.diffBox, path, before, after, this.languages, language);
  }

  clear(): void {
    this.diffView?.destroy();
    this.diffView = null;
    this.diffBox.replaceChildren();
    this.node.hidden = true;
  }
}

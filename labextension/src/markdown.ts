/**
 * The explanation's output: text arrives in small deltas and is re-rendered as markdown at
 * most every 80 ms, so a fast stream does not re-render on every token.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';

import { el } from './dom';

export class MarkdownOutput {
  readonly node = el('div', { className: 'cy-explain-output', attrs: { 'aria-live': 'polite' } });
  private text = '';
  private pending = false;

  constructor(private rendermime: IRenderMimeRegistry | null) {}

  reset(): void {
    this.text = '';
    this.node.replaceChildren();
  }

  set state(value: 'streaming' | 'stopped' | 'done') {
    this.node.dataset.state = value;
  }

  append(delta: string): void {
    this.text += delta;
    if (this.pending) {
      return;
    }
    this.pending = true;
    setTimeout(() => {
      this.pending = false;
      void this.render();
    }, 80);
  }

  async render(): Promise<void> {
    const text = this.text;
    if (!this.rendermime) {
      this.node.textContent = text;
      return;
    }
    const renderer = this.rendermime.createRenderer('text/markdown');
    await renderer.renderModel(new MimeModel({ data: { 'text/markdown': text } }));
    if (text === this.text) {
      this.node.replaceChildren(renderer.node);
    }
  }
}

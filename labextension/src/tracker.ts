/**
 * Which code the panel is about: the last focused file editor, or the active cell of the
 * last focused notebook. Emits `changed` on focus, cell and (optionally) selection changes.
 */
import { ILabShell } from '@jupyterlab/application';
import { CodeEditor } from '@jupyterlab/codeeditor';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { IEditorTracker } from '@jupyterlab/fileeditor';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import type { ICodeRange } from './api';
import { selectionLines } from './state';

export interface IActiveCode {
  kind: 'file' | 'cell';
  path: string;
  cellId?: string;
  cellIndex?: number;
  editor: CodeEditor.IEditor;
  context: DocumentRegistry.Context;
  widget: Widget;
}

export interface ISnapshot {
  code: IActiveCode;
  range: ICodeRange;
  selectionEmpty: boolean;
  /** The document has unsaved edits: the server reads the saved file. */
  dirty: boolean;
}

export class ActiveCodeTracker {
  private _changed = new Signal<this, void>(this);
  private _source: 'file' | 'notebook' | null = null;
  private _watchedEditor: CodeEditor.IEditor | null = null;
  followSelection = true;

  constructor(
    shell: ILabShell | null,
    private editors: IEditorTracker | null,
    private notebooks: INotebookTracker | null
  ) {
    shell?.currentChanged.connect((_, args) => this.onFocus(args.newValue));
    editors?.currentChanged.connect(() => this.onFocus(shell?.currentWidget ?? editors.currentWidget));
    notebooks?.currentChanged.connect(() =>
      this.onFocus(shell?.currentWidget ?? notebooks.currentWidget)
    );
    notebooks?.activeCellChanged.connect(() => this.refresh());
    this.onFocus(shell?.currentWidget ?? null);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get current(): IActiveCode | null {
    if (this._source === 'file') {
      const w = this.editors?.currentWidget;
      if (w && !w.isDisposed) {
        return {
          kind: 'file',
          path: w.context.path,
          editor: w.content.editor,
          context: w.context,
          widget: w
        };
      }
    }
    if (this._source === 'notebook') {
      const panel: NotebookPanel | null | undefined = this.notebooks?.currentWidget;
      const cell = panel?.content.activeCell;
      if (panel && cell && cell.editor && !panel.isDisposed) {
        return {
          kind: 'cell',
          path: panel.context.path,
          cellId: cell.model.id,
          cellIndex: panel.content.activeCellIndex,
          editor: cell.editor,
          context: panel.context,
          widget: panel
        };
      }
    }
    return null;
  }

  /** The request range for the current selection (or the whole file/cell when empty). */
  snapshot(): ISnapshot | null {
    const code = this.current;
    if (!code) {
      return null;
    }
    const sel = code.editor.getSelection();
    const text = code.editor.model.sharedModel.getSource();
    const lines = selectionLines(text, sel.start, sel.end);
    const range: ICodeRange = {
      path: code.path,
      start_line: lines.start_line,
      end_line: lines.end_line
    };
    if (code.cellId) {
      range.cell_id = code.cellId;
    }
    return {
      code,
      range,
      selectionEmpty: lines.empty,
      dirty: code.context.model.dirty
    };
  }

  refresh(): void {
    this.watchSelection();
    this._changed.emit();
  }

  private onFocus(widget: Widget | null): void {
    if (widget && this.editors?.has(widget)) {
      this._source = 'file';
    } else if (widget && this.notebooks?.has(widget)) {
      this._source = 'notebook';
    } else if (this._source === 'file' && !this.editors?.currentWidget) {
      this._source = null;
    } else if (this._source === 'notebook' && !this.notebooks?.currentWidget) {
      this._source = null;
    }
    this.refresh();
  }

  private watchSelection(): void {
    const editor = this.current?.editor ?? null;
    if (editor === this._watchedEditor) {
      return;
    }
    this._watchedEditor?.model.selections.changed.disconnect(this.onSelection, this);
    this._watchedEditor = editor;
    editor?.model.selections.changed.connect(this.onSelection, this);
  }

  private onSelection(): void {
    if (this.followSelection) {
      this._changed.emit();
    }
  }
}

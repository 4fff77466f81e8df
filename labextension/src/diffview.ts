/**
 * The review view: the proposed text in a read-only CodeMirror editor with the original
 * shown inline (deleted lines above inserted ones), syntax-highlighted with JupyterLab's
 * own language registry and theme. Inline rather than side by side because a side panel
 * is narrow.
 */
import { unifiedMergeView } from '@codemirror/merge';
import { EditorState, Extension } from '@codemirror/state';
import { EditorView, lineNumbers } from '@codemirror/view';
import { IEditorLanguageRegistry, jupyterTheme } from '@jupyterlab/codemirror';

export async function createDiffView(
  parent: HTMLElement,
  path: string,
  before: string,
  after: string,
  languages: IEditorLanguageRegistry | null,
  language?: string
): Promise<EditorView> {
  const extensions: Extension[] = [
    lineNumbers(),
    EditorState.readOnly.of(true),
    EditorView.editable.of(false),
    EditorView.lineWrapping,
    jupyterTheme,
    unifiedMergeView({
      original: before,
      mergeControls: false,
      gutter: true,
      highlightChanges: true,
      collapseUnchanged: { margin: 3, minSize: 6 }
    })
  ];
  // A notebook cell has no file name of its own: its language comes from the notebook.
  const found =
    (language
      ? languages?.findBest(language)
      : languages?.findByFileName(path.split('/').pop() ?? path)) ?? null;
  if (languages && found) {
    const language = await languages.getLanguage(found).catch(() => null);
    if (language?.support) {
      extensions.push(language.support);
    }
  }
  return new EditorView({
    parent,
    state: EditorState.create({ doc: after, extensions })
  });
}

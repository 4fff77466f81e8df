/**
 * Codeyard's JupyterLab plugin: the "Codeyard AI" side panel, its commands and settings,
 * and the inline completion provider.
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { IEditorLanguageRegistry } from '@jupyterlab/codemirror';
import { ICompletionProviderManager } from '@jupyterlab/completer';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { IEditorTracker } from '@jupyterlab/fileeditor';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { api } from './api';
import { CodeyardInlineProvider } from './completion';
import { CodeyardPanel, DEFAULT_SETTINGS, IPanelSettings } from './panel';
import { ActiveCodeTracker } from './tracker';

const PLUGIN_ID = 'codeyard-labextension:plugin';

export namespace CommandIDs {
  export const open = 'codeyard:open-panel';
  export const explain = 'codeyard:explain';
  export const rewrite = 'codeyard:rewrite';
  export const stop = 'codeyard:stop';
  export const apply = 'codeyard:apply';
  export const discard = 'codeyard:discard';
  export const history = 'codeyard:refresh-history';
}

const codeyardIcon = new LabIcon({
  name: 'codeyard:ai',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<path d="M8.6 16.6 4 12l4.6-4.6L7.2 6l-6 6 6 6zm6.8 0L20 12l-4.6-4.6L16.8 6l6 6-6 6z"/>' +
    '<path d="M12 7l1.1 3.4L16.5 11.5l-3.4 1.1L12 16l-1.1-3.4L7.5 11.5l3.4-1.1z"/></g></svg>'
});

function readSettings(settings: ISettingRegistry.ISettings | null): IPanelSettings {
  if (!settings) {
    return { ...DEFAULT_SETTINGS };
  }
  const c = settings.composite as Partial<IPanelSettings>;
  return {
    contextLines: Number(c.contextLines ?? DEFAULT_SETTINGS.contextLines),
    maxTokens: Number(c.maxTokens ?? DEFAULT_SETTINGS.maxTokens),
    followSelection: Boolean(c.followSelection ?? DEFAULT_SETTINGS.followSelection),
    inlineCompletion: Boolean(c.inlineCompletion ?? DEFAULT_SETTINGS.inlineCompletion),
    runCommand: String(c.runCommand ?? DEFAULT_SETTINGS.runCommand)
  };
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Codeyard AI panel: explain, rewrite as a reviewable diff, apply, revert; inline completion.',
  autoStart: true,
  optional: [
    ILabShell,
    ILayoutRestorer,
    ICommandPalette,
    IEditorTracker,
    INotebookTracker,
    IRenderMimeRegistry,
    IEditorLanguageRegistry,
    IDocumentManager,
    ISettingRegistry,
    ICompletionProviderManager
  ],
  activate: (
    app: JupyterFrontEnd,
    shell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    editors: IEditorTracker | null,
    notebooks: INotebookTracker | null,
    rendermime: IRenderMimeRegistry | null,
    languages: IEditorLanguageRegistry | null,
    docManager: IDocumentManager | null,
    settingRegistry: ISettingRegistry | null,
    completions: ICompletionProviderManager | null
  ) => {
    const tracker = new ActiveCodeTracker(shell, editors, notebooks);
    const panel = new CodeyardPanel(tracker, rendermime, languages, docManager);
    panel.title.icon = codeyardIcon;
    app.shell.add(panel, 'right', { rank: 600 });
    restorer?.add(panel, 'codeyard-ai');

    const provider = new CodeyardInlineProvider(api.complete);
    completions?.registerInlineProvider(provider);

    const apply = (s: IPanelSettings) => {
      panel.settings = s;
      tracker.followSelection = s.followSelection;
      provider.enabled = s.inlineCompletion;
    };
    if (settingRegistry) {
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(readSettings(settings));
          settings.changed.connect(() => apply(readSettings(settings)));
        })
        .catch(reason => console.error('Codeyard: cannot load settings', reason));
    }

    const show = () => app.shell.activateById(panel.id);
    const hasCode = () => tracker.current !== null;
    app.commands.addCommand(CommandIDs.open, {
      label: 'Codeyard AI: Open Panel',
      execute: show
    });
    app.commands.addCommand(CommandIDs.explain, {
      label: 'Codeyard AI: Explain Selection',
      isEnabled: hasCode,
      execute: () => {
        show();
        return panel.explain();
      }
    });
    app.commands.addCommand(CommandIDs.rewrite, {
      label: 'Codeyard AI: Rewrite Selection…',
      isEnabled: hasCode,
      execute: () => {
        show();
        panel.focusInstruction();
      }
    });
    app.commands.addCommand(CommandIDs.stop, {
      label: 'Codeyard AI: Stop',
      execute: () => panel.stop()
    });
    app.commands.addCommand(CommandIDs.apply, {
      label: 'Codeyard AI: Apply Proposed Change',
      isEnabled: () => panel.flow.phase === 'reviewing',
      execute: () => panel.apply()
    });
    app.commands.addCommand(CommandIDs.discard, {
      label: 'Codeyard AI: Discard Proposed Change',
      isEnabled: () => panel.flow.phase === 'reviewing',
      execute: () => panel.discard()
    });
    app.commands.addCommand(CommandIDs.history, {
      label: 'Codeyard AI: Refresh History',
      execute: () => {
        show();
        return panel.refreshHistory();
      }
    });
    for (const command of Object.values(CommandIDs)) {
      palette?.addItem({ command, category: 'Codeyard AI' });
    }
  }
};

export default plugin;
